"""The run's log after a kill: a run killed after its last checkpoint logged steps its resume
trains again, and maybe half a line. The resumed run's ``metrics.jsonl`` holds each step once,
from the trajectory its weights come from; what was set aside is in
``metrics.abandoned.jsonl``, as it was. A run that ends on a checkpoint step writes it once."""

import json
import os
import sys
import types

from kill_at_flag import kill_when_flagged
from trainer_cli import tiny_argv

from meanflow import train, train_state
from meanflow.train_report import ABANDONED, set_aside_records_after

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Runs the trainer until its second checkpoint write (step 4; the first is step 2), which it
# never starts: it says so through a flag file and the test kills it there, as a kill -9 would.
KILLED_BEFORE_SECOND_CHECKPOINT = """
import sys, time
sys.path.insert(0, sys.argv[1])
import torch
real_save, calls = torch.save, []
def stalled_save(obj, f, *args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        open(sys.argv[2], "w").close()
        time.sleep(600)
    real_save(obj, f, *args, **kwargs)
torch.save = stalled_save
from meanflow import train
train.main(sys.argv[3:])
"""


def argv(out_dir, data_path, steps):
    return tiny_argv(out_dir, data_path, "--steps", str(steps), "--ckpt_every", "2", "--log_every", "1")


def records(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def steps_logged(path):
    return [r["step"] for r in records(path) if "step" in r and "loss" in r]


def test_a_resume_after_a_kill_logs_each_step_once_and_keeps_what_it_set_aside(tmp_path, fake_mnist, capsys):
    run, flag = tmp_path / "run", tmp_path / "writing"
    kill_when_flagged(KILLED_BEFORE_SECOND_CHECKPOINT, ROOT, flag, argv(run, fake_mnist, 5))
    log = run / "metrics.jsonl"
    assert steps_logged(log) == [1, 2, 3, 4]  # last.pt holds step 2
    with open(log, "a") as f:
        f.write('{"step": 5, "lo')  # the write a kill cut short
    before = log.read_bytes()

    capsys.readouterr()
    summary = train.main(argv(run, fake_mnist, 5))
    assert summary["steps_run"] == 3
    assert f"moved the last 3 lines of {log} (logged after step 2" in capsys.readouterr().out
    assert steps_logged(log) == [1, 2, 3, 4, 5]
    assert [r["summary"]["step"] for r in records(log) if "summary" in r] == [5]
    # Set aside as they were: the two whole lines and the torn one, ended.
    kept = len(before.splitlines()[0]) + 1 + len(before.splitlines()[1]) + 1
    assert (run / ABANDONED).read_bytes() == before[kept:] + b"\n"

    # A run resumed with nothing logged past its checkpoint moves nothing.
    train.main(argv(run, fake_mnist, 6))
    assert steps_logged(log) == [1, 2, 3, 4, 5, 6]
    assert (run / ABANDONED).read_bytes() == before[kept:] + b"\n"


def test_records_past_the_step_are_set_aside_from_the_first_one_on(tmp_path):
    """A run resumed from an earlier kept checkpoint abandons everything logged after it, its
    evaluations and summaries included; the records of its own step stay."""
    lines = [
        {"step": 2, "loss": 1.0},
        {"step": 2, "eval/acc": 0.5},
        {"summary": {"step": 2, "steps_run": 2}},
        {"step": 4, "loss": 0.9},
        {"summary": {"step": 4, "steps_run": 2}},
        {"step": 3, "loss": 0.8},  # an older resume of that later run: abandoned with it
    ]
    text = "".join(json.dumps(line) + "\n" for line in lines)
    (tmp_path / "metrics.jsonl").write_text(text)
    (tmp_path / ABANDONED).write_text('{"step": 9}\n')

    assert set_aside_records_after(str(tmp_path), 2) == 3
    assert records(tmp_path / "metrics.jsonl") == lines[:3]
    assert records(tmp_path / ABANDONED) == [{"step": 9}, *lines[3:]]
    assert set_aside_records_after(str(tmp_path), 2) == 0
    assert set_aside_records_after(str(tmp_path / "no-run-here"), 2) == 0

    # A record cut short just before its newline: appended to, it would run into the next one.
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "eval/acc": 0.5}')
    assert set_aside_records_after(str(tmp_path), 2) == 1
    assert records(tmp_path / "metrics.jsonl") == lines[:3]
    assert records(tmp_path / ABANDONED)[-1] == {"step": 2, "eval/acc": 0.5}


def test_a_blank_line_does_not_set_aside_the_records_after_it(tmp_path):
    """A blank line (an editor saving the log, ``echo >> metrics.jsonl``) is no record of any
    step: the records of the trajectory after it stay, and what follows the step still goes."""
    text = '{"step": 1, "loss": 1.0}\n\n  \n{"step": 2, "loss": 0.9}\n{"step": 3, "loss": 0.8}\n'
    (tmp_path / "metrics.jsonl").write_text(text)
    assert set_aside_records_after(str(tmp_path), 2) == 1
    assert (tmp_path / "metrics.jsonl").read_text() == text[: text.index('{"step": 3')]
    assert records(tmp_path / ABANDONED) == [{"step": 3, "loss": 0.8}]


def test_a_run_ending_on_a_checkpoint_step_writes_it_once(tmp_path, fake_mnist, monkeypatch):
    """The last step's checkpoint is not written a second time at the end (DiT-XL/2's last.pt
    is 10.8 GB)."""
    written, atomic_save = [], train_state.atomic_save
    monkeypatch.setattr(
        train_state,
        "atomic_save",
        lambda state, path: (written.append(state["step"]), atomic_save(state, path)),
    )
    train.main(argv(tmp_path / "run", fake_mnist, 4))
    assert written == [2, 4]
    train.main(argv(tmp_path / "run", fake_mnist, 5))  # ends off the cadence: written at the end
    assert written == [2, 4, 5]


def test_tensorboard_purges_what_the_resume_trains_again(tmp_path, fake_mnist, monkeypatch):
    """TensorBoard's own rule for a resumed run: events from the step it goes on at are dropped."""
    opened = []

    class Writer:
        def __init__(self, log_dir, purge_step=None):
            opened.append((log_dir, purge_step))

        def add_scalar(self, *args):
            pass

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    run = tmp_path / "run"
    train.main(argv(run, fake_mnist, 2) + ["--tensorboard", "true"])
    train.main(argv(run, fake_mnist, 3) + ["--tensorboard", "true"])
    assert opened == [(str(run / "tb"), 1), (str(run / "tb"), 3)]
