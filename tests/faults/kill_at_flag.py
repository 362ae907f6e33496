"""A trainer killed with SIGKILL in the middle of a write: the fault tests' stalled subprocess."""

import subprocess
import sys
import time


def kill_when_flagged(script: str, root: str, flag, argv) -> None:
    """Run ``python -c script root flag *argv``, which creates ``flag`` when it reaches the write
    it then stalls in, and SIGKILL it there (within two minutes, or the test fails)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, root, str(flag), *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not flag.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert flag.exists(), proc.stderr.read().decode() if proc.poll() is not None else "no write"
    finally:
        proc.kill()  # SIGKILL
        proc.communicate()
