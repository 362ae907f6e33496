"""Two gloo ranks: a failure on one rank (a write on rank 0, a refusal rank 0 alone checks, a
rank's own batch) is the same error on every rank, and none is left waiting at a collective;
a resumed run and a resumed ``generate`` end where one uninterrupted process ends.

Each test spawns its ranks and waits for them a bounded time: a rank left waiting fails the
test instead of hanging it. A rank records what its work raised (or returned) in a file.
"""

import dataclasses
import errno
import fcntl
import json
import os
import socket
import time

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from meanflow import generate, generate_out, train, train_report, train_state
from meanflow.config import TrainConfig

WORLD = 2
TIMEOUT_S = 60


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank, world, port, record, work, args):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    try:
        outcome = {"returned": work(rank, *args)}
    except BaseException as e:
        outcome = {"raised": type(e).__name__, "message": str(e), "oserror": isinstance(e, OSError)}
    with open(os.path.join(record, f"rank{rank}.json"), "w") as f:
        json.dump(outcome, f)
    # No teardown: gloo's threads sometimes abort the exit of a process whose group saw an
    # error, which would fail the test for a reason that is not ours.
    os._exit(0)


def run_ranks(tmp_path, work, *args) -> list:
    """``work(rank, *args)`` on ``WORLD`` spawned gloo ranks; each rank's outcome."""
    record = tmp_path / "outcomes"
    record.mkdir(exist_ok=True)
    for stale in record.iterdir():
        stale.unlink()
    context = mp.start_processes(
        _rank,
        args=(WORLD, _free_port(), str(record), work, args),
        nprocs=WORLD,
        start_method="spawn",
        join=False,
    )
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail(f"the ranks still run after {TIMEOUT_S} s: one waits at a collective for good")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    return [json.loads((record / f"rank{r}.json").read_text()) for r in range(WORLD)]


def assert_same_error(outcomes, kind, match):
    """Every rank raised the error of kind ``kind`` (``OSError`` or an exception name) with the
    same message, containing ``match``."""
    for outcome in outcomes:
        assert "raised" in outcome, outcomes
        assert outcome["oserror"] if kind == "OSError" else outcome["raised"] == kind, outcomes
        assert outcome["message"] == outcomes[0]["message"], outcomes
    assert match in outcomes[0]["message"], outcomes


def _error():
    return OSError(errno.ENOSPC, "injected: no space left on the device")


def _no_space(*args, **kwargs):
    raise _error()


# ------------------------------------------------------------------------------- generate


def _generate_manifest_fails(rank, ckpt, out):
    if rank == 0:
        generate_out.write_json_atomic = _no_space
    generate.run(ckpt, out, num=5, batch_size=2, device="cpu", progress=False)


def test_generate_manifest_write_failing_on_rank0_fails_every_rank(tmp_path, tiny):
    tiny(in_channels=3).save_pretrained(str(tmp_path / "m"))
    outcomes = run_ranks(tmp_path, _generate_manifest_fails, str(tmp_path / "m"), str(tmp_path / "s"))
    assert_same_error(outcomes, "OSError", "injected: no space")


def _generate(rank, ckpt, out):
    generate.run(ckpt, out, num=5, batch_size=2, device="cpu", progress=False)


def test_generate_on_an_out_held_by_another_run_refuses_every_rank(tmp_path, tiny):
    tiny(in_channels=3).save_pretrained(str(tmp_path / "m"))
    out = tmp_path / "s"
    out.mkdir()
    folder = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another generate run's lock
        outcomes = run_ranks(tmp_path, _generate, str(tmp_path / "m"), str(out))
    finally:
        os.close(folder)
    assert_same_error(outcomes, "ValueError", "is in use by another meanflow.generate run")
    assert os.listdir(out) == []


def _generate_rank1_fails_then_resumes(rank, ckpt, out):
    """Rank 1's second batch (of 7 images in 4 batches of 2: rank 0 has 0 and 2, rank 1 has 1
    and 3) cannot be written; the run is then repeated as it was."""
    save = generate._save_npz

    def fail_batch_3(path, **arrays):
        if path == generate.shard_path(out, 3):
            _no_space()
        save(path, **arrays)

    generate._save_npz = fail_batch_3 if rank == 1 else save
    try:
        generate.run(ckpt, out, num=7, batch_size=2, device="cpu", progress=False)
    except OSError as e:
        first = str(e)
    else:
        first = None
    generate._save_npz = save
    generate.run(ckpt, out, num=7, batch_size=2, device="cpu", progress=False)
    return first


