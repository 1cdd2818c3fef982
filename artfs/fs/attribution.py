"""Which run a FUSE caller belongs to: the calling thread → its process → up the process tree to a run's
registered root (core/run_registry.py), or to nobody.

- **Threads**: FUSE reports the calling thread's id; /proc/<tid>/status names its thread group (process).
- **Processes** are keyed by (pid, start time from /proc/<pid>/stat), never by pid alone: a pid is reused,
  the pair is not.
- **The walk** goes up /proc/<pid>/stat's ppid until a registered root of this mount's store (the run),
  or past init (nobody). `artfs run` is a child subreaper, so a process whose parent exits (a daemonizing
  worker) is re-parented to it and stays in the run's tree.
- **Unattributed**: pid 0 (the kernel, or a caller in another pid namespace) and a process this daemon
  cannot see in its /proc (gone already) belong to no run; nothing is guessed.
- **Cost**: with no run registered, a lookup is one stat of the registry directory (`Watcher`). A thread
  seen before costs one 2 µs read more: its answer is kept with an open fd of one of its /proc files,
  which pins the task (once the task is gone, reads fail with ESRCH, whatever the tid has become since),
  so a DataLoader opening 100,000 files walks /proc once per worker thread, not per file, and a reused
  tid is never taken for the old one. The caches are dropped whenever the set of registered runs
  changes, since a new root changes the answer for processes already seen.

Runs on the trio loop: every call reads only /proc (procfs answers from memory, never blocks on a disk).
"""

from __future__ import annotations

import os

from artfs.core.places import Places
from artfs.core.run_registry import ProcStat, RegisteredRun, Watcher, proc_stat, read_proc

MAX_DEPTH = 4096  # a process tree deeper than this is a loop seen through a race: give up
MAX_THREADS = 256  # threads whose answers are kept, each with an open fd (the oldest goes first)
MAX_PROCS = 1 << 16  # processes whose answers are kept before that cache is dropped whole
ALIVE = "oom_score_adj"  # the smallest /proc/<tid> file: reading it says whether the task still exists

Key = tuple[int, int]  # (pid, start time)


class Attribution:
    """Caller → run id for one mount (one store). `proc` is the procfs root (tests use the real one)."""

    def __init__(self, places: Places, store_uri: str, proc: str = "/proc") -> None:
        self.watcher = Watcher(places, store_uri)
        self.proc = proc
        self._roots: dict[Key, str] = {}
        self._runs: list[RegisteredRun] | None = None
        self._threads: dict[int, tuple[int, str | None]] = {}  # tid → (fd pinning the task, run id or None)
        self._procs: dict[Key, str | None] = {}  # (pid, start time) → run id or None
        self.walks = 0  # lookups that missed the thread cache (tests check the cache with it)

    def active(self) -> bool:
        """Whether any run of this store is registered now (one stat when nothing changed)."""
        return bool(self._refresh())

    def run_of(self, tid: int) -> str | None:
        """The run of the thread (or process) `tid`, or None: in no run, or unattributed (see the module
        docstring)."""
        if not self._refresh() or tid <= 0:
            return None
        known = self._threads.get(tid)
        if known is not None:
            try:
                os.pread(known[0], 8, 0)
                return known[1]  # the task is alive, so `tid` is still it
            except OSError:
                del self._threads[tid]
                os.close(known[0])
        return self._lookup(tid)

    def close(self) -> None:
        for fd, _ in self._threads.values():
            os.close(fd)
        self._threads.clear()

    def _refresh(self) -> list[RegisteredRun]:
        runs = self.watcher.runs()
        if runs is not self._runs:
            self._runs = runs
            self._roots = {(r.pid, r.start_time): r.run_id for r in runs}
            self.close()
            self._procs.clear()
        return runs

    def _lookup(self, tid: int) -> str | None:
        """Walk from `tid`, and keep the answer with an fd pinning the task (both read through one open
        /proc/<tid> directory, so they are of the same task even if it ends meanwhile)."""
        self.walks += 1
        try:
            task = os.open(f"{self.proc}/{tid}", os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return None  # gone, or not visible from here
        try:
            me = proc_stat(tid, dir_fd=task)
            pid = _tgid(task)
            if me is None or pid is None:
                return None
            start = me if pid == tid else proc_stat(pid, self.proc)
            if start is None:
                return None
            found, ok = self._walk(pid, start)
            if ok:
                self._keep(tid, task, found)
            return found
        finally:
            os.close(task)

    def _keep(self, tid: int, task: int, found: str | None) -> None:
        try:
            fd = os.open(ALIVE, os.O_RDONLY, dir_fd=task)
        except OSError:
            return  # out of fds, or gone: answered, not kept
        if len(self._threads) >= MAX_THREADS:
            old = next(iter(self._threads))
            os.close(self._threads.pop(old)[0])
        self._threads[tid] = (fd, found)

    def _walk(self, pid: int, st: ProcStat) -> tuple[str | None, bool]:
        """(run id or None, whether the answer may be kept) for process `pid` whose stat is `st`."""
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
        if len(self._procs) + len(chain) > MAX_PROCS:
            self._procs.clear()
        for key in chain:
            self._procs[key] = found
        return found, True


def _tgid(task: int) -> int | None:
    """The thread group (process) of the task whose /proc directory is open as `task`."""
    text = read_proc("status", task)
    if text is None:
        return None
    at = text.find(b"\nTgid:")
    if at < 0:
        return None
    try:
        return int(text[at + 6 : text.index(b"\n", at + 1)])
    except ValueError:
        return None
