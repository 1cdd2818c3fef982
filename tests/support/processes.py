"""Processes and mounts by their ids: is a pid alive, stop it, is a path mounted, unmount it whatever it takes.

Everything here acts on one process or one mount point that the caller started: by PID, never by name.
The mount table is read from /proc/self/mountinfo, which still lists a stale FUSE mount (its daemon dead,
stat() failing with ENOTCONN), so a stale mount is found and cleaned up like a live one.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_pid_gone(pid: int, timeout: float) -> bool:
    """Wait until the process is gone (reaping it if it is our child); False if it outlived `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL."""
    if not pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_pid_gone(pid, timeout):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_pid_gone(pid, 5)


def _mountpoints() -> list[str]:
    def unescape(field: str) -> str:  # mountinfo escapes space, tab, newline and backslash as \ooo
        return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)

    with open("/proc/self/mountinfo") as f:
        return [unescape(line.split()[4]) for line in f]


def is_mounted(path: str | os.PathLike) -> bool:
    return os.path.realpath(path) in _mountpoints()


def mounts_under(path: str | os.PathLike) -> list[str]:
    """Mount points at or below `path`, deepest first (the order to unmount them in)."""
    root = os.path.realpath(path)
    found = [m for m in _mountpoints() if m == root or m.startswith(root + "/")]
    return sorted(found, key=len, reverse=True)


def force_unmount(path: str | os.PathLike) -> bool:
    """`fusermount3 -u`, then lazily (`-uz`), then `umount -l`, until `path` is gone from the mount table.

    True if it is not mounted any more.
    """
    for args in (["fusermount3", "-u"], ["fusermount3", "-uz"], ["umount", "-l"]):
        if not is_mounted(path):
            return True
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run([*args, str(path)], capture_output=True, timeout=60)
        for _ in range(20):
            if not is_mounted(path):
                return True
            time.sleep(0.1)
    return not is_mounted(path)