def test_generate_batch_failing_on_one_rank_fails_every_rank_then_resumes(tmp_path, tiny):
    """A count the ranks do not divide: the failed run's shards are kept, the run repeated
    under two ranks ends with every image once, as one process makes them."""
    tiny(in_channels=3).save_pretrained(str(tmp_path / "m"))
    out = tmp_path / "two"
    outcomes = run_ranks(tmp_path, _generate_rank1_fails_then_resumes, str(tmp_path / "m"), str(out))
    assert [o.get("returned") for o in outcomes] == [str(_error())] * 2, outcomes
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the ranks: bitwise the same images
    try:
        generate.run(
            str(tmp_path / "m"), str(tmp_path / "one"), num=7, batch_size=2, device="cpu", progress=False
        )
    finally:
        torch.set_num_threads(threads)
    with np.load(out / "samples.npz") as two, np.load(tmp_path / "one" / "samples.npz") as one:
        assert np.array_equal(two["arr_0"], one["arr_0"]) and np.array_equal(two["arr_1"], one["arr_1"])
    assert sorted(os.listdir(out / "images")) == [f"{i:06d}.png" for i in range(7)]
    assert os.listdir(out / "shards") == []


# -------------------------------------------------------------------------------- trainer


def tiny_config(out_dir, data_path, **overrides):
    config = TrainConfig.from_name(
        "mnist",
        model="DiT-T/8",
        model_kwargs={"depth": 1, "hidden_size": 32, "num_heads": 2},
        steps=2,
        batch_size=8,
        warmup_steps=1,
        ema_decays=[0.9],
        out_dir=str(out_dir),
        log_every=1,
        sample_every=0,
        eval_every=0,
        eval_samples=0,
        ckpt_every=1,
        progress=False,
    )
    config.data.path = data_path
    for key, value in overrides.items():
        setattr(config, key, value)
    return config.validate()


def _train(rank, config, fault=None):
    if rank == 0 and fault == "checkpoint at step 2":
        save = train_state.atomic_save
        train_state.atomic_save = lambda state, path: _no_space() if state["step"] == 2 else save(state, path)
    if rank == 0 and fault == "sample grid":
        train_report.save_grid = _no_space
    if rank == 0 and fault == "metrics at step 2":
        write = train_report.MetricsLog.__call__
        train_report.MetricsLog.__call__ = lambda log, r: _no_space() if r.get("step") == 2 else write(log, r)
    if rank == 1 and fault == "no checkpoint on rank 1":
        train.resume = lambda *args: (0, None)
    return train.main(config)["step"]


def test_out_dir_held_by_another_run_refuses_every_rank(tmp_path, fake_mnist):
    out = tmp_path / "run"
    out.mkdir()
    folder = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another trainer's lock
        outcomes = run_ranks(tmp_path, _train, tiny_config(out, fake_mnist))
    finally:
        os.close(folder)
    assert_same_error(outcomes, "ValueError", "is in use by another meanflow.train run")
    assert os.listdir(out) == []


def test_out_dir_refused_on_rank0_refuses_every_rank(tmp_path, fake_mnist):
    out = tmp_path / "run"
    (out / "metrics.jsonl").mkdir(parents=True)
    outcomes = run_ranks(tmp_path, _train, tiny_config(out, fake_mnist))
    assert_same_error(outcomes, "ValueError", "metrics.jsonl is a directory")
    assert sorted(os.listdir(out)) == ["metrics.jsonl"]


@pytest.mark.parametrize("fault", ["checkpoint at step 2", "sample grid", "metrics at step 2"])
def test_a_write_failing_on_rank0_fails_every_rank(tmp_path, fake_mnist, fault):
    out = tmp_path / "run"
    outcomes = run_ranks(tmp_path, _train, tiny_config(out, fake_mnist, sample_every=1), fault)
    assert_same_error(outcomes, "OSError", "injected: no space")
    if fault == "checkpoint at step 2":  # the last good checkpoint stays
        assert torch.load(out / "last.pt", weights_only=True)["step"] == 1


def test_ranks_resuming_from_different_steps_are_refused(tmp_path, fake_mnist):
    """Every rank must continue from the same step (an out_dir not shared between nodes would
    give rank 1 no checkpoint where rank 0 has one)."""
    config = tiny_config(tmp_path / "run", fake_mnist, steps=1)
    train.main(config)
    config.steps = 2
    outcomes = run_ranks(tmp_path, _train, config, "no checkpoint on rank 1")
    assert_same_error(outcomes, "ValueError", "the ranks resumed from different steps ([1, 0])")


def _train_twice(rank, first, second):
    return [train.main(first)["step"], train.main(second)["step"]]


