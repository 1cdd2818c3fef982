"""POSIX in staging/ through a real mount: hard links (link(2), `cp -al`, `rsync -H`, a local `git clone`),
sealed as separate files that share chunks; atime apart from mtime; files owned by the user who made them
(another user, under `-o allow_other`), and chown by root only."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from artfs.core.manifest import Entry
from tests.support.cli import seal
from tests.support.repos import fresh_repo
from tests.support.staging_model import set_atime
from tests.support.syscalls import errno_of
from tests.support.trees import snapshot, write_tree

OTHER = 1000  # the other user (uid and gid) of the owner test


def _run(*cmd: str) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
    assert res.returncode == 0, f"{' '.join(cmd)}: {res.stderr.strip()}"


def _entries(store: str, ref: str, cache: Path) -> dict[str, Entry]:
    repo = fresh_repo(store, cache)
    try:
        return {e.path: e for e in repo.entries(repo.resolve(ref))[1]}
    finally:
        repo.close()


def test_hard_links_while_staged_and_sealed(mount_artfs, small_store, tmp_path):
    store, src = small_store
    m = mount_artfs(store)
    st = m.path / "animals" / "staging"
    # a base file, not yet changed, and a new one
    os.link(st / "images" / "cat.png", st / "cat-too.png")
    (st / "new.txt").write_text("new")
    os.link(st / "new.txt", st / "images" / "new-too.txt")
    os.link(st / "new.txt", st / "third.txt")
    a, b = os.stat(st / "images" / "cat.png"), os.stat(st / "cat-too.png")
    assert a.st_ino == b.st_ino and a.st_nlink == b.st_nlink == 2
    assert os.stat(st / "new.txt").st_nlink == 3
    with open(st / "cat-too.png", "r+b") as f:  # a write through one name is seen through the other
        f.write(b"CAT")
    assert (st / "images" / "cat.png").read_bytes() == b"CAT" + (src / "images" / "cat.png").read_bytes()[3:]
    os.unlink(st / "new.txt")  # the first name goes: the others keep the node
    assert os.stat(st / "third.txt").st_nlink == 2 and (st / "third.txt").read_text() == "new"
    (st / "other.txt").write_text("other")
    os.rename(st / "other.txt", st / "third.txt")  # over one name
    assert os.stat(st / "images" / "new-too.txt").st_nlink == 1
    os.rename(st / "cat-too.png", st / "images" / "cat.png")  # two names of one file: nothing happens
    assert os.stat(st / "cat-too.png").st_nlink == 2
    # an atomic write: write a temporary file, link it into place, drop the temporary name
    (st / "tmp.part").write_text("atomic")
    os.link(st / "tmp.part", st / "final.txt")
    os.unlink(st / "tmp.part")
    assert os.stat(st / "final.txt").st_nlink == 1
    assert errno_of(lambda: os.link(st / "tmp.part", st / "x")) == errno.ENOENT
    assert errno_of(lambda: os.link(st / "final.txt", st / "third.txt")) == errno.EEXIST
    os.mkdir(m.path / "other")  # another artifact's staging is another filesystem, as far as links go
    assert errno_of(lambda: os.link(st / "final.txt", m.path / "other" / "staging" / "f")) == errno.EXDEV
    before = snapshot(st)
    res = seal(st, "-m", "links")
    assert res["ref"] == "animals:v1"
    v1 = m.path / "animals" / "v1"
    assert snapshot(v1) == before == snapshot(st)
    assert os.stat(v1 / "cat-too.png").st_ino != os.stat(v1 / "images" / "cat.png").st_ino
    assert os.stat(st / "cat-too.png").st_nlink == 1  # a fresh view of v1: a version keeps no links
    entries = _entries(store, "animals:v1", tmp_path / "reader-cache")
    assert entries["cat-too.png"].data == entries["images/cat.png"].data  # the same chunks
    assert entries["third.txt"].data != entries["images/new-too.txt"].data


def test_cp_al_rsync_h_and_git_clone_make_links(mount_artfs, small_store):
    store, _ = small_store
    m = mount_artfs(store)
    st = m.path / "animals" / "staging"
    write_tree(st / "ds", {"README.md": b"# ds\n", "data/big.bin": bytes(range(256)) * 4000, "data/e": b""},
               links={"up": "README.md"})
    (st / "ds" / "twin.bin").write_bytes(b"twin" * 1000)
    os.link(st / "ds" / "twin.bin", st / "ds" / "twin-link.bin")
    _run("cp", "-al", str(st / "ds"), str(st / "cp-al"))  # every file a link to its source
    _run("rsync", "-aH", f"{st / 'ds'}/", str(st / "rsync"))  # the pair stays a pair
    for rel in ("README.md", "data/big.bin"):
        assert os.stat(st / "cp-al" / rel).st_ino == os.stat(st / "ds" / rel).st_ino
        assert os.stat(st / "ds" / rel).st_nlink == 2
    assert os.stat(st / "rsync" / "twin.bin").st_ino == os.stat(st / "rsync" / "twin-link.bin").st_ino
    assert os.stat(st / "rsync" / "twin.bin").st_nlink == 2
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    repo = st / "repo"
    repo.mkdir()
    (repo / "a.txt").write_text("a\n" * 100)
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "one"]):
        subprocess.run(["git", "-C", str(repo), *cmd], env=env, check=True, capture_output=True)
    _run("git", "clone", "-q", str(repo), str(st / "clone"))  # a local clone links the objects
    objects = [p for p in (st / "clone" / ".git" / "objects").rglob("*") if p.is_file()]
    assert objects and any(os.stat(p).st_nlink == 2 for p in objects)
    _run("git", "-C", str(st / "clone"), "fsck", "--no-progress")
    before = snapshot(st)
    assert seal(st)["ref"] == "animals:v1"
    assert snapshot(m.path / "animals" / "v1") == before


def test_atime_is_kept_apart_from_mtime(mount_artfs, small_store):
    store, _ = small_store
    m = mount_artfs(store)
    st = m.path / "animals" / "staging"
    (st / "f").write_text("x")
    os.utime(st / "f", ns=(1_000_000_001, 2_000_000_002))
    got = os.stat(st / "f")
    assert (got.st_atime_ns, got.st_mtime_ns) == (1_000_000_001, 2_000_000_002)
    set_atime(st / "f", 3_000_000_003)  # touch -a: mtime stays
    _run("touch", "-a", "-d", "@5", str(st / "README.md"))  # an unchanged base file too
    assert (st / "f").read_text() == "x" and (st / "README.md").read_text()  # reads move nothing (noatime)
    got, readme = os.stat(st / "f"), os.stat(st / "README.md")
    assert (got.st_atime_ns, got.st_mtime_ns) == (3_000_000_003, 2_000_000_002)
    assert readme.st_atime_ns == 5 * 10**9
    assert readme.st_mtime_ns == os.stat(m.path / "animals" / "v0" / "README.md").st_mtime_ns
    with open(st / "f", "a") as f:  # a write moves mtime, not atime
        f.write("y")
    got = os.stat(st / "f")
    assert got.st_atime_ns == 3_000_000_003 and got.st_mtime_ns > 2_000_000_002


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user may enter (pytest's tmp_path is private to root), for a mount point."""
    path = Path(tempfile.mkdtemp(prefix="artfs-shared-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


AS_OTHER = textwrap.dedent("""
    import errno, json, os, sys
    st = sys.argv[1]
    os.mkdir(f"{st}/mine")
    with open(f"{st}/mine/f.txt", "w") as f:
        f.write("mine")
    os.symlink("f.txt", f"{st}/mine/l")
    os.chmod(f"{st}/mine/f.txt", 0o600)  # the owner may (default_permissions checks it)
    out = {}
    for what, fn in [("chown to root", lambda: os.chown(f"{st}/mine/f.txt", 0, -1)),
                     ("chmod a base file", lambda: os.chmod(f"{st}/README.md", 0o777)),
                     ("write a base file", lambda: open(f"{st}/README.md", "a").close())]:
        try:
            fn()
            out[what] = None
        except OSError as e:
            out[what] = errno.errorcode[e.errno]
    out["read"] = open(f"{st}/mine/f.txt").read()
    print(json.dumps(out))
""")


def test_files_belong_to_the_user_who_made_them(shared_dir, mount_artfs, small_store):  # unmounted before rmtree
    store, _ = small_store
    m = mount_artfs(store, "-o", "allow_other", path=shared_dir)
    st = m.path / "animals" / "staging"
    os.chmod(st, 0o777)
    me = os.stat(st / "README.md")
    res = subprocess.run(["/usr/bin/python3", "-c", AS_OTHER, str(st)], user=OTHER, group=OTHER, extra_groups=[],
                         capture_output=True, text=True, timeout=60, check=False, cwd="/")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"chown to root": "EPERM", "chmod a base file": "EPERM",
                                      "write a base file": "EACCES", "read": "mine"}
    for rel in ("mine", "mine/f.txt", "mine/l"):
        got = os.lstat(st / rel)
        assert (got.st_uid, got.st_gid) == (OTHER, OTHER), rel
    assert (me.st_uid, me.st_gid) == (os.getuid(), os.getgid())  # base entries: the mount's user
    (st / "by-root.txt").write_text("root's")
    assert os.stat(st / "by-root.txt").st_uid == 0
    os.chown(st / "README.md", OTHER, OTHER + 1)  # root may give a file away
    os.lchown(st / "mine" / "l", 0, -1)
    assert (os.stat(st / "README.md").st_uid, os.stat(st / "README.md").st_gid) == (OTHER, OTHER + 1)
    assert os.lstat(st / "mine" / "l").st_uid == 0
    before = snapshot(st)
    seal(st)
    assert snapshot(st) == before
    got = os.stat(st / "mine" / "f.txt")  # versions record no owners: the mount's user again
    assert (got.st_uid, got.st_gid) == (os.getuid(), os.getgid())
