"""staging/ through a real mount: copy-on-write view of latest, write semantics and errnos, the control
commands (seal, status, discard), new artifacts, EBUSY during a seal, EROFS outside staging."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

import artfs.api
from artfs.errors import ArtfsError
from artfs.staging_client import SealConflict
from tests.support.cli import artfs_cmd, run_artfs, seal
from tests.support.polling import wait_for_path
from tests.support.syscalls import RENAME_EXCHANGE, RENAME_NOREPLACE, errno_of, renameat2
from tests.support.trees import snapshot


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def test_staging_starts_as_latest_and_writes_like_a_directory(mount_artfs, small_store):
    store, src = small_store
    m = mount_artfs(store)
    st = m.path / "animals" / "staging"
    assert snapshot(st) == snapshot(src)  # a copy-on-write view of latest
    assert os.getxattr(st, "user.artfs.artifact") == b"animals"
    assert os.getxattr(st, "user.artfs.base") == b"animals:v0"
    assert os.path.exists(os.getxattr(st, "user.artfs.control"))
    # partial overwrite of a base file of several chunks: copied up, the rest stays
    dog = st / "images" / "dog.png"
    with open(dog, "r+b") as f:
        f.seek(2 * 1024 * 1024)
        f.write(b"X" * 10)
    expected = bytearray((src / "images" / "dog.png").read_bytes())
    expected[2 * 1024 * 1024 : 2 * 1024 * 1024 + 10] = b"X" * 10
    assert dog.read_bytes() == expected
    # a handle that read a base file (through the chunk reader) reads its own write back
    with open(st / "README.md", "r+b") as f:
        assert f.read(3) == b"# a"
        f.seek(0)
        f.write(b"##")
        f.seek(0)
        assert f.read() == b"##animals\n"
    (st / "README.md").write_text("# animals\n")
    # append, O_TRUNC, ftruncate, sparse writes past the end
    with open(st / "README.md", "a") as f:
        f.write("more\n")
    assert (st / "README.md").read_text() == "# animals\nmore\n"
    with open(st / "images" / "cat.png", "wb") as f:
        f.write(b"new cat")
    assert (st / "images" / "cat.png").read_bytes() == b"new cat"
    with open(st / "sparse.bin", "wb") as f:
        f.seek(100_000)
        f.write(b"end")
        f.truncate(50)
        f.truncate(70)
    assert (st / "sparse.bin").read_bytes() == bytes(70)
    # a file open while it is unlinked stays readable and writable
    fd = os.open(st / "gone.txt", os.O_CREAT | os.O_RDWR, 0o644)
    os.unlink(st / "gone.txt")
    os.pwrite(fd, b"still here", 0)
    assert os.pread(fd, 100, 0) == b"still here" and os.fstat(fd).st_nlink == 0
    os.close(fd)
    # directories, renames over existing targets, RENAME_NOREPLACE and RENAME_EXCHANGE, chmod, utime
    (st / "new" / "deeper").mkdir(parents=True)
    os.rename(st / "images", st / "new" / "deeper" / "pics")
    (st / "a.txt").write_text("a")
    (st / "b.txt").write_text("b")
    os.rename(st / "a.txt", st / "b.txt")
    assert (st / "b.txt").read_text() == "a" and not (st / "a.txt").exists()
    (st / "a.txt").write_text("A")
    assert errno_of(lambda: renameat2(st / "a.txt", st / "b.txt", RENAME_NOREPLACE)) == errno.EEXIST
    renameat2(st / "a.txt", st / "b.txt", RENAME_EXCHANGE)
    assert (st / "a.txt").read_text() == "a" and (st / "b.txt").read_text() == "A"
    os.mkdir(st / "full")
    (st / "full" / "x").write_text("x")
    assert errno_of(lambda: os.rmdir(st / "full")) == errno.ENOTEMPTY
    assert errno_of(lambda: os.rename(st / "new", st / "full")) == errno.ENOTEMPTY
    os.chmod(st / "a.txt", 0o755)
    os.utime(st / "a.txt", ns=(1_500_000_000 * 10**9, 1_500_000_000 * 10**9))
    assert os.stat(st / "a.txt").st_mtime_ns == 1_500_000_000 * 10**9
    os.symlink("new/deeper/pics/dog.png", st / "dog-link")
    assert os.readlink(st / "dog-link") == "new/deeper/pics/dog.png" and (st / "dog-link").read_bytes() == expected
    fd = os.open(st / "a.txt", os.O_RDWR)
    os.fsync(fd)
    os.close(fd)
    assert os.statvfs(st).f_bavail > 0
    # what a version cannot hold
    assert errno_of(lambda: os.link(st / "new", st / "hard")) == errno.EPERM  # a directory
    assert errno_of(lambda: os.link(st / "a.txt", m.path / "animals" / "v0" / "hard")) == errno.EXDEV
    assert errno_of(lambda: os.link(m.path / "animals" / "v0" / "README.md", st / "hard")) == errno.EXDEV
    assert errno_of(lambda: os.mkfifo(st / "fifo")) == errno.EPERM
    assert errno_of(lambda: os.symlink("../../etc/passwd", st / "escape")) == errno.EPERM
    assert errno_of(lambda: os.setxattr(st / "a.txt", "user.x", b"1")) == errno.ENOTSUP
    assert errno_of(lambda: os.rename(st / "a.txt", m.path / "animals" / "v0" / "a.txt")) == errno.EROFS
    assert errno_of(lambda: os.rename(m.path / "animals" / "v0" / "README.md", st / "r.md")) == errno.EXDEV
    before = snapshot(st)
    res = seal(st, "-m", "through the mount", "--alias", "best")
    assert res["ref"] == "animals:v1" and res["artifact"] == "animals"
    assert os.readlink(m.path / "animals" / "best") == "v1"
    assert snapshot(m.path / "animals" / "v1") == before
    assert snapshot(st) == before  # staging is now a fresh view of v1
    assert os.getxattr(st, "user.artfs.base") == b"animals:v1"
    assert os.stat(m.path / "animals" / "v1" / "a.txt").st_mtime_ns == 1_500_000_000 * 10**9


def test_status_discard_and_unchanged_seal(mount_artfs, small_store):
    store, src = small_store
    m = mount_artfs(store)
    st = m.path / "animals" / "staging"
    res = run_artfs("seal", str(st))
    assert "unchanged" in res.stdout and "nothing published" in res.stdout
    (st / "bird.png").write_bytes(b"bird")
    (st / "README.md").write_text("changed\n")
    os.unlink(st / "images" / "dog.png")
    os.chmod(st / "images" / "cat.png", 0o600)  # not exec bits: not a content change
    out = run_artfs("status", str(st))
    assert out.stdout.splitlines() == ["M README.md", "A bird.png", "D images/dog.png"]
    assert "3 changes against animals:v0" in out.stderr
    as_json = json.loads(run_artfs("status", str(st / ".." / "staging"), "--json").stdout)
    assert as_json == {"artifact": "animals", "base": "animals:v0",
                       "changes": [{"change": "modified", "path": "README.md"},
                                   {"change": "added", "path": "bird.png"},
                                   {"change": "deleted", "path": "images/dog.png"}]}
    assert artfs.api.status(str(st))["changes"] == as_json["changes"]
    out = run_artfs("discard", str(st))
    assert "animals:v0" in out.stdout
    assert snapshot(st) == snapshot(src) and artfs.api.status(str(st))["changes"] == []
    assert sorted(os.listdir(m.path / "animals")) == ["latest", "staging", "v0"]  # nothing published
    (st / "x.txt").write_text("x")
    artfs.api.discard(str(st))
    assert not (st / "x.txt").exists()
    with pytest.raises(ArtfsError, match="not a staging directory"):
        artfs.api.status(str(m.path / "animals" / "v0"))


def test_mkdir_makes_a_new_artifact_published_at_first_seal(mount_artfs, small_store, tmp_path):
    store, _ = small_store
    m = mount_artfs(store, cache_dir=tmp_path / "cache")
    new = m.path / "resnet"
    os.mkdir(new)
    assert sorted(os.listdir(m.path)) == ["animals", "resnet"] and os.listdir(new) == ["staging"]
    assert os.listdir(new / "staging") == [] and json.loads(run_artfs("status", str(new / "staging"), "--json")
                                                           .stdout)["base"] is None
    assert errno_of(lambda: os.mkdir(m.path / "animals")) == errno.EEXIST
    assert errno_of(lambda: os.mkdir(m.path / ".hidden")) == errno.EINVAL
    assert errno_of(lambda: os.rmdir(m.path / "animals")) == errno.EROFS
    assert errno_of(lambda: os.mkdir(m.path / "animals" / "v5")) == errno.EROFS
    # a typo can be taken back while nothing is in it
    os.mkdir(m.path / "typo")
    os.rmdir(m.path / "typo")
    assert not (m.path / "typo").exists()
    (new / "staging" / "weights").mkdir()
    (new / "staging" / "weights" / "model.bin").write_bytes(os.urandom(100_000))
    (new / "staging" / "config.json").write_text("{}")
    expected = snapshot(new / "staging")
    # it lives only in this cache until sealed, and survives a restart of the daemon
    m.close()
    m = mount_artfs(store, cache_dir=tmp_path / "cache", path=m.path)
    assert snapshot(new / "staging") == expected
    res = seal(new / "staging", "--type", "model", "-m", "first weights")
    assert res["ref"] == "resnet:v0"
    assert sorted(os.listdir(new)) == ["latest", "staging", "v0"]
    assert os.getxattr(new / "v0", "user.artfs.type") == b"model"
    assert snapshot(new / "v0") == expected and snapshot(new / "staging") == expected
    assert errno_of(lambda: os.rmdir(new)) == errno.EROFS


def test_writes_get_ebusy_during_a_seal_and_reads_go_on(mount_artfs, small_store, tmp_path):
    store, _ = small_store
    gate = tmp_path / "gate"
    m = mount_artfs(store, env={"ARTFS_TEST_SEAL_GATE": str(gate)})
    st = m.path / "animals" / "staging"
    (st / "big.bin").write_bytes(os.urandom(5 * 1024 * 1024))
    sealing = subprocess.Popen(artfs_cmd("seal", str(st), "--json"), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        wait_for_path(gate)  # the seal froze the area and waits at its first step
        for what, fn in {
            "write": lambda: (st / "big.bin").write_bytes(b"x"),
            "append": lambda: _append(st / "README.md", b"x"),
            "create": lambda: (st / "new.txt").write_bytes(b"x"),
            "mkdir": lambda: os.mkdir(st / "d"),
            "unlink": lambda: os.unlink(st / "README.md"),
            "rename": lambda: os.rename(st / "README.md", st / "R.md"),
            "chmod": lambda: os.chmod(st / "README.md", 0o600),
        }.items():
            assert errno_of(fn) == errno.EBUSY, what
        assert (st / "README.md").read_text() == "# animals\n" and len((st / "big.bin").read_bytes()) == 5 << 20
        with pytest.raises(ArtfsError, match="being sealed"):
            artfs.api.discard(str(st))
    finally:
        gate.unlink(missing_ok=True)
        out, err = sealing.communicate(timeout=120)
    assert sealing.returncode == 0, err
    assert json.loads(out)["ref"] == "animals:v1"
    (st / "after.txt").write_text("writable again")
    assert seal(st)["ref"] == "animals:v2"


def test_writes_outside_staging_are_erofs(mount_artfs, small_store):
    store, _ = small_store
    m = mount_artfs(store)
    art = m.path / "animals"
    for what, fn in {
        "create in a version": lambda: (art / "v0" / "x").write_bytes(b"x"),
        "create in an artifact": lambda: (art / "x").write_bytes(b"x"),
        "create at the root": lambda: (m.path / "x").write_bytes(b"x"),
        "write a version file": lambda: open(art / "v0" / "README.md", "r+b"),  # noqa: SIM115
        "unlink staging": lambda: os.rmdir(art / "staging"),
        "rename staging": lambda: os.rename(art / "staging", art / "staged"),
        "symlink at the root": lambda: os.symlink("animals", m.path / "a"),
    }.items():
        assert errno_of(fn) == errno.EROFS, what


def test_seal_refuses_conflicts_listing_paths_and_force_takes_ours(mount_artfs, small_store, tmp_path):
    """Someone else publishes meanwhile (`artfs put` from elsewhere): disjoint changes merge, the same
    path changed on both sides is refused with its path, and --force keeps the staged side."""
    store, src = small_store
    m = mount_artfs(store)
    st = m.path / "animals" / "staging"
    (st / "README.md").write_text("ours\n")
    (st / "mine.txt").write_text("mine\n")
    other = tmp_path / "other"
    run_artfs("get", "animals:v0", str(other), "--store", store)
    (other / "README.md").write_text("theirs\n")
    (other / "theirs.txt").write_text("theirs\n")
    run_artfs("put", str(other), "animals", "--store", store)
    with pytest.raises(SealConflict) as info:
        artfs.api.seal(str(st))
    assert info.value.paths == ["README.md"]
    res = seal(st, check=False)
    assert res["returncode"] != 0 and "README.md" in res["stderr"] and "--force" in res["stderr"]
    assert res["returncode"] != 0
    res = seal(st, "--force")
    assert res["ref"] == "animals:v2"
    v2 = m.path / "animals" / "v2"
    assert (v2 / "README.md").read_text() == "ours\n"
    assert (v2 / "mine.txt").read_text() == "mine\n" and (v2 / "theirs.txt").read_text() == "theirs\n"


def test_info_of_staging_paths_and_of_bare_names_in_a_mount(mount_artfs, small_store):
    store, _ = small_store
    m = mount_artfs(store)
    st = m.path / "animals" / "staging"
    (st / "new.txt").write_text("new")
    res = run_artfs("info", str(st / "README.md"), "--json")
    assert json.loads(res.stdout) == {"staging": "animals", "base": "animals:v0", "path": "README.md", "changes": 1}
    assert "based on animals:v0" in run_artfs("info", str(st)).stdout
    res = subprocess.run(artfs_cmd("info", "v0", "--json"), cwd=m.path / "animals", capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and json.loads(res.stdout)["ref"] == "animals:v0", res.stderr