def test_two_ranks_resume_where_one_process_goes_on(tmp_path, fake_mnist):
    """Stopped at step 2 and resumed to 4 under two ranks: the weights, optimizer and data
    position of 4 uninterrupted steps in one process (the same draws, the same batches)."""
    torch.set_num_threads(1)
    train.main(tiny_config(tmp_path / "one", fake_mnist, steps=4))
    half, full = (tiny_config(tmp_path / "two", fake_mnist, steps=n) for n in (2, 4))
    outcomes = run_ranks(tmp_path, _train_twice, half, full)
    assert [o.get("returned") for o in outcomes] == [[2, 4]] * 2, outcomes
    one, two = (torch.load(tmp_path / d / "last.pt", weights_only=True) for d in ("one", "two"))
    assert two["world_size"] == 2 and two["step"] == one["step"] == 4 and two["data"] == one["data"]
    for name, value in one["model"].items():
        torch.testing.assert_close(two["model"][name], value, rtol=0, atol=1e-6, msg=name)
    for a, b in zip(one["opt"]["state"].values(), two["opt"]["state"].values()):
        for key in a:
            torch.testing.assert_close(b[key].float(), a[key].float(), rtol=0, atol=1e-6)


def test_ranks_resuming_under_another_world_size_draw_their_own_streams(tmp_path, fake_mnist):
    """A one-process run resumed by two ranks: each rank's global generators (an adapter's
    dropout draws from them) are its own, not a copy of the one saved stream."""
    train.main(tiny_config(tmp_path / "run", fake_mnist, steps=1))
    outcomes = run_ranks(tmp_path, _train, tiny_config(tmp_path / "run", fake_mnist, steps=2))
    assert [o.get("returned") for o in outcomes] == [2, 2], outcomes
    rngs = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["rng"]
    assert len(rngs) == 2 and not torch.equal(rngs[0]["torch"], rngs[1]["torch"])
    assert not torch.equal(rngs[0]["numpy"][1], rngs[1]["numpy"][1])
    assert rngs[0]["python"] != rngs[1]["python"]


@dataclasses.dataclass
class _NoConfig:
    pass


class _RankStateLoader:
    """A loader whose state is its rank's own (as an image loader's mid-epoch read failures are)."""

    def __init__(self, state):
        self.state = state

    def state_dict(self):
        return dict(self.state)

    def load_state_dict(self, state):
        self.state = state


def _checkpoint_then_restore(rank, out, world_after):
    """Every rank checkpoints its loader's state, then restores it as a run of ``world_after`` ranks."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    config = TrainConfig(out_dir=out, ema_decays=[])
    model = torch.nn.Linear(2, 2)
    model.config = _NoConfig()  # a checkpoint records its model's config (a dataclass)
    opt = torch.optim.AdamW(model.parameters())
    device = torch.device("cpu")
    train_state.save_checkpoint(
        config, 1, model, [], opt, _RankStateLoader({"mine": rank}), rank, WORLD, device, None
    )
    dist.barrier()
    ckpt = torch.load(os.path.join(out, "last.pt"), weights_only=True)
    restored = _RankStateLoader(None)
    train_state.restore(ckpt, "last.pt", model, [], opt, restored, rank, world_after, device, config.seed)
    return restored.state


@pytest.mark.parametrize("world_after", [WORLD, 1])
def test_each_rank_resumes_its_own_loader_state(tmp_path, world_after):
    """A checkpoint holds every rank's loader state (a loader's read failures of the epoch under
    way are its rank's); resumed by as many ranks, each takes back its own, by another number,
    rank 0's (the data position they share)."""
    outcomes = run_ranks(tmp_path, _checkpoint_then_restore, str(tmp_path), world_after)
    mine = [{"mine": r} for r in range(WORLD)] if world_after == WORLD else [{"mine": 0}] * WORLD
    assert [o.get("returned") for o in outcomes] == mine, outcomes


# ------------------------------------------------------------------------------- data


def _scan(rank, root):
    import torch.distributed as dist

    from meanflow.data import build_loader

    dist.init_process_group("gloo")
    config = TrainConfig(batch_size=2)
    config.data.name, config.data.path, config.data.backend = "imagefolder", root, "torch"
    x, y = next(iter(build_loader(config, rank, WORLD, "cpu")))
    return list(x.shape)


def test_an_image_folder_scan_failing_on_rank0_fails_every_rank(tmp_path):
    from meanflow.data.synthetic import make_image_tree

    root = tmp_path / "images"
    (root / "class_000").mkdir(parents=True)
    (root / "class_000" / "broken.jpg").write_bytes(b"not a jpeg")
    assert_same_error(run_ranks(tmp_path, _scan, str(root)), "ValueError", "no readable images")
    make_image_tree(str(root), classes=2, per_class=2, sides=(16, 40), extras=False)
    shapes = [outcome["returned"] for outcome in run_ranks(tmp_path, _scan, str(root))]
    assert shapes == [[1, 3, 256, 256]] * WORLD
