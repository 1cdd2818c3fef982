"""Seal while files are still being written, through a real mount: a file is sealed whole or not at all,
a seal waits for writers to close (new writers get EBUSY meanwhile) or refuses naming the open files, and
no writer ever loses data or sees ENOENT because of a seal."""

from __future__ import annotations

import errno
import json
import os
import random
import threading
import time

import pytest

from tests.support.cli import run_artfs, seal
from tests.support.syscalls import errno_of

KiB, MiB = 1 << 10, 1 << 20


def _slow_writer(path, data: bytes, piece: int = 64 * KiB, pause: float = 0.01) -> threading.Thread:
    def write() -> None:
        with open(path, "wb") as f:
            for off in range(0, len(data), piece):
                f.write(data[off : off + piece])
                f.flush()
                time.sleep(pause)

    t = threading.Thread(target=write)
    t.start()
    return t


def test_seal_waits_for_a_writer_and_publishes_the_whole_file(mount_artfs, small_store) -> None:
    store, _ = small_store
    m = mount_artfs(store)
    st, art = m.path / "animals" / "staging", m.path / "animals"
    data = random.Random(1).randbytes(2 * MiB)  # 32 writes of 64 KiB, ~0.5 s or more
    for _ in range(3):
        writer = _slow_writer(st / "growing.bin", data)
        time.sleep(0.05)
        res = seal(st, "-m", "while writing")
        writer.join()
        assert (art / f"v{res['version']}" / "growing.bin").read_bytes() == data  # whole, never a prefix
        (st / "growing.bin").unlink()
        seal(st, "-m", "removed")


def test_seal_refuses_while_a_file_stays_open_and_the_writer_keeps_working(mount_artfs, small_store) -> None:
    store, _ = small_store
    m = mount_artfs(store)
    st, art = m.path / "animals" / "staging", m.path / "animals"
    f = open(st / "open.bin", "wb")  # noqa: SIM115 - held open across the seal on purpose
    try:
        f.write(b"a" * 1000)
        f.flush()
        res = run_artfs("seal", str(st), "--wait", "0.5", check=False)
        assert res.returncode == 1 and res.stderr.strip().count("\n") == 0
        assert "still open for writing" in res.stderr and "open.bin" in res.stderr, res.stderr
        assert sorted(os.listdir(art)) == ["latest", "staging", "v0"]  # nothing published
        f.write(b"b" * 1000)  # the refused seal took nothing from the writer
        f.flush()
    finally:
        f.close()
    assert (st / "open.bin").read_bytes() == b"a" * 1000 + b"b" * 1000
    res = seal(st, "-m", "closed now")
    assert (art / f"v{res['version']}" / "open.bin").read_bytes() == b"a" * 1000 + b"b" * 1000


def test_new_writers_get_ebusy_while_a_seal_waits(mount_artfs, small_store) -> None:
    store, _ = small_store
    m = mount_artfs(store)
    st = m.path / "animals" / "staging"
    holder = open(st / "held.bin", "wb")  # noqa: SIM115 - keeps the seal waiting
    try:
        sealing = threading.Thread(target=run_artfs, args=("seal", str(st), "--wait", "20"),
                                   kwargs={"check": False})
        sealing.start()
        deadline = time.monotonic() + 15  # the seal's process starts, then waits for `holder`
        while errno_of(lambda: os.close(os.open(st / "other.bin", os.O_WRONLY | os.O_CREAT))) != errno.EBUSY:
            assert time.monotonic() < deadline, "new writers never got EBUSY while the seal waited"
            time.sleep(0.05)
        assert (st / "README.md").read_text() == "# animals\n"  # reads go on
        holder.write(b"done")
    finally:
        holder.close()
    sealing.join(30)
    assert (m.path / "animals" / "v1" / "held.bin").read_bytes() == b"done"


@pytest.mark.parametrize("how", ["seal", "put"])
def test_an_alias_on_an_unchanged_tree_is_set_and_said(mount_artfs, small_store, tmp_path, how: str) -> None:
    store, src = small_store
    if how == "seal":
        m = mount_artfs(store)
        res = run_artfs("seal", str(m.path / "animals" / "staging"), "--alias", "best")
    else:
        res = run_artfs("put", str(src), "animals", "--store", store, "--alias", "best")
    assert "unchanged" in res.stdout and "aliases set on latest: best" in res.stdout
    (v0,) = json.loads(run_artfs("ls", "animals", "--store", store, "--json").stdout)
    assert "best" in v0["aliases"]


def test_reads_through_descriptors_open_across_a_seal_keep_working(mount_artfs, small_store) -> None:
    store, _ = small_store
    m = mount_artfs(store)
    st = m.path / "animals" / "staging"
    data = random.Random(2).randbytes(3 * MiB)
    (st / "staged.bin").write_bytes(data)
    with open(st / "staged.bin", "rb") as staged, open(st / "README.md", "rb") as base:
        assert staged.read(10) == data[:10] and base.read(3) == b"# a"
        res = seal(st, "-m", "sealed under open readers")
        assert res["version"] == 1
        assert staged.read() == data[10:]  # now read from v1: the same bytes, no ENOENT
        staged.seek(0)
        assert staged.read(MiB) == data[:MiB]
        assert base.read() == b"nimals\n"
