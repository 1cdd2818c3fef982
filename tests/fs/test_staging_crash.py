"""kill -9 of the mount daemon while files are being written into staging, and in the middle of a seal:
after remounting (--force over the stale mount), no partial version, the staged changes are intact,
and they seal."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from tests.support.cli import artfs_cmd, run_artfs, seal
from tests.support.processes import wait_pid_gone
from tests.support.trees import snapshot

CHUNK = 1 << 20


def _block(i: int) -> bytes:
    """The i-th MiB of the file the writer streams: recognizable at every offset."""
    return i.to_bytes(4, "big") * (CHUNK // 4)


WRITER = textwrap.dedent("""
    import os, sys
    path = sys.argv[1]
    with open(path, "wb", buffering=0) as f:
        for i in range(100000):
            f.write(i.to_bytes(4, "big") * (1 << 18))
            if i % 10 == 9:
                os.fsync(f.fileno())
                print(i + 1, flush=True)  # MiB durable: what fsync() promises
""")
PAGE = 4096


def _pages_written_or_zero(data: bytes, written: bytes) -> bool:
    """Bytes written but never fsync'd nor closed may be lost to a daemon crash, page by page: each page
    of the file is what was written there, or zeros (a hole), never anything else."""
    zero = bytes(PAGE)
    return len(data) <= len(written) and all(
        data[o : o + PAGE] in (written[o : o + PAGE][: len(data) - o], zero[: len(data[o : o + PAGE])])
        for o in range(0, len(data), PAGE))


def _kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_pid_gone(pid, 20)


def _versions(store: str) -> list[str]:
    return [v["ref"] for v in json.loads(run_artfs("ls", "animals", "--json", "--store", store).stdout)]


def test_kill_9_while_writing(mount_artfs, small_store, tmp_path):
    store, _ = small_store
    cache = tmp_path / "cache"
    m = mount_artfs(store, cache_dir=cache)
    st = m.path / "animals" / "staging"
    (st / "done.txt").write_text("written before the crash\n")
    (st / "images" / "cat.png").write_bytes(b"a new cat")
    os.unlink(st / "README.md")
    os.mkdir(st / "out")
    before = snapshot(st)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(st / "out" / "stream.bin")],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert writer.stdout is not None
        durable = 0
        while durable < 30:
            line = writer.stdout.readline()
            assert line, "the writer stopped"
            durable = int(line)
        _kill9(m.pid)
    finally:
        writer.kill()
        writer.wait()
    m.closed = True  # dead: the new mount below takes its place
    m2 = mount_artfs(store, "--force", cache_dir=cache, path=m.path)
    st = m2.path / "animals" / "staging"
    assert _versions(store) == ["animals:v0"]  # nothing was published
    data = (st / "out" / "stream.bin").read_bytes()
    assert len(data) >= durable * CHUNK  # every fsync'd byte is there
    assert all(data[i * CHUNK : (i + 1) * CHUNK] == _block(i) for i in range(durable))
    rest = b"".join(_block(i) for i in range(durable, len(data) // CHUNK + 1))
    assert _pages_written_or_zero(data[durable * CHUNK :], rest)
    after = snapshot(st)
    del after["out/stream.bin"]
    assert after == before
    status = run_artfs("status", str(st)).stdout.splitlines()
    assert sorted(status) == ["A done.txt", "A out", "A out/stream.bin", "D README.md", "M images/cat.png"]
    expected = snapshot(st)
    assert seal(st)["ref"] == "animals:v1"
    assert snapshot(m2.path / "animals" / "v1") == expected


@pytest.mark.parametrize("writeback", [True, False], ids=["writeback", "no_writeback_cache"])
def test_what_survives_a_kill_9_is_what_the_readme_promises(mount_artfs, small_store, tmp_path, writeback):
    """With the writeback cache: what close() or fsync() returned for survives; bytes only written may be
    lost (page by page), the file itself is there. Without it, every write() that returned survives."""
    store, _ = small_store
    cache = tmp_path / "cache"
    m = mount_artfs(store, *([] if writeback else ["-o", "no_writeback_cache"]), cache_dir=cache)
    st = m.path / "animals" / "staging"
    rng = random.Random(5)
    closed, synced, written = (rng.randbytes(3 * CHUNK + 123) for _ in range(3))
    (st / "closed.bin").write_bytes(closed)
    fds = [os.open(st / name, os.O_WRONLY | os.O_CREAT, 0o644) for name in ("synced.bin", "written.bin")]
    try:
        assert os.write(fds[0], synced) == len(synced)
        os.fsync(fds[0])
        assert os.write(fds[1], written) == len(written)
        _kill9(m.pid)
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):  # the daemon is gone: close() may say so
                os.close(fd)
    m.closed = True
    m2 = mount_artfs(store, "--force", cache_dir=cache, path=m.path)
    st = m2.path / "animals" / "staging"
    assert (st / "closed.bin").read_bytes() == closed
    assert (st / "synced.bin").read_bytes() == synced
    data = (st / "written.bin").read_bytes()
    if writeback:
        assert _pages_written_or_zero(data, written)
    else:
        assert data == written
    expected = snapshot(st)
    assert seal(st)["ref"] == "animals:v1"
    assert snapshot(m2.path / "animals" / "v1") == expected


def test_kill_9_keeps_hard_links_owners_and_atimes(mount_artfs, small_store, tmp_path):
    store, _ = small_store
    cache = tmp_path / "cache"
    m = mount_artfs(store, cache_dir=cache)
    st = m.path / "animals" / "staging"
    (st / "new.txt").write_text("new")
    os.link(st / "new.txt", st / "images" / "twin.txt")
    os.link(st / "images" / "cat.png", st / "cat-too.png")  # an unchanged base file
    os.link(st / "cover.png", st / "cover-too.png")  # a symlink itself
    os.utime(st / "new.txt", ns=(1_000_000_001, 2_000_000_002))
    os.chown(st / "new.txt", 1000, 1001)
    made = st / "made" / "sub"  # the same in a new directory (an upper tree)
    made.mkdir(parents=True)
    (made / "f.txt").write_text("made")
    os.link(made / "f.txt", made.parent / "f-too.txt")
    os.utime(made / "f.txt", ns=(3_000_000_003, 4_000_000_004))
    os.chown(made / "f.txt", 1002, 1003)
    os.chmod(made.parent, 0o701)
    _kill9(m.pid)
    m.closed = True
    m2 = mount_artfs(store, "--force", cache_dir=cache, path=m.path)
    st = m2.path / "animals" / "staging"
    new, twin = os.stat(st / "new.txt"), os.stat(st / "images" / "twin.txt")
    assert new.st_ino == twin.st_ino and new.st_nlink == 2
    assert (new.st_atime_ns, new.st_mtime_ns, new.st_uid, new.st_gid) == (1_000_000_001, 2_000_000_002, 1000, 1001)
    assert os.stat(st / "cat-too.png").st_ino == os.stat(st / "images" / "cat.png").st_ino
    assert os.lstat(st / "cover-too.png").st_nlink == 2 and os.readlink(st / "cover-too.png") == "images/cat.png"
    (st / "images" / "twin.txt").write_text("both")
    assert (st / "new.txt").read_text() == "both"
    made = st / "made" / "sub"
    f, too = os.stat(made / "f.txt"), os.stat(made.parent / "f-too.txt")
    assert f.st_ino == too.st_ino and f.st_nlink == 2
    assert (f.st_atime_ns, f.st_mtime_ns, f.st_uid, f.st_gid) == (3_000_000_003, 4_000_000_004, 1002, 1003)
    assert stat.S_IMODE(os.stat(made.parent).st_mode) == 0o701
    expected = snapshot(st)
    assert seal(st)["ref"] == "animals:v1"
    assert snapshot(m2.path / "animals" / "v1") == expected


def test_kill_9_in_the_middle_of_a_seal(mount_artfs, small_store, tmp_path):
    store, _ = small_store
    cache, gate = tmp_path / "cache", tmp_path / "gate"
    m = mount_artfs(store, cache_dir=cache, env={"ARTFS_TEST_SEAL_GATE": str(gate)})
    st = m.path / "animals" / "staging"
    (st / "big.bin").write_bytes(os.urandom(20 * CHUNK))
    (st / "images" / "dog.png").write_bytes(b"small dog")
    expected = snapshot(st)
    sealing = subprocess.Popen(artfs_cmd("seal", str(st)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not gate.exists():
            assert time.monotonic() < deadline and sealing.poll() is None, sealing.communicate()
            time.sleep(0.02)
        _kill9(m.pid)  # the area is frozen, the seal under way, nothing published yet
        _, err = sealing.communicate(timeout=60)
    finally:
        if sealing.poll() is None:
            sealing.kill()
    assert sealing.returncode != 0 and "closed the connection" in err
    m.closed = True
    m2 = mount_artfs(store, "--force", cache_dir=cache, path=m.path)
    st = m2.path / "animals" / "staging"
    assert _versions(store) == ["animals:v0"]
    assert sorted(os.listdir(m2.path / "animals")) == ["latest", "staging", "v0"]
    assert snapshot(st) == expected
    assert seal(st, "-m", "after the crash")["ref"] == "animals:v1"
    assert snapshot(m2.path / "animals" / "v1") == expected
    assert run_artfs("status", str(st)).stdout == ""


def test_kill_9_of_the_daemon_at_random_moments_of_seals(mount_artfs, small_store, tmp_path):
    """The daemon killed at a random moment of a seal, again and again: each time either the seal published
    exactly the staged tree (and staging starts over from it) or nothing was published and every staged
    change is still there; the next seal succeeds (ARTFS_STRESS=1: 10 rounds)."""
    store, _ = small_store
    cache = tmp_path / "cache"
    rng = random.Random(3)
    m = mount_artfs(store, cache_dir=cache)
    for round_ in range(10 if os.environ.get("ARTFS_STRESS") else 3):
        st = m.path / "animals" / "staging"
        (st / f"round{round_}.bin").write_bytes(rng.randbytes(rng.randint(1, 12) * CHUNK))
        made = st / f"made{round_}" / "sub"  # a new directory: an upper tree, walked by the seal
        made.mkdir(parents=True)
        (made / "a.bin").write_bytes(rng.randbytes(rng.randint(1, 4) * CHUNK))
        os.link(made / "a.bin", made.parent / "twin.bin")
        os.symlink("sub/a.bin", made.parent / "link")
        expected = snapshot(st)
        before = _versions(store)
        sealing = subprocess.Popen(artfs_cmd("seal", str(st)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, 0.6))
        _kill9(m.pid)
        sealing.wait(60)
        m.closed = True
        m = mount_artfs(store, "--force", cache_dir=cache, path=m.path)
        st = m.path / "animals" / "staging"
        after = _versions(store)
        if after == before:
            assert snapshot(st) == expected, "staged changes lost"
        else:
            assert after == [*before, f"animals:v{len(before)}"]
            assert snapshot(m.path / "animals" / f"v{len(before)}") == expected
            assert snapshot(st) == expected  # a fresh view of the new latest, or the same changes to re-seal
    st = m.path / "animals" / "staging"
    final = snapshot(st)
    seal(st, "-m", "after the crashes")  # publishes what is staged, or is "unchanged"
    latest = os.readlink(m.path / "animals" / "latest")
    assert snapshot(m.path / "animals" / latest) == final
