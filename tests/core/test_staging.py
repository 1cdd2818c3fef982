"""The staging area without FUSE: a model-based test against a plain directory, then persistence, status,
discard, concurrent seals (3-way merge), crash safety, big files and upload economy."""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import tracemalloc

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from artfs.core.commit import commit_tree
from artfs.core.export import export_version
from artfs.core.manifest import DIR, FILE, LINK, Entry, content_digest, path_key
from artfs.core.merge import merge_trees
from artfs.core.places import Places
from artfs.core.repo import Repo
from artfs.core.staging import RENAME_EXCHANGE, RENAME_NOREPLACE, MergeConflict, StagingArea
from artfs.core.staging import StagedNode as Node
from artfs.errors import ArtfsError, InvalidName
from artfs.storage.open import open_store
from tests.support import staging_model as ref
from tests.support.repos import fresh_repo
from tests.support.staging_model import (
    Times,
    assert_same_errno,
    disk_posix,
    forget_posix,
    initial_tree,
    pick_path,
    posix_view,
)
from tests.support.syscalls import errno_of, renameat2
from tests.support.trees import snapshot, write_tree

MiB = 1024 * 1024
ROOT = 1
_UMASK = os.umask(0)
os.umask(_UMASK)


# --- helpers ---------------------------------------------------------------------------------------


def walk(s: StagingArea, node_id: int = ROOT, prefix: str = ""):
    for name, node in s.listdir(node_id):
        path = f"{prefix}/{name}" if prefix else name
        yield path, node
        if node.is_dir:
            yield from walk(s, node.id, path)


def staged_tree(s: StagingArea, nodes: dict[str, Node] | None = None) -> dict[str, tuple]:
    out = {}
    for path, n in (nodes if nodes is not None else dict(walk(s))).items():
        if n.is_dir:
            out[path] = ("dir", n.mode, None)
        elif n.target is not None:
            out[path] = ("symlink", 0o777, n.target)
        else:
            data = s.read(n.id, 0, n.size + 10)
            assert len(data) == n.size, path
            out[path] = ("file", n.mode, data)
    return out


def version_tree(repo: Repo, name: str, version: int | None = None) -> dict[str, tuple]:
    rec = repo.resolve(name if version is None else f"{name}:v{version}")
    out = tempfile.mkdtemp(prefix="artfs-export-")
    try:
        export_version(repo, rec, os.path.join(out, "v"))
        return snapshot(os.path.join(out, "v"))
    finally:
        shutil.rmtree(out)


def expected_status(base: dict[str, tuple], now: dict[str, tuple]) -> list[tuple[str, str]]:
    """What status must say: content and exec bits of files, symlink targets, kinds (as diff_entries)."""
    out = []
    for p in sorted(set(base) | set(now), key=path_key):
        a, b = base.get(p), now.get(p)
        if b is None:
            out.append(("deleted", p))
        elif a is None:
            out.append(("added", p))
        elif a[0] != b[0] or a[2] != b[2] or (a[0] == "file" and (a[1] & 0o111) != (b[1] & 0o111)):
            out.append(("modified", p))
    return out


def resolve(s: StagingArea, path: str) -> tuple[int, str]:
    """(parent id, last name) of a path, with the kernel's errnos for a bad intermediate component."""
    *dirs, name = path.split("/")
    node_id = ROOT
    for d in dirs:
        n = s.lookup(node_id, d)
        if n is None:
            raise OSError(errno.ENOENT, d)
        if not n.is_dir:
            raise OSError(errno.ENOTDIR, d)
        node_id = n.id
    return node_id, name


def node_at(s: StagingArea, path: str) -> Node:
    parent, name = resolve(s, path)
    n = s.lookup(parent, name)
    if n is None:
        raise OSError(errno.ENOENT, path)
    return n


def open_area(repo: Repo, name: str) -> StagingArea:
    return StagingArea.open(repo, name)


def base_version(repo: Repo, tmp_path, name: str = "animals", files=None, dirs=(), links=None) -> str:
    src = tmp_path / f"src-{name}"
    write_tree(src, files if files is not None else {"images/dog.png": b"dog" * 1000, "readme.txt": b"hello",
                                                      "images/cat.png": b"cat" * 500},
               dirs=dirs, links=links)
    commit_tree(repo, str(src), name)
    return str(src)


# --- the model-based test --------------------------------------------------------------------------

