"""Small changes of a staging area served by `StagingArea.quick` (an event loop's fast path), the row
cache behind them, and WAL checkpoints moved out of the commits: what is quick runs at once and changes
exactly what a thread would; what is not raises WouldBlock having changed nothing; a remembered row is
always the row in the database; and the database gets checkpointed by its own thread."""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import time

import pytest

from artfs.core.commit import commit_tree
from artfs.core.staging import StagingArea, WouldBlock
from artfs.core.staging import area as area_module
from tests.support.trees import write_tree

ROOT = 1
pytestmark = pytest.mark.usefixtures("patient_quick")


@pytest.fixture
def area(lrepo, tmp_path):
    """`animals` staged over a version with a file and a (lazy) directory."""
    src = tmp_path / "src"
    write_tree(src, {"readme.txt": b"hello", "images/cat.png": b"cat" * 500})
    commit_tree(lrepo, str(src), "animals")
    a = StagingArea.open(lrepo, "animals")
    yield a
    a.close()


def _fresh(area: StagingArea, node_id: int):
    """The node's attributes read from the database, not from remembered rows."""
    area._nodes._rows.clear()
    return area.getattr(node_id)


def test_small_changes_run_quick_and_equal_what_the_database_says(area):
    assert area.lookup(ROOT, "readme.txt") is not None  # the root materialized: creating in it is quick
    f = area.quick(area.create, ROOT, "new.bin", 0o640, (1000, 1000))
    assert area.quick(area.write, f.id, 0, b"x" * 5000) == 5000
    d = area.quick(area.mkdir, ROOT, "out", 0o750, None)
    area.quick(area.symlink, d.id, "link", "../new.bin", None)
    area.quick(area.link, f.id, ROOT, "twin.bin")
    with pytest.raises(WouldBlock):  # into a directory made in staging: its tree becomes rows first (upper.py)
        area.quick(area.link, f.id, d.id, "twin.bin")
    area.quick(area.setattr, f.id, 0o600, None, None, None, 1001, 1002)  # chmod + chown: one transaction
    area.quick(area.setattr, f.id, None, None, 5_000_000_000, None)  # the writeback cache's mtime: no row
    area.quick(area.setattr, f.id, None, None, 6_000_000_000, 7_000_000_000)  # utimens
    link = area.lookup(d.id, "link")
    assert link is not None and area.readlink(link.id) == "../new.bin"
    for node_id in (f.id, d.id, link.id, ROOT):
        assert area.getattr(node_id) == _fresh(area, node_id)
    now = area.getattr(f.id)
    assert (now.mode, now.uid, now.gid, now.size, now.nlink) == (0o600, 1001, 1002, 5000, 2)
    assert (now.mtime_ns, now.atime_ns) == (6_000_000_000, 7_000_000_000)
    assert area.read(f.id, 0, 10) == b"x" * 10
    # the parent a create touched: as the database has it (mtime moved, atime pinned)
    assert area.getattr(d.id) == _fresh(area, d.id)
    assert area.getattr(ROOT) == _fresh(area, ROOT)


def test_what_is_not_quick_raises_would_block_and_changes_nothing(area):
    images = area.lookup(ROOT, "images")  # materializes the root, not images/
    assert images is not None
    before = area.status()
    with pytest.raises(WouldBlock):
        area.quick(area.create, images.id, "dog.png", 0o644, None)  # images/ would be materialized
    readme = area.lookup(ROOT, "readme.txt")
    assert readme is not None
    with pytest.raises(WouldBlock):
        area.quick(area.write, readme.id, 0, b"HELLO")  # a base file: a copy-up first
    with pytest.raises(WouldBlock):
        area.quick(area.setattr, readme.id, None, 2)  # truncate
    assert area.status() == before and area.read(readme.id, 0, 100) == b"hello"
    assert area.create(images.id, "dog.png").id  # in a thread's call it works
    assert area.write(readme.id, 0, b"HELLO") == 5


def test_quick_never_waits_for_the_lock(area):
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with area._nodes.lock:
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    try:
        held.wait(10)
        t0 = time.monotonic()
        with pytest.raises(WouldBlock):
            area.quick(area.create, ROOT, "x", 0o644, None)
        assert time.monotonic() - t0 < 5
    finally:
        release.set()
        t.join()
    assert area.lookup(ROOT, "x") is None


def test_a_slow_quick_call_sends_the_next_ones_to_threads_for_a_while(area, monkeypatch):
    monkeypatch.setattr(area_module, "QUICK_SLOW", 0.01)
    monkeypatch.setattr(area_module, "QUICK_BACKOFF", 0.3)
    assert area.quick(lambda: time.sleep(0.02) or 1) == 1  # answered, but slow
    with pytest.raises(WouldBlock):
        area.quick(area.getattr, ROOT)
    time.sleep(0.35)
    assert area.quick(area.getattr, ROOT).id == ROOT


