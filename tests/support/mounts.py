"""Real artfs mounts: `artfs mount --daemon` started, its daemon's pid known, unmounted whatever it takes.

The mount tests use `MountSet` (behind the `mount_artfs` fixture), which also reports the ERRORs a daemon
logged that its test did not declare. The benchmark uses `start_daemon` and `stop_daemon` with its own
`artfs` command (the installed entry point, whose start-up time its figures include).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.cli import artfs_cmd
from tests.support.processes import force_unmount, is_mounted, stop_pid, wait_pid_gone


class MountFailed(RuntimeError):
    """`artfs mount --daemon` failed; `reason` is the last line it wrote on stderr."""

    def __init__(self, stderr: str, returncode: int) -> None:
        lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
        self.reason = lines[-1] if lines else f"exit status {returncode}"
        super().__init__(f"artfs mount failed ({returncode}): {stderr.strip() or self.reason}")


def start_daemon(path: str | os.PathLike, store: str, *args: str, cache_dir: str | os.PathLike,
                 log: str | os.PathLike, cmd: Sequence[str] | None = None, env: dict[str, str] | None = None,
                 timeout: float = 120) -> int:
    """`artfs mount PATH --store STORE --daemon --log LOG --cache-dir CACHE_DIR ARGS`: the pid of the daemon,
    which serves the mount by the time this returns.

    `cmd` runs artfs (default: this checkout with this interpreter); `env` is the whole environment
    (default: os.environ). Raises MountFailed, or subprocess.TimeoutExpired after `timeout`.
    """
    argv = [*(cmd or artfs_cmd()), "mount", str(path), "--store", store, "--daemon", "--log", str(log),
            "--cache-dir", str(cache_dir), *args]
    res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL,
                         check=False)
    if res.returncode != 0:
        raise MountFailed(res.stderr, res.returncode)
    match = re.search(r"\(pid (\d+)\)", res.stdout)
    if match is None:
        raise MountFailed(f"no pid in: {res.stdout!r}", res.returncode)
    return int(match.group(1))


def stop_daemon(path: str | os.PathLike, pid: int, *, cmd: Sequence[str] | None = None,
                env: dict[str, str] | None = None, wait: float = 20) -> None:
    """`artfs unmount PATH` (lazily if it refuses), wait for the daemon, stop it by its pid if it lingers."""
    if is_mounted(path):
        try:
            subprocess.run([*(cmd or artfs_cmd()), "unmount", str(path)], capture_output=True, env=env, timeout=60,
                           stdin=subprocess.DEVNULL, check=False)
        except (OSError, subprocess.SubprocessError):
            pass
        if is_mounted(path):
            force_unmount(path)
    if not wait_pid_gone(pid, wait):
        stop_pid(pid)
    force_unmount(path)


@dataclass
class Mount:
    """A running `artfs mount --daemon`: its mount point, log, pid, and the ERRORs the test expects."""

    path: Path
    store: str
    log: Path
    pid: int
    cache_dir: Path
    expected_errors: list[str] = field(default_factory=list)
    closed: bool = False

    def stats(self) -> dict:
        """The daemon's counters (store requests, cache hits, …) from the root's `user.artfs.stats`."""
        return json.loads(os.getxattr(self.path, "user.artfs.stats"))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def unexpected_errors(self) -> list[str]:
        bad = []
        for line in self.log_text().splitlines():
            alarming = " ERROR " in line or line.startswith("Traceback")
            if alarming and not any(re.search(p, line) for p in self.expected_errors):
                bad.append(line)
        return bad

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            stop_daemon(self.path, self.pid)


MountFactory = Callable[..., Mount]


class MountSet:
    """The mounts of one test, in its tmp dir: `mount(...)` adds one, `close()` ends them all."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.mounts: list[Mount] = []

    def mount(self, store_uri: str, *args: str, env: dict[str, str] | None = None, cache_dir: Path | None = None,
              poll: str = "1s", path: Path | None = None) -> Mount:
        """A ready Mount of `store_uri` at `path` (default: a new dir), `env` added to os.environ."""
        n = len(self.mounts)
        if path is None:
            path = self.tmp / f"mnt{n}"
            path.mkdir()
        log = self.tmp / f"mount{n}.log"
        cache = cache_dir or self.tmp / f"mount-cache{n}"
        data = {"ARTFS_DATA": f"{cache}-data"}  # staged data: one machine's, kept beside its cache dir
        pid = start_daemon(path, store_uri, "--poll", poll, *args, cache_dir=cache, log=log,
                           env={**os.environ, **data, **(env or {})})
        m = Mount(path, store_uri, log, pid, cache)
        self.mounts.append(m)
        return m

    def close(self) -> list[str]:
        """Unmount everything; what each daemon logged that its test did not expect, one entry per mount."""
        problems = []
        for m in self.mounts:
            m.close()
            bad = m.unexpected_errors()
            if bad:
                problems.append(f"unexpected errors in {m.log}:\n" + "\n".join(bad[:20]))
        return problems
