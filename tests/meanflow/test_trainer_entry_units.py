"""The trainer's entry points without a run: the learning rate of each step, the signal
handler, the one-line errors of ``meanflow.train.cli``, and what a ``--config`` file may hold
and how its values read."""

import math
import signal

import pytest

from meanflow import train
from meanflow.config import TrainConfig, parse_args


def lrs(steps, warmup, schedule, lr=0.5):
    config = TrainConfig.from_name("mnist", steps=steps, warmup_steps=warmup, lr=lr, lr_schedule=schedule)
    return [train.learning_rate(config, step) for step in range(steps)]


def test_warmup_ramps_to_lr_without_a_step_at_zero():
    assert lrs(6, 4, "constant") == pytest.approx([0.125, 0.25, 0.375, 0.5, 0.5, 0.5], rel=1e-12)
    assert lrs(3, 0, "constant") == [0.5] * 3
    # a warm-up longer than the run never reaches lr
    assert lrs(2, 4, "cosine") == pytest.approx([0.125, 0.25], rel=1e-12)


@pytest.mark.parametrize(
    "schedule, decay",
    [
        ("linear", lambda done: 1 - done),
        ("cosine", lambda done: 0.5 * (1 + math.cos(math.pi * done))),
    ],
)
def test_decay_runs_from_lr_after_the_warmup_towards_zero_at_steps(schedule, decay):
    """4 decay steps after 1 warm-up step: the decay's fraction done is 0, 1/4, 2/4, 3/4."""
    got = lrs(5, 1, schedule)
    assert got == pytest.approx([0.5] + [0.5 * decay(k / 4) for k in range(4)], rel=1e-12)
    assert got[-1] > 0 and got == sorted(got, reverse=True)
    assert lrs(4, 0, schedule) == pytest.approx([0.5 * decay(k / 4) for k in range(4)], rel=1e-12)


def test_the_first_signal_asks_for_a_stop_the_second_stops_and_the_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    stop = train.StopOnSignal(master=False)
    try:
        assert not stop.requested
        signal.raise_signal(signal.SIGTERM)
        assert stop.requested and stop.reason == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    finally:
        stop.restore()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


@pytest.mark.parametrize("error", [ValueError, TypeError, FileNotFoundError, FloatingPointError])
def test_cli_says_an_error_in_one_line_with_status_1(monkeypatch, error):
    def fail(argv):
        raise error("loss went to nan\n(step 3)")

    monkeypatch.setattr(train, "main", fail)
    with pytest.raises(SystemExit) as e:
        train.cli([])
    assert e.value.code == "meanflow.train: error: loss went to nan\n(step 3)"


def test_cli_keeps_a_bugs_traceback(monkeypatch):
    def fail(argv):
        raise KeyError("ema")

    monkeypatch.setattr(train, "main", fail)
    with pytest.raises(KeyError):
        train.cli([])


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("run.yaml", "- steps\n- 3\n", "must hold a mapping of config keys"),
        ("run.yaml", "", "must hold a mapping of config keys"),
        ("run.yaml", b"\xff\xfe\x00steps", "is not a text file"),
        ("run.json", '["steps"]', "must hold a mapping of config keys"),
    ],
)
def test_a_config_file_that_is_no_mapping_is_refused_naming_it(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError, match=f"--config file '{path}' {message}"):
        parse_args(["--config", str(path)])


def test_a_config_folder_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        parse_args(["--config", str(tmp_path)])


def test_a_json_file_sets_nested_keys(tmp_path):
    path = tmp_path / "run.json"
    path.write_text('{"lr": 1e-4, "steps": 3, "data": {"path": "null"}}')
    c = parse_args(["--config", str(path)])
    assert (c.lr, c.steps, c.data.path) == (1e-4, 3, None)
