"""The runs active on this machine: which process is the root of which run, for which store.

`artfs run` registers itself (the root of the run's process tree) before it starts CMD; every mount daemon of
the same store on this machine reads the registry to attribute opens to runs (artfs/fs/attribution.py).

    <places.runs_registry>/<pid>-<start time>-<run id>.json    {"run_id", "store_uri", "pid", "start_time", "boot_id"}

A process is named by its pid AND its start time (/proc/<pid>/stat field 22, clock ticks since boot): a
pid is reused, a (pid, start time) pair is not. An entry whose process is gone, or whose pid now belongs to
a process with another start time (the root was SIGKILLed, no `finally` ran), is stale: `active` ignores
and removes it. Entries are written atomically (a temporary file renamed into place), so a reader sees a
whole entry or none; the directory's mtime changes with every registration and removal, which is how a
mount daemon notices them for the cost of one stat (`Watcher`).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec

from artfs.core.places import Places

_SUFFIX = ".json"
_SAFE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:+-]{0,127}$")  # a run id, safe in a file name


@dataclass(frozen=True)
class RegisteredRun:
    """One registered root process: the run it roots, in which store."""

    run_id: str
    store_uri: str
    pid: int
    start_time: int


class _Entry(msgspec.Struct, frozen=True):
    run_id: str
    store_uri: str
    pid: int
    start_time: int
    boot_id: str = ""  # start times count from boot: an entry left in <state> by an earlier boot is stale


def _boot_id() -> str:
    return (read_proc("/proc/sys/kernel/random/boot_id") or b"").decode().strip()


@dataclass(frozen=True)
class ProcStat:
    """What /proc/<pid>/stat says about a process that attribution needs."""

    ppid: int
    start_time: int


def read_proc(name: str, dir_fd: int | None = None) -> bytes | None:
    """The first 4 KiB of a /proc file (`name` relative to `dir_fd`, an open /proc/<pid> directory, when
    given), or None when it cannot be read (the task gone, or not visible from here). os.open/os.read:
    ~13 µs, against ~21 µs through a Python file object; attribution reads these on the trio loop."""
    try:
        fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        return os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)


def proc_stat(pid: int, proc: str = "/proc", dir_fd: int | None = None) -> ProcStat | None:
    """The parent and the start time of `pid`, or None when this process cannot see it (gone, another pid
    namespace, pid 0). With `dir_fd` (an open /proc/<pid> directory), read through it: it names the task it
    was opened on, whatever the pid has become since. The command name (field 2) may hold spaces and
    parentheses: fields are counted from the last ')'."""
    if pid <= 0:
        return None
    text = read_proc("stat", dir_fd) if dir_fd is not None else read_proc(f"{proc}/{pid}/stat")
    if text is None:
        return None
    rest = text[text.rfind(b")") + 2 :].split(maxsplit=20)
    try:
        return ProcStat(ppid=int(rest[1]), start_time=int(rest[19]))  # fields 4 and 22
    except (IndexError, ValueError):
        return None


def canonical_store_uri(uri: str) -> str:
    """The form a store is registered and matched under, the same as the opened store's `uri`: a directory
    store by its absolute path, an S3 store without a trailing slash."""
    if uri.startswith("s3://"):
        return uri.rstrip("/")
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if "://" in uri:
        return uri
    return os.path.abspath(os.path.expanduser(uri))


def register(places: Places, run_id: str, store_uri: str) -> contextlib.AbstractContextManager[None]:
    """Register THIS process as the root of run `run_id` in store `store_uri` for as long as the context
    lasts. Its descendants (forked or exec'd, at any depth) are the run's processes to every mount daemon of
    that store on this machine."""
    return _registered(places, run_id, canonical_store_uri(store_uri))


@contextlib.contextmanager
def _registered(places: Places, run_id: str, store_uri: str) -> Iterator[None]:
    if not _SAFE_ID.match(run_id):
        raise ValueError(f"invalid run id {run_id!r} for the run registry")
    pid = os.getpid()
    me = proc_stat(pid)
    if me is None:  # no /proc: nothing could attribute anything to this run, so register nothing
        yield
        return
    directory = places.runs_registry
    os.makedirs(directory, mode=0o700, exist_ok=True)
    stem = f"{pid}-{me.start_time}-{run_id}"
    path = os.path.join(directory, stem + _SUFFIX)
    if os.path.exists(path):  # registered already (a nested register): the outer one removes it
        yield
        return
    tmp = os.path.join(directory, f".{stem}.tmp")
    entry = _Entry(run_id=run_id, store_uri=store_uri, pid=pid, start_time=me.start_time, boot_id=_boot_id())
    data = msgspec.json.encode(entry)
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    try:
        yield
    finally:
        if os.getpid() == pid:  # not in a forked child that unwinds its copy of this context
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def active(places: Places) -> list[RegisteredRun]:
    """The registered runs whose root process is still the one that registered. Stale entries (the process
    gone, or its pid reused by another process) are removed, and so are temporary files left by a crash."""
    directory = places.runs_registry
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    runs = []
    boot = _boot_id()
    for name in names:
        path = os.path.join(directory, name)
        if not name.endswith(_SUFFIX):
            if name.endswith(".tmp"):
                _remove_if_dead(path, name[1:-4])
            continue
        try:
            with open(path, "rb") as f:
                entry = msgspec.json.decode(f.read(), type=_Entry)
        except FileNotFoundError:
            continue  # removed since the listing
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            _remove_if_dead(path, name[: -len(_SUFFIX)])
            continue
        now = proc_stat(entry.pid)
        if now is None or now.start_time != entry.start_time or entry.boot_id != boot:
            with contextlib.suppress(OSError):
                os.unlink(path)
            continue
        runs.append(RegisteredRun(entry.run_id, entry.store_uri, entry.pid, entry.start_time))
    return runs


def _remove_if_dead(path: str, stem: str) -> None:
    """A file named `<pid>-<start time>-…` that is unreadable or half-written is removed once its writer is
    gone (while the writer lives it may be about to finish it)."""
    pid, _, rest = stem.partition("-")
    start = rest.partition("-")[0]
    if not (pid.isdigit() and start.isdigit()):
        return
    now = proc_stat(int(pid))
    if now is None or now.start_time != int(start):
        with contextlib.suppress(OSError):
            os.unlink(path)


class Watcher:
    """The active runs of one store, re-read only when the registry directory changed: with no run
    registered, a lookup costs one stat.

    A directory's mtime has the granularity of the kernel's coarse clock (a few ms on ext4), so two changes
    within one tick can leave the same mtime: a listing taken less than `_SETTLE` seconds after the last
    change is not trusted, and the next lookup lists again."""

    _SETTLE = 0.05
    _RECHECK = 1.0  # seconds: a root killed with SIGKILL removes nothing; its entry is found stale this late

    def __init__(self, places: Places, store_uri: str) -> None:
        self.places = places
        self.path = places.runs_registry
        self.store_uri = canonical_store_uri(store_uri)
        self._seen: tuple[int, int] | None = None  # (st_mtime_ns, st_ino) of the listing below
        self._runs: list[RegisteredRun] = []
        self._listed = 0.0  # monotonic time of the listing

    def runs(self) -> list[RegisteredRun]:
        """This store's active runs, as of now. The list object changes only when its contents may have."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._runs:
                self._runs = []
            self._seen = None
            return self._runs
        key = (st.st_mtime_ns, st.st_ino)
        if key != self._seen or (self._runs and time.monotonic() - self._listed > self._RECHECK):
            self._listed = time.monotonic()
            runs = [r for r in active(self.places) if r.store_uri == self.store_uri]
            if runs != self._runs:
                self._runs = runs
            settled = time.time_ns() - st.st_mtime_ns > self._SETTLE * 1e9
            self._seen = key if settled else None
        return self._runs