class StagingModel(RuleBasedStateMachine):
    """Random operations on a staging area and on a plain directory must agree: trees, contents, errnos.
    Seals (checked against the published version), reopens and discards are operations too."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="artfs-model-")
        src = os.path.join(self.tmp, "src")
        initial_tree(src)
        self.repo = Repo(open_store(os.path.join(self.tmp, "store")), Places.under(os.path.join(self.tmp, "cache")))
        commit_tree(self.repo, src, "m")
        self.model = os.path.join(self.tmp, "model")
        self.base = os.path.join(self.tmp, "base")  # the model of the version staging started from
        shutil.copytree(src, self.model, symlinks=True)
        shutil.copytree(src, self.base, symlinks=True)
        self.s = StagingArea.open(self.repo, "m")
        self.times = Times()
        self.me = (os.getuid(), os.getgid())  # the "mount's user" of a node with no owner

    def teardown(self) -> None:
        self.s.close()
        self.repo.close()
        shutil.rmtree(self.tmp)

    def m(self, path: str) -> str:
        return os.path.join(self.model, path)

    both = staticmethod(assert_same_errno)

    # --- operations ---

    def pick(self, d, pool: list[str], new: bool = False, dirs_only: bool = False) -> str:
        return pick_path(d, self.model, pool, new, dirs_only)

    @rule(d=st.data())
    def create(self, d):
        path = self.pick(d, ref.PATHS, new=True)

        def real():
            os.close(os.open(self.m(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))

        self.both(real, lambda: self.s.create(*resolve(self.s, path), 0o644 & ~_UMASK, self.me))
        self.times.created(self.m(path))

    @rule(d=st.data())
    def mkdir(self, d):
        path = self.pick(d, ref.PATHS, new=True)
        self.both(lambda: os.mkdir(self.m(path), 0o755),
                  lambda: self.s.mkdir(*resolve(self.s, path), 0o755 & ~_UMASK, self.me))
        self.times.created(self.m(path))

    @rule(d=st.data(), to=st.sampled_from(ref.TARGETS))
    def symlink(self, d, to):
        path = self.pick(d, ref.LINK_PATHS, new=True)
        self.both(lambda: os.symlink(to, self.m(path)), lambda: self.s.symlink(*resolve(self.s, path), to, self.me))
        self.times.created(self.m(path))

    @rule(d=st.data())
    def link(self, d):
        src, dst = self.pick(d, ref.PATHS), self.pick(d, ref.PATHS, new=True)
        self.both(lambda: os.link(self.m(src), self.m(dst), follow_symlinks=False),
                  lambda: self.s.link(node_at(self.s, src).id, *resolve(self.s, dst)))

    @rule(d=st.data())
    def link_symlink(self, d):
        src, dst = self.pick(d, ref.LINK_PATHS), self.pick(d, ref.LINK_PATHS, new=True)
        self.both(lambda: os.link(self.m(src), self.m(dst), follow_symlinks=False),
                  lambda: self.s.link(node_at(self.s, src).id, *resolve(self.s, dst)))

    @rule(d=st.data(), owner=st.sampled_from(ref.OWNERS), which=st.sampled_from(["both", "uid", "gid"]))
    def chown(self, d, owner, which):
        path = self.pick(d, ref.PATHS + ref.LINK_PATHS)
        uid = owner[0] if which != "gid" else None
        gid = owner[1] if which != "uid" else None
        self.both(lambda: os.lchown(self.m(path), -1 if uid is None else uid, -1 if gid is None else gid),
                  lambda: self.s.setattr(node_at(self.s, path).id, uid=uid, gid=gid))

    @rule(d=st.data(), offset=st.sampled_from(ref.OFFSETS), data=ref.DATA)
    def write(self, d, offset, data):
        path = self.pick(d, ref.PATHS)

        def real():
            fd = os.open(self.m(path), os.O_WRONLY)
            try:
                os.pwrite(fd, data, offset)
            finally:
                os.close(fd)

        self.both(real, lambda: self.s.write(node_at(self.s, path).id, offset, data))
        self.times.written(self.m(path))

    @rule(d=st.data(), offset=st.sampled_from(ref.OFFSETS), size=st.sampled_from(ref.READ_SIZES))
    def read(self, d, offset, size):
        path = self.pick(d, ref.PATHS)
        got = {}

        def real():
            fd = os.open(self.m(path), os.O_RDONLY)
            try:
                got["real"] = os.pread(fd, size, offset)
            finally:
                os.close(fd)

        def staged():
            got["staged"] = self.s.read(node_at(self.s, path).id, offset, size)

        self.both(real, staged)
        assert got.get("real") == got.get("staged")

    @rule(d=st.data(), size=st.sampled_from(ref.SIZES))
    def truncate(self, d, size):
        path = self.pick(d, ref.PATHS)
        self.both(lambda: os.truncate(self.m(path), size), lambda: self.s.truncate(node_at(self.s, path).id, size))
        self.times.written(self.m(path))

    @rule(d=st.data())
    def unlink(self, d):
        path = self.pick(d, ref.PATHS + ref.LINK_PATHS)
        self.both(lambda: os.unlink(self.m(path)), lambda: self.s.unlink(*resolve(self.s, path)))

    @rule(d=st.data())
    def rmdir(self, d):
        path = self.pick(d, ref.PATHS)
        self.both(lambda: os.rmdir(self.m(path)), lambda: self.s.rmdir(*resolve(self.s, path)))

    def _rename(self, src, dst, noreplace):
        flags = RENAME_NOREPLACE if noreplace else 0
        self.both(lambda: renameat2(self.m(src), self.m(dst), flags),
                  lambda: self.s.rename(*resolve(self.s, src), *resolve(self.s, dst), flags))

    @rule(d=st.data(), noreplace=st.booleans())
    def rename(self, d, noreplace):
        self._rename(self.pick(d, ref.PATHS), self.pick(d, ref.PATHS, new=d.draw(st.booleans())), noreplace)

    @rule(d=st.data(), noreplace=st.booleans())
    def rename_dir_over_dir(self, d, noreplace):
        self._rename(self.pick(d, ref.PATHS, dirs_only=True), self.pick(d, ref.PATHS, dirs_only=True), noreplace)

    @rule(d=st.data(), noreplace=st.booleans())
    def rename_symlink(self, d, noreplace):
        self._rename(self.pick(d, ref.LINK_PATHS), self.pick(d, ref.LINK_PATHS, new=d.draw(st.booleans())), noreplace)

    @rule(d=st.data(), mode=st.sampled_from([*ref.MODES, 0o750]))
    def chmod(self, d, mode):
        path = self.pick(d, ref.PATHS)
        self.both(lambda: os.chmod(self.m(path), mode), lambda: self.s.setattr(node_at(self.s, path).id, mode=mode))

    @rule(d=st.data(), mtime=st.sampled_from(ref.MTIMES))
    def utime(self, d, mtime):
        path = self.pick(d, ref.PATHS)
        self.both(lambda: os.utime(self.m(path), ns=(mtime, mtime)),
                  lambda: self.s.setattr(node_at(self.s, path).id, atime_ns=mtime, mtime_ns=mtime))
        if os.path.exists(self.m(path)):
            self.times.set(self.m(path), mtime, mtime)

    @rule(d=st.data(), atime=st.sampled_from(ref.ATIMES), mtime=st.sampled_from(ref.MTIMES))
    def utime_apart(self, d, atime, mtime):
        path = self.pick(d, ref.PATHS)
        self.both(lambda: os.utime(self.m(path), ns=(atime, mtime)),
                  lambda: self.s.setattr(node_at(self.s, path).id, atime_ns=atime, mtime_ns=mtime))
        if os.path.exists(self.m(path)):
            self.times.set(self.m(path), atime, mtime)

    @rule(d=st.data(), atime=st.sampled_from(ref.ATIMES))
    def touch_atime(self, d, atime):
        path = self.pick(d, ref.PATHS)
        self.both(lambda: ref.set_atime(self.m(path), atime),
                  lambda: self.s.setattr(node_at(self.s, path).id, atime_ns=atime))
        if os.path.exists(self.m(path)):
            self.times.set(self.m(path), atime, None)

    @rule()
    def status(self):
        assert self.s.status() == expected_status(snapshot(self.base), snapshot(self.model))

    @rule()
    def reopen(self):
        self.s.close()
        self.s = StagingArea.open(self.repo, "m")

    @rule()
    def discard(self):
        self.s.discard()
        shutil.rmtree(self.model)
        shutil.copytree(self.base, self.model, symlinks=True)
        self.times.known.clear()

    @rule()
    def seal(self):
        mtimes = {path: n.mtime_ns for path, n in walk(self.s)}
        before = self.repo.version_numbers("m")
        res = self.s.seal("model step")
        if res.record is None:
            # The tree digest covers content, not modes or mtimes: a chmod-only change publishes nothing,
            # and staging is now latest again. Bring the model's modes back to latest's.
            assert self.repo.version_numbers("m") == before
            latest = version_tree(self.repo, "m")
            mine = snapshot(self.model)
            assert {p: (k, c) for p, (k, _, c) in latest.items()} == {p: (k, c) for p, (k, _, c) in mine.items()}
            for p, (kind, mode, _) in latest.items():
                if kind != "symlink":
                    os.chmod(self.m(p), mode)
        else:
            assert res.record.version == before[-1] + 1 and res.record.parent == before[-1]
            assert version_tree(self.repo, "m") == snapshot(self.model)
            _, entries = self.repo.entries(res.record)
            assert {e.path: e.mtime_ns for e in entries} == mtimes  # mtimes come from the nodes
        assert self.s.base == self.repo.version_numbers("m")[-1] and self.s.status() == []
        forget_posix(self.model)  # a version keeps no hard links, owners or atimes
        self.times.known.clear()
        shutil.rmtree(self.base)
        shutil.copytree(self.model, self.base, symlinks=True)

    @invariant()
    def trees_agree(self):
        nodes = dict(walk(self.s))
        assert staged_tree(self.s, nodes) == snapshot(self.model)
        assert posix_view(  # links, nlink, owners
            (p, n.is_dir, n.id, n.nlink, self.me[0] if n.uid is None else n.uid, self.me[1] if n.gid is None else n.gid)
            for p, n in nodes.items()
        ) == disk_posix(self.model, nodes)
        for p, (atime, mtime) in self.times.expected(self.model).items():
            got = (nodes[p].atime_ns, nodes[p].mtime_ns)
            assert (got[0] if atime is None else atime, got[1] if mtime is None else mtime) == got, p


StagingModel.TestCase.settings = settings(
    max_examples=int(os.environ.get("ARTFS_MODEL_EXAMPLES", "250" if os.environ.get("ARTFS_STRESS") else "50")),
    stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestStagingModel = StagingModel.TestCase


# --- basics and errnos -----------------------------------------------------------------------------


def test_starts_as_latest_and_copies_up_on_write(lrepo, tmp_path):
    src = base_version(lrepo, tmp_path, files={"big.bin": random.Random(3).randbytes(5 * MiB), "s": b"x"})
    with open_area(lrepo, "animals") as s:
        assert s.base == 0 and staged_tree(s) == snapshot(src)
        big = s.lookup(ROOT, "big.bin")
        assert s.base_entry(big.id) is not None
        s.write(big.id, 3 * MiB + 5, b"PATCH")
        assert s.base_entry(big.id) is None
        with open(os.path.join(src, "big.bin"), "rb") as fh:
            expect = bytearray(fh.read())
        expect[3 * MiB + 5: 3 * MiB + 10] = b"PATCH"
        assert s.read(big.id, 0, 6 * MiB) == bytes(expect)
        assert s.status() == [("modified", "big.bin")]


def test_errnos(lrepo, tmp_path):
    base_version(lrepo, tmp_path, files={"f": b"1", "d/g": b"2"}, dirs=["e"])
    with open_area(lrepo, "animals") as s:
        d, e, f = (s.lookup(ROOT, n) for n in ("d", "e", "f"))
        assert errno_of(lambda: s.create(ROOT, "f")) == errno.EEXIST
        assert errno_of(lambda: s.create(ROOT, "x" * 256)) == errno.ENAMETOOLONG
        assert errno_of(lambda: s.lookup(ROOT, "x" * 256)) == errno.ENAMETOOLONG
        assert errno_of(lambda: s.create(f.id, "x")) == errno.ENOTDIR
        assert errno_of(lambda: s.create(ROOT, "fifo", stat.S_IFIFO | 0o644)) == errno.EPERM
        assert errno_of(lambda: s.link(d.id, ROOT, "hard")) == errno.EPERM  # a directory
        assert errno_of(lambda: s.link(f.id, ROOT, "e")) == errno.EEXIST
        assert errno_of(lambda: s.link(f.id, f.id, "x")) == errno.ENOTDIR
        assert errno_of(lambda: s.symlink(ROOT, "abs", "/etc/passwd")) == errno.EPERM
        assert errno_of(lambda: s.symlink(d.id, "esc", "../../x")) == errno.EPERM
        assert s.symlink(d.id, "ok", "../f").target == "../f"
        assert errno_of(lambda: s.rmdir(ROOT, "d")) == errno.ENOTEMPTY
        assert errno_of(lambda: s.rmdir(ROOT, "f")) == errno.ENOTDIR
        assert errno_of(lambda: s.unlink(ROOT, "e")) == errno.EISDIR
        assert errno_of(lambda: s.rename(ROOT, "d", d.id, "inside")) == errno.EINVAL
        assert errno_of(lambda: s.rename(ROOT, "f", ROOT, "e", RENAME_NOREPLACE)) == errno.EEXIST
        assert errno_of(lambda: s.rename(ROOT, "f", ROOT, "e")) == errno.EISDIR
        assert errno_of(lambda: s.rename(ROOT, "e", ROOT, "f")) == errno.ENOTDIR
        assert errno_of(lambda: s.rename(ROOT, "e", ROOT, "d")) == errno.ENOTEMPTY
        assert errno_of(lambda: s.rename(ROOT, "f", ROOT, "g", 7)) == errno.EINVAL
        assert errno_of(lambda: s.write(d.id, 0, b"x")) == errno.EISDIR
        assert errno_of(lambda: s.read(d.id, 0, 1)) == errno.EISDIR
        assert errno_of(lambda: s.getattr(999999)) == errno.ENOENT
        s.rename(ROOT, "f", ROOT, "e", RENAME_EXCHANGE)  # exchange a file and a directory
        assert s.lookup(ROOT, "e").id == f.id and s.lookup(ROOT, "f").id == e.id
        assert s.statfs().name_max == 255 and s.statfs().files >= 5


def test_unlinked_file_stays_usable_until_forget(lrepo, tmp_path):
    base_version(lrepo, tmp_path, files={"f": b"base content"})
    with open_area(lrepo, "animals") as s:
        f = s.lookup(ROOT, "f")
        s.write(f.id, 0, b"BASE")
        s.unlink(ROOT, "f")
        assert s.lookup(ROOT, "f") is None
        assert s.getattr(f.id).nlink == 0 and s.read(f.id, 0, 100) == b"BASE content"
        s.write(f.id, 12, b"!")
        assert s.read(f.id, 0, 100) == b"BASE content!"
        data_file = s._data_path(f.id)
        assert os.path.exists(data_file)
        s.forget(f.id)
        assert not os.path.exists(data_file) and errno_of(lambda: s.getattr(f.id)) == errno.ENOENT
        assert s.status() == [("deleted", "f")]


def test_hard_links(lrepo, tmp_path):
    """One node under two names: shared content and nlink while staged, kept across a reopen; sealed as
    separate entries sharing chunks."""
    base_version(lrepo, tmp_path, files={"f": b"base content", "d/x": b"x"})
    with open_area(lrepo, "animals") as s:
        f, d = s.lookup(ROOT, "f"), s.lookup(ROOT, "d")
        g = s.link(f.id, d.id, "g")  # a base file, not copied up by linking
        assert g.id == f.id and g.nlink == 2 and s.base_entry(f.id) is not None
        assert s.lookup(d.id, "g").id == f.id and s.getattr(f.id).nlink == 2
        s.write(g.id, 0, b"BASE")  # through either name: the one node is copied up
        assert s.read(s.lookup(ROOT, "f").id, 0, 100) == b"BASE content"
        n = s.create(ROOT, "n")
        s.write(n.id, 0, b"new bytes")
        s.link(n.id, ROOT, "m")
        s.link(n.id, d.id, "m2")
        assert s.getattr(n.id).nlink == 3
        s.rename(ROOT, "m", ROOT, "n")  # two names of one node: nothing happens
        assert s.lookup(ROOT, "m").id == s.lookup(ROOT, "n").id == n.id and s.getattr(n.id).nlink == 3
        s.unlink(ROOT, "n")  # the node's own name: it moves into another one's place
        assert s.getattr(n.id).nlink == 2 and s.path_of(n.id) in ("m", "d/m2")
        s.rename(d.id, "x", ROOT, "m")  # over a name: that name goes
        assert s.getattr(n.id).nlink == 1 and s.path_of(n.id) == "d/m2"
        assert s.read(n.id, 0, 100) == b"new bytes"
        s.link(n.id, ROOT, "again")
        s.unlink(ROOT, "f")
        assert s.getattr(f.id).nlink == 1 and s.path_of(f.id) == "d/g"
        s.link(f.id, ROOT, "f")
    with open_area(lrepo, "animals") as s:  # persisted
        f, again = s.lookup(ROOT, "f"), s.lookup(ROOT, "again")
        assert f.nlink == 2 and s.lookup(s.lookup(ROOT, "d").id, "g").id == f.id
        assert again.nlink == 2 and s.read(again.id, 0, 100) == b"new bytes"
        assert s.status() == [("added", "again"), ("added", "d/g"), ("added", "d/m2"), ("deleted", "d/x"),
                              ("modified", "f"), ("added", "m")]
        res = s.seal("links")
        assert s.getattr(s.lookup(ROOT, "f").id).nlink == 1  # a version has no hard links
    entries = {e.path: e for e in lrepo.entries(res.record)[1]}
    assert entries["f"].data == entries["d/g"].data and entries["again"].data == entries["d/m2"].data
    tree = version_tree(lrepo, "animals")
    assert tree["f"][2] == tree["d/g"][2] == b"BASE content" and tree["again"][2] == b"new bytes"


def test_hard_link_errnos_and_symlinks(lrepo, tmp_path):
    base_version(lrepo, tmp_path, files={"f": b"1"}, links={"l": "f"})
    with open_area(lrepo, "animals") as s:
        f, ln = s.lookup(ROOT, "f"), s.lookup(ROOT, "l")
        assert s.link(ln.id, ROOT, "l2").target == "f"  # a symlink itself (linkat without FOLLOW)
        s.unlink(ROOT, "f")
        assert errno_of(lambda: s.link(f.id, ROOT, "back")) == errno.ENOENT  # linkat of a deleted open file
        assert errno_of(lambda: s.link(ln.id, ROOT, "l2")) == errno.EEXIST
        s.freeze()
        assert errno_of(lambda: s.link(ln.id, ROOT, "l3")) == errno.EBUSY
        s.thaw()
        assert s.status() == [("deleted", "f"), ("added", "l2")]


def test_owners_and_atime(lrepo, tmp_path):
    """Owners (the creator's) and atime (apart from mtime) are kept while staged and across a reopen;
    base entries have none (the mount's user, atime = mtime); versions record neither."""
    base_version(lrepo, tmp_path, files={"f": b"1"})
    with open_area(lrepo, "animals") as s:
        f = s.lookup(ROOT, "f")
        assert (f.uid, f.gid, f.atime_ns) == (None, None, f.mtime_ns)
        root = s.getattr(ROOT)
        n = s.create(ROOT, "n", 0o644, owner=(1000, 1001))
        assert s.getattr(ROOT).atime_ns == root.atime_ns != s.getattr(ROOT).mtime_ns  # a new entry: mtime only
        d = s.mkdir(ROOT, "d", 0o2775, owner=(1000, 1002))
        assert (n.uid, n.gid, d.uid, d.gid) == (1000, 1001, 1000, 1002) and n.atime_ns == n.mtime_ns
        sub, inner = s.mkdir(d.id, "sub", 0o755, owner=(7, 7)), s.create(d.id, "x", 0o644, owner=(7, 7))
        assert (sub.gid, sub.mode, inner.gid, inner.mode) == (1002, 0o2755, 1002, 0o644)  # set-group-ID dir
        assert s.symlink(ROOT, "l", "n", owner=(5, 6)).uid == 5
        s.write(n.id, 0, b"abc")
        s.setattr(n.id, atime_ns=10**9, mtime_ns=2 * 10**9)
        assert (s.getattr(n.id).atime_ns, s.getattr(n.id).mtime_ns) == (10**9, 2 * 10**9)
        s.setattr(n.id, atime_ns=3 * 10**9)  # touch -a
        assert (s.getattr(n.id).atime_ns, s.getattr(n.id).mtime_ns) == (3 * 10**9, 2 * 10**9)
        s.write(n.id, 3, b"d")  # a write moves mtime, not atime
        assert s.getattr(n.id).atime_ns == 3 * 10**9 and s.getattr(n.id).mtime_ns != 2 * 10**9
        s.setattr(f.id, mtime_ns=5 * 10**9)  # touch -m of a base file: its atime stays where it was
        assert (s.getattr(f.id).atime_ns, s.getattr(f.id).mtime_ns) == (f.mtime_ns, 5 * 10**9)
        s.setattr(f.id, uid=0, gid=4)
        s.setattr(n.id, gid=9)
        assert (s.getattr(f.id).uid, s.getattr(f.id).gid, s.getattr(n.id).uid, s.getattr(n.id).gid) == (0, 4, 1000, 9)
    with open_area(lrepo, "animals") as s:
        n = s.lookup(ROOT, "n")
        assert (n.uid, n.gid, n.atime_ns) == (1000, 9, 3 * 10**9)
        s.seal("owners")
        n = s.lookup(ROOT, "n")
        assert (n.uid, n.gid, n.atime_ns) == (None, None, n.mtime_ns)


def test_area_of_an_older_layout_opens(lrepo, tmp_path):
    """An area written before owners, atimes and hard links were kept is upgraded when opened: its
    staged changes are intact and show as before (the mount's user, atime = mtime)."""
    base_version(lrepo, tmp_path, files={"f": b"base"})
    with open_area(lrepo, "animals") as s:
        s.write(s.create(ROOT, "n", owner=(1000, 1000)).id, 0, b"staged")
        s.mkdir(ROOT, "d")
        root = s._layout.root
        db_path = s._layout.db_path(s.generation)
    import sqlite3
    db = sqlite3.connect(db_path)
    db.execute("DROP INDEX links")
    for col in ("uid", "gid", "atime_ns", "nlink", "inode", "source", "chunks"):
        db.execute(f"ALTER TABLE nodes DROP COLUMN {col}")
    db.commit()
    db.close()
    with open_area(lrepo, "animals") as s:
        assert s._layout.root == root
        n = s.lookup(ROOT, "n")
        assert (n.uid, n.gid, n.atime_ns, n.nlink) == (None, None, n.mtime_ns, 1)
        assert s.read(n.id, 0, 100) == b"staged" and s.status() == [("added", "d"), ("added", "n")]
        s.link(n.id, ROOT, "m")  # and the new things work in it
        assert s.getattr(n.id).nlink == 2
        assert s.seal("upgraded").record.version == 1


def test_lazy_directory_renames_without_materializing(lrepo, tmp_path):
    files = {f"big/sub{i}/f{j}": f"{i}-{j}".encode() for i in range(5) for j in range(20)}
    base_version(lrepo, tmp_path, files=files)
    with open_area(lrepo, "animals") as s:
        s.mkdir(ROOT, "moved")
        nodes = lambda: s.statfs().files - s.statfs().files_free  # noqa: E731 (the staged nodes: the disk's free files cancel)
        before = nodes()
        s.rename(ROOT, "big", s.lookup(ROOT, "moved").id, "big")  # moved/ is made here: it becomes a row first
        assert nodes() == before  # and no child of big/ became a node
        res = s.seal("move")
    tree = version_tree(lrepo, "animals", res.record.version)
    assert {p: c for p, (k, _, c) in tree.items() if k == "file"} == {f"moved/{p}": d for p, d in files.items()}


def test_names_that_are_not_utf8_are_refused(lrepo, tmp_path):
    base_version(lrepo, tmp_path, files={"a": b"1"})
    name = os.fsdecode(b"caf\xe9")  # latin-1 bytes, surrogate-escaped as FUSE names are decoded
    with open_area(lrepo, "animals") as s:
        assert errno_of(lambda: s.create(ROOT, name)) == errno.EILSEQ
        assert errno_of(lambda: s.rename(ROOT, "a", ROOT, name)) == errno.EILSEQ
        assert s.lookup(ROOT, name) is None
        s.write(s.create(ROOT, "café").id, 0, b"utf-8 is fine")
        res = s.seal()
    _, entries = lrepo.entries(res.record)
    assert [e.path for e in entries] == ["a", "café"]


# --- persistence and crashes -----------------------------------------------------------------------


def test_changes_survive_reopen_and_seal(lrepo, tmp_path):
    base_version(lrepo, tmp_path)
    s = open_area(lrepo, "animals")
    images = s.lookup(ROOT, "images")
    s.write(s.create(images.id, "bird.png").id, 0, b"tweet")
    s.unlink(images.id, "dog.png")
    s.setattr(s.lookup(ROOT, "readme.txt").id, mode=0o755, mtime_ns=123)
    s.fsync(s.lookup(images.id, "bird.png").id)
    tree, status = staged_tree(s), s.status()
    s.close()
    s = open_area(lrepo, "animals")
    with pytest.raises(ArtfsError, match="another process"):
        open_area(lrepo, "animals")  # one owner at a time
    assert staged_tree(s) == tree and s.status() == status and s.base == 0
    assert s.lookup(ROOT, "readme.txt").mtime_ns == 123
    res = s.seal("after reopen")
    assert res.record.version == 1
    assert version_tree(lrepo, "animals") == tree
    s.close()


CHILD = textwrap.dedent("""
    import os, signal, sys
    from artfs.core.places import Places
    from artfs.core.repo import Repo
    from artfs.core.staging import StagingArea
    from artfs.storage.open import open_store
    store, cache, mode = sys.argv[1:4]
    repo = Repo(open_store(store), Places.under(cache))
    s = StagingArea.open(repo, "animals")
    images = s.lookup(1, "images")
    f = s.create(images.id, "bird.png")
    s.write(f.id, 0, b"tweet" * 1000)
    s.unlink(images.id, "dog.png")
    s.write(s.lookup(1, "readme.txt").id, 5, b" world")
    if mode == "publish":    # die after uploading packs and the manifest, before claiming the number
        import artfs.core.repo as r
        def die(*a, **k):
            os.kill(os.getpid(), signal.SIGKILL)
        r.Repo.publish = die
        s.seal("never")
    elif mode == "reset":    # die after publishing, before staging is reset
        s._reset = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        s.seal("published")
    os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.parametrize("mode", ["writing", "publish", "reset"])
def test_kill_9_keeps_staged_changes(lrepo, tmp_path, mode):
    base_version(lrepo, tmp_path)
    store = lrepo.store.uri
    proc = subprocess.run([sys.executable, "-c", CHILD, store, str(tmp_path / "cache"), mode], cwd=os.getcwd())
    assert proc.returncode == -signal.SIGKILL
    expect = {"images/bird.png": b"tweet" * 1000, "images/cat.png": b"cat" * 500, "readme.txt": b"hello world"}
    with open_area(lrepo, "animals") as s:
        assert s.base == 0
        assert {p: c for p, (k, _, c) in staged_tree(s).items() if k == "file"} == expect
        assert lrepo.version_numbers("animals") == ([0, 1] if mode == "reset" else [0])
        res = s.seal("again")
        if mode == "reset":  # the changes are in v1 already: merging them onto it gives v1 again
            assert res.record is None
        else:
            assert res.record.version == 1
        assert s.base == 1 and s.status() == []
    assert {p: c for p, (k, _, c) in version_tree(lrepo, "animals").items() if k == "file"} == expect


def test_failed_seal_leaves_staging_intact(lrepo, tmp_path, monkeypatch):
    base_version(lrepo, tmp_path)
    with open_area(lrepo, "animals") as s:
        s.write(s.create(ROOT, "new").id, 0, b"data")
        status = s.status()

        def down(*a, **k):
            raise ArtfsError("store down")

        monkeypatch.setattr(lrepo.store, "put", down)
        with pytest.raises(ArtfsError, match="store down"):
            s.seal()
        assert not s.frozen and s.status() == status and lrepo.version_numbers("animals") == [0]
        monkeypatch.undo()
        assert s.seal().record.version == 1


# --- status, discard, unchanged seals, new artifacts -----------------------------------------------


def test_status(lrepo, tmp_path):
    base_version(lrepo, tmp_path, files={"a": b"1", "d/b": b"2", "d/c": b"3", "x": b"4"})
    with open_area(lrepo, "animals") as s:
        assert s.status() == []
        s.write(s.lookup(ROOT, "a").id, 0, b"1")  # same bytes again: not modified
        d = s.lookup(ROOT, "d")
        s.rename(d.id, "b", d.id, "b2")
        s.setattr(s.lookup(ROOT, "x").id, mode=0o755)  # an exec bit is a change
        s.write(s.create(ROOT, "new").id, 0, b"n")
        assert s.status() == [("deleted", "d/b"), ("added", "d/b2"), ("added", "new"), ("modified", "x")]
        s.write(s.lookup(ROOT, "a").id, 0, b"2")  # a write after status was cached still counts
        assert ("modified", "a") in s.status()


def test_discard(lrepo, tmp_path):
    src = base_version(lrepo, tmp_path)
    with open_area(lrepo, "animals") as s:
        s.write(s.create(ROOT, "junk").id, 0, b"junk" * 10000)
        s.unlink(s.lookup(ROOT, "images").id, "dog.png")
        old_data = os.listdir(os.path.dirname(s._data_path(1)))
        assert old_data
        gen = s.generation
        s.discard()
        assert s.generation == gen + 1 and s.status() == [] and not s.dirty
        assert staged_tree(s) == snapshot(src)
        assert os.listdir(os.path.dirname(s._data_path(1))) == []
        assert s.lookup(ROOT, "images").id > max(int(n) for n in old_data)  # inode numbers are never reused


def test_seal_of_unchanged_tree_publishes_nothing(lrepo, tmp_path):
    base_version(lrepo, tmp_path)
    with open_area(lrepo, "animals") as s:
        assert s.seal().record is None
        f = s.lookup(ROOT, "readme.txt")
        s.write(f.id, 0, b"HELLO")
        s.write(f.id, 0, b"hello")  # back to the same content
        s.setattr(f.id, mtime_ns=5)
        res = s.seal()
        assert res.record is None and res.ref == "" and lrepo.version_numbers("animals") == [0]
        assert s.status() == [] and not s.dirty


def test_new_artifact(lrepo):
    with open_area(lrepo, "resnet") as s:
        assert s.base is None and s.listdir(ROOT) == [] and s.status() == []
        d = s.mkdir(ROOT, "weights")
        s.write(s.create(d.id, "w.bin").id, 0, b"\x00\x01" * 1000)
        s.mkdir(ROOT, "empty")
        assert s.status() == [("added", "empty"), ("added", "weights"), ("added", "weights/w.bin")]
        res = s.seal("first", type_="model", aliases=["best"], metadata={"acc": "0.9"})
        assert res.ref == "resnet:v0" and res.record.type == "model" and res.record.parent is None
        assert lrepo.aliases("resnet") == {"best": 0} and s.base == 0
    tree = version_tree(lrepo, "resnet")
    assert tree["empty"][0] == "dir" and tree["weights/w.bin"][2] == b"\x00\x01" * 1000


def test_fresh_staging_follows_latest(lrepo, tmp_path):
    base_version(lrepo, tmp_path, files={"a": b"1"})
    with open_area(lrepo, "animals") as s:
        other = tmp_path / "v1"
        write_tree(other, {"a": b"2"})
        commit_tree(lrepo, str(other), "animals")
        assert s.base == 0 and s.refresh() and s.base == 1
        assert s.read(s.lookup(ROOT, "a").id, 0, 10) == b"2"
        s.mkdir(ROOT, "staged")
        write_tree(other, {"a": b"3"})
        commit_tree(lrepo, str(other), "animals")
        assert not s.refresh() and s.base == 1  # staged changes keep their base; a seal merges


def test_symlink_escaping_after_rename_refuses_seal(lrepo, tmp_path):
    base_version(lrepo, tmp_path, files={"d/f": b"1"})
    with open_area(lrepo, "animals") as s:
        d = s.lookup(ROOT, "d")
        s.symlink(d.id, "up", "../d/f")
        s.rename(d.id, "up", ROOT, "up")  # now '../d/f' from the root: outside the tree
        with pytest.raises(InvalidName, match="up"):
            s.seal()
        assert not s.frozen and lrepo.version_numbers("animals") == [0]
        s.unlink(ROOT, "up")
        assert s.seal().record is None


def test_writes_are_refused_while_sealing(lrepo, tmp_path):
    base_version(lrepo, tmp_path, files={"a": b"1", "big": random.Random(5).randbytes(2 * MiB)})
    with open_area(lrepo, "animals") as s:
        f = s.create(ROOT, "new")
        s.write(f.id, 0, random.Random(6).randbytes(MiB))
        seen = []

        def progress(n):
            if not seen:
                assert s.frozen
                seen.append(errno_of(lambda: s.write(f.id, 0, b"x")))
                seen.append(errno_of(lambda: s.create(ROOT, "other")))
                seen.append(errno_of(lambda: s.discard()))
                seen.append(s.read(s.lookup(ROOT, "a").id, 0, 10))

        assert s.seal(progress=progress).record.version == 1
        assert seen == [errno.EBUSY, errno.EBUSY, errno.EBUSY, b"1"]
        assert not s.frozen


# --- concurrent seals: the three-way merge ---------------------------------------------------------


def two_areas(repo: Repo, store_uri: str, tmp_path):
    """Two machines (own caches) with staging areas on the same base."""
    other = fresh_repo(store_uri, tmp_path / "other-cache")
    return other, open_area(repo, "animals"), open_area(other, "animals")


def test_concurrent_seals_merge(repo, tmp_path, store_uri):
    base_version(repo, tmp_path, files={"x": b"x0", "y": b"y0", "d/z": b"z0", "gone": b"g"})
    other, a, b = two_areas(repo, store_uri, tmp_path)
    try:
        a.write(a.lookup(ROOT, "x").id, 0, b"x1")
        a.write(a.create(ROOT, "from-a").id, 0, b"A")
        b.write(b.lookup(ROOT, "y").id, 0, b"y1")
        b.unlink(ROOT, "gone")
        b.mkdir(b.lookup(ROOT, "d").id, "new-dir")
        assert a.seal("a").record.version == 1
        res = b.seal("b")
        assert res.record.version == 2 and res.record.parent == 0
        assert b.base == 2 and b.status() == []
        files = {p: c for p, (k, _, c) in version_tree(repo, "animals").items() if k == "file"}
        assert files == {"x": b"x1", "y": b"y1", "d/z": b"z0", "from-a": b"A"}
        assert version_tree(repo, "animals")["d/new-dir"][0] == "dir"
    finally:
        a.close()
        b.close()
        other.close()


def test_concurrent_conflicts_are_listed_then_forced(repo, tmp_path, store_uri):
    base_version(repo, tmp_path, files={"same": b"0", "both": b"0", "del": b"0", "dir/f": b"0", "ok": b"0"})
    other, a, b = two_areas(repo, store_uri, tmp_path)
    try:
        a.write(a.lookup(ROOT, "both").id, 0, b"A")
        a.write(a.lookup(ROOT, "same").id, 0, b"S")
        a.write(a.lookup(ROOT, "del").id, 0, b"A")
        a.mkdir(a.lookup(ROOT, "dir").id, "added-by-a")
        assert a.seal().record.version == 1
        b.write(b.lookup(ROOT, "both").id, 0, b"B")
        b.write(b.lookup(ROOT, "same").id, 0, b"S")  # the same change on both sides is no conflict
        b.unlink(ROOT, "del")
        d = b.lookup(ROOT, "dir")
        b.unlink(d.id, "f")
        b.rmdir(ROOT, "dir")  # a added inside the directory b deleted
        b.write(b.lookup(ROOT, "ok").id, 0, b"B")
        status = b.status()
        with pytest.raises(MergeConflict) as info:
            b.seal()
        assert info.value.paths == ["both", "del", "dir/added-by-a"]
        assert "both, del, dir/added-by-a" in str(info.value)
        assert b.status() == status and not b.frozen and repo.version_numbers("animals") == [0, 1]
        res = b.seal(force=True)
        assert res.record.version == 2
        tree = version_tree(repo, "animals")
        assert {p: c for p, (k, _, c) in tree.items()} == {"both": b"B", "same": b"S", "ok": b"B"}
    finally:
        a.close()
        b.close()
        other.close()


def test_merge_trees_keeps_a_tree():
    def f(path, content):  # the size says which content it is, in what the merge writes
        return Entry(path, FILE, 0o644, 1, content[0], b"", content_digest([content]))

    def d(path):
        return Entry(path, DIR, 0o755, 1, 0)

    def ln(path, target):
        return Entry(path, LINK, 0o777, 1, len(target), target.encode())

    base = [d("d"), f("d/x", b"A"), f("f", b"A"), ln("l", "t"), f("m", b"A")]
    theirs = [d("d"), f("d/x", b"A"), f("d/y", b"N"), f("f", b"B"), ln("l", "t"), f("m", b"T"), f("n", b"S")]
    ours = [f("f", b"A"), f("g", b"G"), ln("l", "u"), d("m"), f("m/z", b"O"), f("n", b"S")]

    class Recorder:  # stands in for a ManifestWriter: what the merge writes, in order
        def __init__(self):
            self.out = []

        def add(self, e):
            self.out.append((e.path, e.kind, e.data))

        def add_file(self, path, mode, mtime_ns, size, refs):
            self.out.append((path, FILE, bytes([size])))

    def run(force):
        writer = Recorder()
        conflicts = merge_trees(([], iter(base)), ([], iter(theirs)), ([], iter(ours)), writer, force)
        return conflicts, writer.out

    # d/y: added by them inside the directory we deleted; m: they changed the file we replaced by a dir
    conflicts, _ = run(False)
    assert conflicts == ["d/y", "m"]
    conflicts, tree = run(True)
    assert conflicts == ["d/y", "m"]
    assert tree == [("f", FILE, b"B"), ("g", FILE, b"G"), ("l", LINK, b"u"), ("m", DIR, b""), ("m/z", FILE, b"O"),
                    ("n", FILE, b"S")]


def test_merge_retries_when_beaten_to_the_number(lrepo, tmp_path, monkeypatch):
    base_version(lrepo, tmp_path, files={"a": b"0", "b": b"0"})
    with open_area(lrepo, "animals") as s:
        s.write(s.lookup(ROOT, "a").id, 0, b"1")
        real_publish = Repo.publish
        raced = []

        def publish(self, name, *args, **kw):  # someone else publishes right before our first claim
            if not raced:
                raced.append(1)
                write_tree(tmp_path / "other", {"a": b"0", "b": b"2"})
                commit_tree(self, str(tmp_path / "other"), name)
            return real_publish(self, name, *args, **kw)

        monkeypatch.setattr(Repo, "publish", publish)
        res = s.seal()
        assert res.record.version == 2
    files = {p: c for p, (k, _, c) in version_tree(lrepo, "animals").items() if k == "file"}
    assert files == {"a": b"1", "b": b"2"}


# --- big files and upload economy ------------------------------------------------------------------


def test_large_file_written_in_pieces(lrepo):
    piece = random.Random(9).randbytes(MiB)
    with open_area(lrepo, "big") as s:
        f = s.create(ROOT, "big.bin")
        tracemalloc.start()
        for i in range(64):
            s.write(f.id, i * MiB, piece[i:] + piece[:i])
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < 8 * MiB  # written through, never accumulated
        assert s.getattr(f.id).size == 64 * MiB
        assert s.read(f.id, 10 * MiB - 3, 6) == (piece[9:] + piece[:9])[-3:] + (piece[10:] + piece[:10])[:3]
        res = s.seal()
        assert res.bytes == 64 * MiB
    rec = lrepo.resolve("big")
    out = tempfile.mkdtemp()
    try:
        export_version(lrepo, rec, os.path.join(out, "v"))
        with open(os.path.join(out, "v", "big.bin"), "rb") as fh:
            for i in range(64):
                assert fh.read(MiB) == piece[i:] + piece[:i]
    finally:
        shutil.rmtree(out)


def test_seal_uploads_only_new_content(repo, tmp_path):
    base_version(repo, tmp_path, files={"big.bin": random.Random(4).randbytes(24 * MiB), "small.txt": b"v0"})
    with open_area(repo, "animals") as s:
        s.write(s.lookup(ROOT, "small.txt").id, 0, b"v1")
        res = s.seal()
        assert res.record.version == 1
        assert res.uploaded_bytes < 64 * 1024 and res.new_chunks == 1 and res.reused_chunks >= 3
        assert not os.listdir(os.path.dirname(s._data_path(1)))  # the big file was never copied up


def test_concurrent_readers_and_writers(lrepo, tmp_path):
    base_version(lrepo, tmp_path, files={f"f{i}": random.Random(i).randbytes(300_000) for i in range(8)})
    with open_area(lrepo, "animals") as s:
        ids = [s.lookup(ROOT, f"f{i}").id for i in range(8)]
        errors = []

        def work(k):
            try:
                rnd = random.Random(k)
                for _ in range(50):
                    n = rnd.choice(ids)
                    if rnd.random() < 0.5:
                        s.write(n, rnd.randrange(300_000), b"w" * rnd.randrange(1, 5000))
                    else:
                        s.read(n, rnd.randrange(300_000), 4096)
                    if rnd.random() < 0.05:
                        s.status()
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        tree = staged_tree(s)
        res = s.seal()
        assert version_tree(lrepo, "animals", res.record.version) == tree
