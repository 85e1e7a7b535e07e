"""`python_lines`: run a Python snippet in a fresh interpreter, its output's lines.

For tests of what a process imports or keeps from a fork: the test process itself has
imported everything already, so only a fresh one can tell.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def python_lines(code: str, *, timeout_s: float = 60) -> list[str]:
    """Run `code` with this interpreter from the project's root; its stdout's lines.
    A failing snippet fails the test with its stderr."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=PROJECT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()
