"""The mount point as the kernel sees it: the mount table, stale mounts, readahead, unmounting.

A daemon killed with -9 leaves its mount behind: every access then fails with "Transport endpoint is not
connected" (ENOTCONN). That state is recognized here and named, and `--force` / `artfs unmount` clean it
with a lazy unmount, instead of an obscure failure from libfuse.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass

from artfs.errors import ArtfsError

log = logging.getLogger(__name__)

FSTYPE = "fuse.artfs"


@dataclass(frozen=True)
class MountEntry:
    mountpoint: str
    fstype: str
    source: str
    dev: str  # "major:minor", the name of the mount's entry in /sys/class/bdi


def _unescape(field: str) -> str:
    """/proc/self/mountinfo escapes space, tab, newline and backslash as octal (\\040)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts() -> list[MountEntry]:
    """The mount table of this process's mount namespace."""
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            head, _, tail = line.partition(" - ")
            fields, rest = head.split(), tail.split()
            if len(fields) < 5 or len(rest) < 2:
                continue
            out.append(MountEntry(_unescape(fields[4]), rest[0], _unescape(rest[1]), fields[2]))
    return out


def find_mount(path: str) -> MountEntry | None:
    """The mount whose mount point is exactly `path` (the last one, if mounts are stacked)."""
    path = os.path.abspath(path)
    found = None
    for m in mounts():
        if m.mountpoint == path:
            found = m
    return found


def is_stale(path: str) -> bool:
    """statfs, not stat: the kernel may answer a stat from cached attributes after the daemon died.
    ECONNABORTED is what a request in flight when the connection died gets back."""
    try:
        os.statvfs(path)
    except OSError as e:
        return e.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    return False


def stale_mount_above(path: str) -> str | None:
    """The stale mount that `path` lies in (its mount point: the highest ancestor that answers ENOTCONN),
    or None. For commands that get a path inside a mount whose daemon died."""
    found = None
    p = os.path.abspath(path)
    while True:
        if is_stale(p):
            found = p
        parent = os.path.dirname(p)
        if parent == p:
            return found
        p = parent


def stale_message(path: str) -> str:
    return (f"{path} is a stale mount (transport endpoint is not connected: its daemon died); "
            f"run `artfs unmount {path}` or mount again with --force")


def _fusermount(path: str, lazy: bool) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    if tool is None:
        raise ArtfsError("fusermount3 not found: install fuse3")
    args = [tool, "-u", *(["-z"] if lazy else []), path]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def prepare(path: str, force: bool = False) -> str:
    """Check a mount point (an empty directory, not mounted), cleaning a stale mount with `force`."""
    path = os.path.abspath(path)
    if is_stale(path):
        if not force:
            raise ArtfsError(stale_message(path))
        log.info("%s: cleaning up a stale mount", path)
        res = _fusermount(path, lazy=True)
        if res.returncode != 0 or is_stale(path):
            raise ArtfsError(f"cannot clean up the stale mount at {path}: {res.stderr.strip() or 'still stale'}")
    if not os.path.exists(path):
        raise ArtfsError(f"mount point {path} does not exist (create an empty directory first)")
    if not os.path.isdir(path):
        raise ArtfsError(f"mount point {path} is not a directory")
    existing = find_mount(path)
    if existing is not None:
        what = "an artfs mount" if existing.fstype == FSTYPE else f"a {existing.fstype} mount"
        raise ArtfsError(f"{path} is already {what}; unmount it first (artfs unmount {path})")
    try:
        if os.listdir(path):
            raise ArtfsError(f"mount point {path} is not empty")
    except PermissionError:
        raise ArtfsError(f"cannot read mount point {path}: permission denied") from None
    return path


def raise_readahead(path: str, kb: int) -> None:
    """Raise the kernel's readahead for this mount to `kb` KiB (root only): 128 KiB halves FUSE throughput."""
    if kb <= 0:
        return
    entry = find_mount(path)
    if entry is None:
        return
    knob = f"/sys/class/bdi/{entry.dev}/read_ahead_kb"
    try:
        with open(knob) as f:
            current = int(f.read().strip())
    except (OSError, ValueError):
        log.debug("no readahead setting at %s", knob)
        return
    if current >= kb:
        return
    if os.geteuid() != 0:
        log.info("kernel readahead for this mount is %d KiB; as root, `echo %d > %s` makes big reads faster",
                 current, kb, knob)
        return
    try:
        with open(knob, "w") as f:
            f.write(str(kb))
    except OSError as e:
        log.warning("cannot raise the kernel readahead (%s): %s", knob, e.strerror)
        return
    log.info("raised the kernel readahead for this mount from %d to %d KiB (%s)", current, kb, knob)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"  # a zombie has exited
    except (OSError, IndexError):
        return False


def daemon_pid(path: str) -> int | None:
    """The pid of the daemon serving an artfs mount (it answers `user.artfs.pid` on its root)."""
    try:
        return int(os.getxattr(path, "user.artfs.pid"))
    except (OSError, ValueError):
        return None


def unmount(path: str, lazy: bool = False, wait: float = 30.0) -> None:
    """Unmount an artfs mount (live or stale) and wait for its daemon to finish (flushing the cache)."""
    path = os.path.abspath(path)
    entry = find_mount(path)
    if entry is None:
        raise ArtfsError(f"{path} is not mounted")
    if not entry.fstype.startswith("fuse"):
        raise ArtfsError(f"{path} is a {entry.fstype} mount, not an artfs mount")
    stale = is_stale(path)
    pid = None if stale else daemon_pid(path)
    res = _fusermount(path, lazy=lazy or stale)
    if res.returncode != 0:
        msg = res.stderr.strip()
        if "busy" in msg.lower():
            raise ArtfsError(f"{path} is busy: a process still uses it (close it, or use `artfs unmount --lazy`)")
        raise ArtfsError(f"cannot unmount {path}: {msg or f'fusermount3 exited with {res.returncode}'}")
    if pid is not None:
        deadline = time.monotonic() + wait
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            log.warning("artfs daemon %d still running %.0f s after unmounting %s", pid, wait, path)


def kill_daemon(pid: int, wait: float = 5.0) -> None:
    """SIGTERM by pid, then SIGKILL (for test teardown and stuck daemons)."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _alive(pid):
            return