def test_a_taken_name_is_eexist_and_a_failed_create_leaves_no_trace(area):
    f = area.create(ROOT, "a.txt")
    area.link(f.id, ROOT, "b.txt")
    data_files = sorted(os.listdir(area._files._data_files.root))
    for name in ("a.txt", "b.txt", "readme.txt", "images"):
        with pytest.raises(OSError) as info:
            area.quick(area.create, ROOT, name, 0o644, None)
        assert info.value.errno == errno.EEXIST
        with pytest.raises(OSError) as info:
            area.mkdir(ROOT, name)
        assert info.value.errno == errno.EEXIST
    with pytest.raises(OSError) as info:
        area.symlink(ROOT, "a.txt", "readme.txt")
    assert info.value.errno == errno.EEXIST
    assert sorted(n for n, _ in area.listdir(ROOT)) == ["a.txt", "b.txt", "images", "readme.txt"]
    assert sorted(os.listdir(area._files._data_files.root)) == data_files  # no stray data file


def test_remembered_rows_follow_every_kind_of_change(area):
    """After each change, every node's attributes equal the database's (a stale remembered row would show)."""
    d = area.mkdir(ROOT, "d")
    f = area.create(d.id, "f")
    g = area.create(ROOT, "g")
    area.write(f.id, 0, b"12345")
    ids = [ROOT, d.id, f.id, g.id]
    steps = [
        lambda: area.rename(d.id, "f", ROOT, "f2"),
        lambda: area.link(g.id, d.id, "g2"),
        lambda: area.unlink(ROOT, "g"),
        lambda: area.data_digest(f.id),  # remembers a digest in the row...
        lambda: area.write(f.id, 5, b"6"),  # ...that this write forgets
        lambda: area.setattr(f.id, mode=0o700),
        lambda: area.truncate(f.id, 2),
        lambda: area.rename(ROOT, "f2", d.id, "g2", 2),  # RENAME_EXCHANGE
        lambda: area.unlink(ROOT, "f2"),
    ]
    for step in steps:
        for i in ids:  # read everything first, so rows are remembered before the change
            area.getattr(i)
        step()
        for i in ids:
            assert area.getattr(i) == _fresh(area, i), step
    assert [n for n, _ in area.listdir(d.id)] == ["g2"]


def test_commits_do_not_checkpoint_a_thread_does(area):
    db_path = area._layout.db_path(area.generation)
    assert area._nodes.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    size0 = os.path.getsize(db_path)
    d = area.lookup(ROOT, "images")  # of the version: its creates are rows (a directory made here: upper.py)
    assert d is not None
    for i in range(700):  # past CHECKPOINT_EVERY a few times
        area.create(d.id, f"f{i:04d}")
    deadline = time.monotonic() + 30
    while os.path.getsize(db_path) <= size0:  # pages copied back from the WAL
        assert time.monotonic() < deadline, "no checkpoint ran"
        time.sleep(0.05)
    area.close()
    check = sqlite3.connect(db_path)  # whatever is where after close(): every row is there
    try:
        assert check.execute("SELECT count(*) FROM nodes WHERE parent = ?", (d.id,)).fetchone()[0] == 701
    finally:
        check.close()


def test_a_thread_truncating_while_the_loop_is_in_a_quick_call_waits_for_it(area):
    """The quick flag is the lock holder's: a worker thread's truncate (not quick) that starts while the
    loop is inside a quick call must wait for the lock and run, not take the loop's flag as its own
    (it once raised WouldBlock in the thread: EIO for a truncate, seen during `git clone` into staging)."""
    f = area.create(ROOT, "t.bin")
    area.write(f.id, 0, b"x" * 100)
    inside, release = threading.Event(), threading.Event()

    def held() -> None:
        inside.set()
        assert release.wait(10)

    loop = threading.Thread(target=area.quick, args=(held,))
    loop.start()
    assert inside.wait(10)
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(area.setattr(f.id, size=10)))
    worker.start()
    time.sleep(0.1)  # the worker is past its check and waiting for the lock
    release.set()
    loop.join(10)
    worker.join(10)
    assert [n.size for n in result] == [10]
    assert area.getattr(f.id).size == 10


def test_the_wal_starts_over_during_a_long_burst_of_changes(area):
    """Checkpoints run on the writer's connection under the area lock, so each copies every frame and
    the next commit starts the WAL over: a long burst of creates leaves a WAL of a few checkpoints'
    worth of frames, not one that grows with the burst (run beside the writer, a checkpoint never
    caught up: `tar x` of 5,000 files left a 126 MB WAL)."""
    wal = area._layout.db_path(area.generation) + "-wal"
    d = area.mkdir(ROOT, "burst")
    for i in range(3000):  # ~12 checkpoints' worth of commits, back to back
        area.create(d.id, f"f{i:05d}")
    assert os.path.getsize(wal) < 16 << 20, os.path.getsize(wal)  # measured: ~4.4 MB (4 KiB pages); 50 MB before


def test_a_create_writes_small_pages_into_the_wal(area):
    """A commit writes each page it changed whole into the WAL; a new generation's 1 KiB pages (not 4 KiB)
    keep a create's ~4 changed pages to ~4 KiB of WAL (measured: 15.6 KB each with 4 KiB pages)."""
    db = area._nodes.db
    assert db.execute("PRAGMA page_size").fetchone()[0] == 1024
    d = area.mkdir(ROOT, "pages")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()  # the WAL starts over empty
    wal = area._layout.db_path(area.generation) + "-wal"
    for i in range(200):  # fewer commits than a checkpoint waits for
        area.create(d.id, f"f{i:05d}")
    assert os.path.getsize(wal) / 200 < 8 << 10, os.path.getsize(wal)
