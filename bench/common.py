"""Plumbing every table shares: cleanup that survives Ctrl-C, processes, cache drops, timing, formatting.

Cleanup is one LIFO stack for the whole run: whatever is started (server, mount, process, temp dir)
registers how to undo itself the moment it exists, so an exception, Ctrl-C or SIGTERM anywhere still
unmounts every mount, stops every process by its PID and removes every temp dir. Pids and mount points
themselves are handled as the tests handle them (tests/support/processes.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tests.support.processes import force_unmount, mounts_under

MB = 1_000_000  # rates are in MB/s = 10^6 bytes per second
MiB = 1 << 20


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- cleanup ---


class Cleanup:
    """A LIFO stack of undo actions. `push` returns a handle; `release(handle)` runs it early, once."""

    def __init__(self) -> None:
        self._stack: list[tuple[int, str, Callable[[], None]]] = []
        self._next = 0

    def push(self, label: str, fn: Callable[[], None]) -> int:
        self._next += 1
        self._stack.append((self._next, label, fn))
        return self._next

    def release(self, handle: int) -> None:
        for i, (h, label, fn) in enumerate(self._stack):
            if h == handle:
                del self._stack[i]
                self._run(label, fn)
                return

    def run_all(self) -> None:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        try:
            while self._stack:
                _, label, fn = self._stack.pop()
                self._run(label, fn)
        finally:
            signal.signal(signal.SIGINT, old)

    @staticmethod
    def _run(label: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as e:  # keep cleaning up the rest
            log(f"cleanup of {label} failed: {e}")

    @contextlib.contextmanager
    def scope(self, label: str, fn: Callable[[], None]) -> Iterator[None]:
        handle = self.push(label, fn)
        try:
            yield
        finally:
            self.release(handle)


CLEANUP = Cleanup()


def _on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every `finally`, like Ctrl-C does


def install_signal_handlers() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored (`cmd &`)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)


def temp_dir(prefix: str, base: str | None = None) -> str:
    path = tempfile.mkdtemp(prefix=f"artfs-bench-{prefix}-", dir=base)
    CLEANUP.push(f"rm {path}", lambda: remove_tree(path))
    return path


def fresh_dir(parent: str, name: str) -> str:
    """An empty directory `parent/name` (removed first if it exists); removal belongs to `parent`'s owner."""
    path = os.path.join(parent, name)
    remove_tree(path)
    os.makedirs(path)
    return path


def remove_tree(path: str) -> None:
    """rm -rf, but never through a mount: anything still mounted below `path` is unmounted first."""
    for mnt in mounts_under(path):
        unmount(mnt)
    shutil.rmtree(path, ignore_errors=True)


def unmount(path: str) -> None:
    """Unmount whatever it takes (tests/support/processes.py), or say that it could not."""
    if not force_unmount(path):
        log(f"warning: {path} is still mounted")


# --- processes ---


def run_cmd(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 3600,
        check: bool = True) -> subprocess.CompletedProcess:
    """Run to completion, capturing output; a failure raises with the command's own last stderr line."""
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise CommandFailed(args, proc.returncode, proc.stderr)
    return proc


class CommandFailed(RuntimeError):
    def __init__(self, args: list[str], rc: int, stderr: str) -> None:
        lines = [ln for ln in (stderr or "").strip().splitlines() if ln.strip()]
        self.reason = lines[-1].strip() if lines else f"exit status {rc}"
        super().__init__(f"{' '.join(args[:3])}…: {self.reason}")


def peak_rss_mib(pid: int | None) -> float | None:
    """VmHWM (peak resident set) of a live process, in MiB."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class ProbeFailed(RuntimeError):
    pass


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def probe(mode: str, *args: str | int, timeout: float = 600) -> dict:
    """Run a timed filesystem operation in a child process (bench/probe.py); a hang costs `timeout`."""
    cmd = [sys.executable, "-m", "bench.probe", mode, *map(str, args)]
    env = {**os.environ, "PYTHONPATH": REPO}
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ProbeFailed(f"{mode} timed out after {timeout:.0f}s") from None
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise ProbeFailed(f"{mode} failed: {lines[-1].strip() if lines else proc.returncode}"[:200])
    return json.loads(proc.stdout)


# --- caches ---


class CacheDropper:
    """`sync; echo 3 > /proc/sys/vm/drop_caches`, or a warning (once) where that is not allowed."""

    def __init__(self) -> None:
        self.works = True

    def __call__(self) -> None:
        os.sync()
        if not self.works:
            return
        try:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
        except OSError as e:
            self.works = False
            log(f"cannot drop the page cache ({e}): 'cold' figures will be flattered")


drop_caches = CacheDropper()


# --- measuring ---


@dataclass
class Sample:
    """Repeated measurements of one thing; `value` is the median. `unit` tells how to print it."""

    values: list[float] = field(default_factory=list)
    unit: str = ""
    error: str | None = None  # set when it could not be measured: printed as n/a (reason)

    @property
    def value(self) -> float | None:
        return statistics.median(self.values) if self.values and self.error is None else None

    def as_json(self) -> dict:
        return {"median": self.value, "values": self.values, "unit": self.unit, "error": self.error}


def na(reason: str, unit: str = "") -> Sample:
    return Sample(unit=unit, error=reason)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def read_all(path: str, buf: memoryview | None = None) -> int:
    """Read a file sequentially with 1 MiB requests; returns the bytes read."""
    mv = buf if buf is not None else memoryview(bytearray(MiB))
    total = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(mv):
            total += n
    return total


def copy_file(src: str, dst: str) -> int:
    """Copy with 1 MiB reads and writes (write + close, no fsync, as `cp` does)."""
    mv = memoryview(bytearray(MiB))
    total = 0
    with open(src, "rb", buffering=0) as fi, open(dst, "wb", buffering=0) as fo:
        while n := fi.readinto(mv):
            fo.write(mv[:n])
            total += n
    return total


# --- formatting ---


def fmt_num(x: float | None) -> str:
    if x is None:
        return "n/a"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"


def fmt(s: Sample | None) -> str:
    if s is None:
        return "—"
    if s.error is not None:
        return f"n/a ({s.error})"
    v = s.value
    return f"{fmt_num(v)} {s.unit}".strip()


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(r: float | None) -> str:
    return "n/a" if r is None else f"{r:.2f}×"


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("yes" if ok else "**no**")


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
