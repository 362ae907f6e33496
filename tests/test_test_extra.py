"""CI installs the test extra (pyproject: DALI, diffusers, accelerate, timm, torch-fidelity,
pybind11, ruff), and the data, adapter, evaluation, mutation-tool and lint tests skip without these
packages only on a machine without the extra. Under CI a package that does not import is a
failure here, so that those tests can never be skipped there in silence (a broken install
would otherwise pass as "N skipped")."""

import importlib
import os

import pytest

# The import names of the test extra's packages that tests skip without.
TEST_EXTRA = ["nvidia.dali", "diffusers", "accelerate", "timm", "torch_fidelity", "pybind11", "ruff"]


@pytest.mark.skipif(not os.environ.get("CI"), reason="only CI must have it: pip install -e .[test]")
@pytest.mark.parametrize("module", TEST_EXTRA)
def test_ci_has_the_test_extra(module):
    try:
        importlib.import_module(module)
    except ImportError as e:
        pytest.fail(f"CI installs the test extra, yet {module} does not import: {e}")
