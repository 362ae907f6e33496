"""The image-folder scan's cache file: where it goes (beside a writable tree, else in the user's
cache, one per tree), which caches are read (this tree's, of this format), and that one that
cannot be used is warned about and rescanned, never a crash."""

import json
import os
import warnings

import pytest

from meanflow.data import scan_cache
from meanflow.data.scan_cache import SCAN_VERSION, default_cache_path, read_scan_cache, write_scan_cache

ENTRY = [123, 456, "ok", [8, 8, "RGB"], "JPEG"]


@pytest.fixture
def read_only(monkeypatch, tmp_path):
    """Every folder unwritable (as for root, whom file modes do not stop); the user's cache in
    tmp_path/cache."""
    monkeypatch.setattr(scan_cache.os, "access", lambda path, mode: mode != os.W_OK)
    monkeypatch.setenv("MEANFLOW_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_writable_tree_keeps_its_cache_beside_it(tmp_path):
    assert default_cache_path(str(tmp_path)) == str(tmp_path / ".meanflow_scan.json")


def test_a_read_only_tree_has_its_own_cache_in_the_users(read_only, tmp_path, monkeypatch):
    a, b = tmp_path / "a" / "data", tmp_path / "b" / "data"
    path_a = default_cache_path(str(a))
    assert os.path.dirname(path_a) == str(read_only) and path_a != default_cache_path(str(b))
    a.parent.mkdir()
    monkeypatch.chdir(a.parent)  # the same tree named from where the run starts
    assert default_cache_path("data") == path_a


def test_a_cache_is_read_back_for_its_own_tree_only(tmp_path):
    path = str(tmp_path / "scan.json")
    write_scan_cache(path, "/data/a", {"x.jpg": ENTRY})
    assert read_scan_cache(path, "/data/a") == {"x.jpg": ENTRY}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # another tree's cache is no fault: scan again, silently
        assert read_scan_cache(path, "/data/b") == {}
        assert read_scan_cache(str(tmp_path / "not_yet.json"), "/data/a") == {}


def test_a_cache_of_another_format_is_not_read(tmp_path):
    path = tmp_path / "scan.json"
    path.write_text(json.dumps({"version": SCAN_VERSION - 1, "root": "/data/a", "entries": {"x.jpg": ENTRY}}))
    assert read_scan_cache(str(path), "/data/a") == {}


@pytest.mark.parametrize(
    "content",
    ["[1, 2]", f'{{"version": {SCAN_VERSION}, "root": "/data/a"}}', "{not json"],
    ids=["a list", "no entries", "not json"],
)
def test_an_unusable_cache_is_warned_about_and_not_read(tmp_path, content):
    path = tmp_path / "scan.json"
    path.write_text(content)
    with pytest.warns(UserWarning, match="ignoring unreadable scan cache"):
        assert read_scan_cache(str(path), "/data/a") == {}


def test_a_cache_is_written_into_a_folder_not_yet_made_or_none(tmp_path, monkeypatch):
    deep = tmp_path / "cache" / "meanflow" / "scan-0123.json"
    write_scan_cache(str(deep), "/data/a", {"x.jpg": ENTRY})
    assert read_scan_cache(str(deep), "/data/a") == {"x.jpg": ENTRY}
    monkeypatch.chdir(tmp_path)
    write_scan_cache("scan.json", "/data/a", {})
    assert json.loads((tmp_path / "scan.json").read_text())["entries"] == {}
