"""Which run a FUSE caller belongs to: the calling thread → its process → up the process tree to a run's
registered root (core/run_registry.py), or to nobody.

- **Threads**: FUSE reports the calling thread's id. A thread is keyed by its own (tid, start time) from
  /proc/<tid>/stat; the first time one is seen, /proc/<tid>/status names its thread group (the process).
- **Processes** are keyed by (pid, start time), never by pid alone: a pid is reused, the pair is not.
- **The walk** goes up /proc/<pid>/stat's ppid until a registered root of this mount's store (the run),
  or past init (nobody). `artfs run` is a child subreaper, so a process whose parent exits (a daemonizing
  worker) is re-parented to it and stays in the run's tree.
- **Unattributed**: pid 0 (the kernel, or a caller in another pid namespace) and a process this daemon
  cannot see in its /proc (gone already) belong to no run; nothing is guessed.
- **Cost**: with no run registered, a lookup is one stat of the registry directory (`Watcher`). With runs,
  a known thread costs one read of /proc/<tid>/stat (~13 µs) and a dict lookup: a DataLoader opening
  100,000 files walks /proc once per worker, not per file. The caches are dropped whenever the set of
  registered runs changes, since a new root changes the answer for processes already seen.

Runs on the trio loop: every call reads only /proc (procfs answers from memory, never blocks on a disk).
"""

from __future__ import annotations

import os

from artfs.core.places import Places
from artfs.core.run_registry import ProcStat, RegisteredRun, Watcher, proc_stat

MAX_DEPTH = 4096  # a process tree deeper than this is a loop seen through a race: give up
MAX_CACHED = 1 << 16  # entries per cache before it is dropped whole (cheap to rebuild, bounded memory)

Key = tuple[int, int]  # (pid or tid, start time)


class Attribution:
    """Caller → run id for one mount (one store). `proc` is the procfs root (tests use the real one)."""

    def __init__(self, places: Places, store_uri: str, proc: str = "/proc") -> None:
        self.watcher = Watcher(places, store_uri)
        self.proc = proc
        self._roots: dict[Key, str] = {}
        self._runs: list[RegisteredRun] | None = None
        self._threads: dict[Key, str | None] = {}  # (tid, thread start) → run id or None
        self._procs: dict[Key, str | None] = {}  # (pid, process start) → run id or None
        self.walks = 0  # how many lookups missed both caches (tests check the cache with it)

    def active(self) -> bool:
        """Whether any run of this store is registered now (one stat when nothing changed)."""
        return bool(self._refresh())

    def run_of(self, tid: int) -> str | None:
        """The run of the thread (or process) `tid`, or None: in no run, or unattributed (see the module
        docstring)."""
        if not self._refresh() or tid <= 0:
            return None
        me = proc_stat(tid, self.proc)
        if me is None:
            return None
        key = (tid, me.start_time)
        try:
            return self._threads[key]
        except KeyError:
            pass
        self.walks += 1
        pid = _tgid(tid, self.proc)
        if pid is None:
            return None
        start = me if pid == tid else proc_stat(pid, self.proc)
        if start is None:
            return None
        found, ok = self._walk(pid, start)
        if ok:
            _bounded(self._threads)[key] = found
        return found

    def _refresh(self) -> list[RegisteredRun]:
        runs = self.watcher.runs()
        if runs is not self._runs:
            self._runs = runs
            self._roots = {(r.pid, r.start_time): r.run_id for r in runs}
            self._threads.clear()
            self._procs.clear()
        return runs

    def _walk(self, pid: int, st: ProcStat) -> tuple[str | None, bool]:
        """(run id or None, whether the answer may be cached) for process `pid` whose stat is `st`."""
        chain: list[Key] = []
        found: str | None = None
        for _ in range(MAX_DEPTH):
            key = (pid, st.start_time)
            if key in self._roots:
                found = self._roots[key]
                break
            if key in self._procs:
                found = self._procs[key]
                break
            chain.append(key)
            if st.ppid <= 0:  # above init (or outside this pid namespace): nobody
                break
            parent = proc_stat(st.ppid, self.proc)
            if parent is None or parent.start_time > st.start_time:
                # the parent exited (and its pid may be reused) between the two reads: the child was
                # re-parented meanwhile; read it again rather than guess
                again = proc_stat(pid, self.proc)
                if again is None or again.start_time != st.start_time or again.ppid == st.ppid:
                    return None, False
                chain.pop()
                st = again
                continue
            pid, st = st.ppid, parent
        else:
            return None, False
        procs = _bounded(self._procs)
        for key in chain:
            procs[key] = found
        return found, True


def _bounded(cache: dict[Key, str | None]) -> dict[Key, str | None]:
    if len(cache) >= MAX_CACHED:
        cache.clear()
    return cache


def _tgid(tid: int, proc: str) -> int | None:
    """The thread group (process) of a thread, from /proc/<tid>/status."""
    try:
        fd = os.open(f"{proc}/{tid}/status", os.O_RDONLY)
    except OSError:
        return None
    try:
        text = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    at = text.find(b"\nTgid:")
    if at < 0:
        return None
    try:
        return int(text[at + 6 : text.index(b"\n", at + 1)])
    except ValueError:
        return None
