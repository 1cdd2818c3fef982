"""Caller → run (fs/attribution.py) over the run registry (core/run_registry.py), without a mount: real
registrations of real processes, and a fake procfs where a test needs pids to be reused on demand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from artfs.core import run_registry
from artfs.core.places import Places
from artfs.fs.attribution import Attribution

STORE = "/tmp/some/store"


@pytest.fixture
def places(tmp_path: Path) -> Places:
    return Places.under(str(tmp_path / "home"))


def _registered_root(places: Places, run_id: str, store: str = STORE) -> subprocess.Popen:
    """A real process registered as the root of `run_id`: it prints its pid once registered, then waits
    for stdin to close."""
    code = (
        "import sys; from artfs.core.places import Places; from artfs.core import run_registry as r\n"
        f"with r.register(Places.under({os.path.dirname(places.cache)!r}), {run_id!r}, {store!r}):\n"
        "    print('ready', flush=True); sys.stdin.read()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _end(proc: subprocess.Popen) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=30)


def test_this_process_its_threads_and_children_belong_to_the_run(places):
    attribution = Attribution(places, STORE)
    assert attribution.run_of(os.getpid()) is None and not attribution.active()
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        with run_registry.register(places, "run-a", STORE):
            assert attribution.active()
            assert attribution.run_of(os.getpid()) == "run-a"
            assert attribution.run_of(child.pid) == "run-a"  # started before: still below the root
            gone = subprocess.Popen([sys.executable, "-c", "pass"])
            gone.wait(timeout=30)
            assert attribution.run_of(gone.pid) is None  # exited and reaped: unattributed
            brief = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
            assert attribution.run_of(brief.pid) == "run-a"
            assert brief.stdin is not None
            brief.stdin.close()
            brief.wait(timeout=30)
            assert attribution.run_of(brief.pid) is None  # the kept answer died with the process
            seen: list[str | None] = []
            done = threading.Event()

            def worker() -> None:
                seen.append(attribution.run_of(threading.get_native_id()))
                done.set()

            threading.Thread(target=worker).start()
            assert done.wait(10) and seen == ["run-a"]
            assert attribution.run_of(os.getppid()) is None  # above the root: not in the run
            assert attribution.run_of(0) is None  # pid 0: the kernel, or another pid namespace
            assert attribution.run_of(2**22 + 12345) is None  # no such process: unattributed
            other = Attribution(places, "/tmp/another/store")
            assert other.run_of(os.getpid()) is None  # a run of another store
        assert attribution.run_of(os.getpid()) is None  # unregistered: the answer changes at once
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)


def test_two_runs_keep_their_own_processes(places):
    a, b = _registered_root(places, "run-a"), _registered_root(places, "run-b")
    try:
        attribution = Attribution(places, STORE)
        assert attribution.run_of(a.pid) == "run-a"
        assert attribution.run_of(b.pid) == "run-b"
        assert attribution.run_of(os.getpid()) is None
        assert sorted(r.run_id for r in run_registry.active(places)) == ["run-a", "run-b"]
    finally:
        _end(a)
        _end(b)
    assert run_registry.active(places) == []
    assert os.listdir(places.runs_registry) == []  # removed on exit


def test_stale_entries_are_ignored_and_removed(places):
    root = _registered_root(places, "run-killed")
    root.kill()  # SIGKILL: its entry stays behind
    root.wait(timeout=30)
    assert len(os.listdir(places.runs_registry)) == 1
    assert run_registry.active(places) == []
    assert os.listdir(places.runs_registry) == []
    # a live pid whose start time differs (the pid was reused): stale too
    me = run_registry.proc_stat(os.getpid())
    assert me is not None
    entry = {"run_id": "run-old", "store_uri": STORE, "pid": os.getpid(), "start_time": me.start_time - 1}
    path = Path(places.runs_registry) / f"{os.getpid()}-{me.start_time - 1}.json"
    path.write_text(json.dumps(entry))
    assert run_registry.active(places) == [] and not path.exists()


def test_a_forked_child_unwinding_the_context_keeps_the_registration(places):
    ctx = run_registry.register(places, "run-f", STORE)
    ctx.__enter__()
    try:
        pid = os.fork()
        if pid == 0:  # e.g. a multiprocessing worker of a process that called artfs.init()
            ctx.__exit__(None, None, None)
            os._exit(0)
        os.waitpid(pid, 0)
        assert [r.run_id for r in run_registry.active(places)] == ["run-f"]
    finally:
        ctx.__exit__(None, None, None)
    assert run_registry.active(places) == []


def test_store_uris_are_matched_in_one_spelling():
    assert run_registry.canonical_store_uri("file:///tmp/some/./store") == STORE
    assert run_registry.canonical_store_uri("/tmp/some/store/") == STORE
    assert run_registry.canonical_store_uri("s3://bucket/prefix/") == "s3://bucket/prefix"


def test_the_watcher_sees_new_registrations(places):
    watcher = run_registry.Watcher(places, STORE)
    assert watcher.runs() == []
    with run_registry.register(places, "run-1", STORE):
        assert [r.run_id for r in watcher.runs()] == ["run-1"]
        with run_registry.register(places, "run-1", STORE):  # nested: a no-op, the outer one stays
            pass
        first = watcher.runs()
        time.sleep(0.1)  # past the settle time of the directory's mtime
        assert watcher.runs() is watcher.runs()  # settled: no re-listing, the same list
        assert [r.run_id for r in first] == ["run-1"]
    assert watcher.runs() == []


# --- a fake procfs: pids reused at will ---------------------------------------------------------------


class FakeProc:
    """/proc/<pid>/stat and /status as attribution reads them, for processes the test makes up."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def add(self, pid: int, ppid: int, start: int, tgid: int | None = None) -> None:
        d = self.root / str(pid)
        d.mkdir(parents=True, exist_ok=True)
        rest = ["S", str(ppid)] + ["0"] * 17 + [str(start)] + ["0"] * 30
        (d / "stat").write_text(f"{pid} (a (weird) name) " + " ".join(rest) + "\n")
        (d / "status").write_text(f"Name:\tx\nTgid:\t{tgid or pid}\nPid:\t{pid}\nPPid:\t{ppid}\n")
        (d / "oom_score_adj").write_text("0\n")

    def remove(self, pid: int) -> None:
        for f in ("stat", "status", "oom_score_adj"):
            (self.root / str(pid) / f).unlink()
        (self.root / str(pid)).rmdir()


