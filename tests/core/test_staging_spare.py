"""Data files made ahead of need (core/staging/spare.py) and attribute changes that change nothing: a
create takes an unnamed spare file and links it into place, which is exactly the empty data file it
would have made itself; a file that has none ready makes its own; nothing is left behind by either;
and a chmod or chown to what a file already has moves its ctime without a transaction."""

from __future__ import annotations

import errno
import os
import time

import pytest

from artfs.core.staging import StagingArea
from artfs.core.staging import spare as spare_module
from artfs.core.staging.spare import SpareFiles

ROOT = 1
pytestmark = pytest.mark.usefixtures("patient_quick")


def _ready(spares: SpareFiles, n: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while len(spares._ready) < n:
        assert time.monotonic() < deadline, "no spare files made"
        time.sleep(0.01)


def test_a_spare_is_an_empty_file_linked_where_asked(tmp_path):
    spares = SpareFiles(str(tmp_path), size=4)
    try:
        assert spares.take(str(tmp_path / "first")) is None  # none yet: the first take starts the thread
        assert not (tmp_path / "first").exists()
        _ready(spares, 4)
        assert os.listdir(tmp_path) == []  # unnamed until taken
        fd = spares.take(str(tmp_path / "7"))
        assert fd is not None
        try:
            st = os.fstat(fd)
            assert st.st_size == 0 and st.st_nlink == 1 and st.st_mode & 0o777 == 0o600
            assert os.stat(tmp_path / "7").st_ino == st.st_ino
            os.pwrite(fd, b"bytes", 0)
            assert (tmp_path / "7").read_bytes() == b"bytes"
        finally:
            os.close(fd)
        _ready(spares, 3)  # refilled from half, not after every take
    finally:
        spares.close()
    assert os.listdir(tmp_path) == ["7"]  # closing drops the unnamed rest


def test_a_taken_name_or_a_filesystem_without_spares_falls_back(tmp_path, monkeypatch):
    (tmp_path / "taken").write_bytes(b"old")
    spares = SpareFiles(str(tmp_path), size=2)
    try:
        spares.take(str(tmp_path / "x"))
        _ready(spares, 2)
        assert spares.take(str(tmp_path / "taken")) is None  # EEXIST: the caller makes (truncates) it
        assert (tmp_path / "taken").read_bytes() == b"old"
    finally:
        spares.close()

    def no_tmpfile() -> int:
        raise OSError(errno.EOPNOTSUPP, "no O_TMPFILE here")

    spares = SpareFiles(str(tmp_path), size=2)
    monkeypatch.setattr(spares, "_make", no_tmpfile)
    try:
        for _ in range(3):
            assert spares.take(str(tmp_path / "y")) is None
            time.sleep(0.05)
        assert spares._closed  # given up for good, not retried at every create
    finally:
        spares.close()


def test_without_proc_no_spare_is_made(tmp_path, monkeypatch):
    """No /proc/self/fd: a spare could never be linked, so the thread gives up at once rather than making
    files that every create would then fail to link and throw away."""
    monkeypatch.setattr(spare_module, "OWN_FDS", str(tmp_path / "no-proc"))
    made = []
    spares = SpareFiles(str(tmp_path), size=2)
    real = spares._make
    monkeypatch.setattr(spares, "_make", lambda: made.append(1) or real())
    try:
        assert spares.take(str(tmp_path / "a")) is None
        spares._thread.join(10)
        assert not spares._thread.is_alive() and spares._closed and made == []
        assert spares.take(str(tmp_path / "b")) is None
    finally:
        spares.close()
    assert os.listdir(tmp_path) == []


def test_creates_take_spares_and_stage_the_same_files(lrepo):
    with StagingArea.open(lrepo, "animals") as area:
        spares = area._files._data_files._spares
        assert spares is not None and spares._thread is None  # opening an area makes none
        first = area.quick(area.create, ROOT, "f0", 0o644, (1000, 1000))  # makes its own, starts the thread
        _ready(spares, spare_module.SPARES // 2)
        files = [first] + [area.quick(area.create, ROOT, f"f{i}", 0o640, None) for i in range(1, 20)]
        for f in files:
            node = area.getattr(f.id)
            assert node.size == 0 and node.mtime_ns == node.atime_ns == f.mtime_ns <= node.ctime_ns  # the create's
        for i, f in enumerate(files):
            assert area.quick(area.write, f.id, 0, b"%d" % i * 100) == len(b"%d" % i) * 100
        data = area._files._data_files.root
        assert sorted(os.listdir(data), key=int) == [str(f.id) for f in files]
        for i, f in enumerate(files):
            st = os.stat(os.path.join(data, str(f.id)))
            assert st.st_nlink == 1 and st.st_mode & 0o777 == 0o600
            assert area.read(f.id, 0, 1000) == b"%d" % i * 100
        area.seal()
        assert os.listdir(area._files._data_files.root) == []  # a new generation: nothing carried over
    with StagingArea.open(lrepo, "animals") as area:
        assert sorted(n for n, _ in area.listdir(ROOT)) == sorted(f"f{i}" for i in range(20))


def test_a_chmod_or_chown_to_the_same_moves_ctime_without_a_transaction(lrepo):
    with StagingArea.open(lrepo, "animals") as area:
        f = area.create(ROOT, "a.txt", 0o644, (1000, 1000))
        area.write(f.id, 0, b"a")
        db = area._nodes.db
        before, changes = area.getattr(f.id), db.total_changes
        time.sleep(0.05)  # past the disk clock's tick
        same = area.quick(area.setattr, f.id, 0o644, None, None, None, 1000, 1000)
        assert db.total_changes == changes
        assert (same.mode, same.uid, same.gid, same.mtime_ns) == (before.mode, 1000, 1000, before.mtime_ns)
        assert same.ctime_ns > before.ctime_ns
        changed = area.quick(area.setattr, f.id, 0o600, None, None, None, 1000, 1001)
        assert db.total_changes > changes and (changed.mode, changed.gid) == (0o600, 1001)
    with StagingArea.open(lrepo, "animals") as area:
        node = area.lookup(ROOT, "a.txt")
        assert node is not None and (node.mode, node.uid, node.gid) == (0o600, 1000, 1001)
