"""What the trainer's fault tests share: a tiny command line and its one-line error."""

import pytest

from meanflow import train


def tiny_argv(out_dir, data_path, *extra):
    """A 1-step run of a 1-block DiT on the fake MNIST; ``extra`` options come last and win."""
    return [
        "--model_kwargs", "{depth: 1, hidden_size: 32, num_heads: 2}", "--steps", "1", "--batch_size", "8",
        "--data.path", data_path, "--out_dir", str(out_dir), "--sample_every", "0", "--eval_samples", "0",
        "--progress", "false", *extra,
    ]  # fmt: skip


def cli_error(argv) -> str:
    """The message ``python -m meanflow.train ARGV`` ends with (exit status 1)."""
    with pytest.raises(SystemExit) as e:
        train.cli(argv)
    message = e.value.code
    assert isinstance(message, str) and message.startswith("meanflow.train: error: "), message
    assert "\n" not in message
    return message