@pytest.fixture
def fake(tmp_path: Path, places: Places) -> Iterator[tuple[FakeProc, Attribution, int]]:
    """A registered root (a real process, so the registry finds it alive) mirrored into a fake procfs."""
    root = _registered_root(places, "run-r")
    st = run_registry.proc_stat(root.pid)
    assert st is not None
    proc = FakeProc(tmp_path / "proc")
    proc.add(1, 0, 1)
    proc.add(root.pid, 1, st.start_time)
    try:
        yield proc, Attribution(places, STORE, proc=str(proc.root)), st.start_time  # children start later
    finally:
        _end(root)


def test_a_reused_pid_is_not_confused(fake):
    proc, attribution, t = fake
    root = next(iter(attribution.watcher.runs())).pid
    proc.add(500, root, t + 1000)
    proc.add(501, 500, t + 1001)
    assert attribution.run_of(501) == "run-r"  # 500 is now known as a process of the run
    # 500 exits; an unrelated process gets its pid (another start time, another parent) and a child
    proc.remove(500)
    proc.add(500, 1, t + 5000)
    proc.add(502, 500, t + 5001)
    assert attribution.run_of(502) is None
    proc.remove(502)
    assert attribution.run_of(502) is None  # gone: unattributed


def test_threads_map_to_their_process_and_lookups_are_cached(fake):
    proc, attribution, t = fake
    root = next(iter(attribution.watcher.runs())).pid
    proc.add(600, root, t + 1000)
    proc.add(700, 600, t + 1100)  # a worker of the loader, under 600
    proc.add(701, 600, t + 1150, tgid=700)  # a thread of 700 (a thread's stat shows its process's parent)
    for _ in range(1000):
        assert attribution.run_of(700) == "run-r"
        assert attribution.run_of(701) == "run-r"
    assert attribution.walks == 2  # one walk per thread, not per open
    proc.add(800, 600, t + 1200)
    assert attribution.run_of(800) == "run-r"
    assert attribution.walks == 3  # and 600's answer came from the cache: no second walk of the parents


def test_a_child_reparented_to_the_root_stays_in_the_run(fake):
    proc, attribution, t = fake
    root = next(iter(attribution.watcher.runs())).pid
    proc.add(900, root, t + 1000)
    proc.add(901, 900, t + 1001)
    assert attribution.run_of(901) == "run-r"
    proc.remove(900)  # the middle process exits: the subreaper root adopts 901
    proc.add(901, root, t + 1001)
    fresh = Attribution(attribution.watcher.places, STORE, proc=attribution.proc)
    assert fresh.run_of(901) == "run-r"
