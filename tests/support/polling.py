"""Waiting for something another process does (a daemon's poll, a seal reaching its gate), with a bound."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path


def eventually(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition",
               interval: float = 0.05) -> None:
    """Return once `check()` is true; fail the test if it is not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not met in {timeout:g} s"
        time.sleep(interval)


def wait_for_path(path: Path, timeout: float = 60) -> None:
    eventually(path.exists, timeout, f"{path} to appear", interval=0.02)
