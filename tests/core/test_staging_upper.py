"""Directories made in staging as real directories (core/staging/upper.py): what is made in them, a
restart, the demotion into rows when something crosses, and a crash in the middle of one."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from artfs.core.manifest import DIR
from artfs.core.staging import StagingArea
from artfs.core.staging.nodes import StagedNode
from tests.core.test_staging import base_version, version_tree

ROOT = 1


def _tree_in_new_dir(s: StagingArea) -> dict[str, int]:
    """new/{a, sub/b, sub/deep/c (0o755), link -> sub/b, twin (hard link of a), empty}: their node ids."""
    new = s.mkdir(ROOT, "new", 0o750, (0, 0))
    sub = s.mkdir(new.id, "sub", 0o755, (0, 0))
    deep = s.mkdir(sub.id, "deep", 0o700, (0, 0))
    a = s.create(new.id, "a", 0o644, (0, 0))
    s.write(a.id, 0, b"alpha" * 1000)
    b = s.create(sub.id, "b", 0o600, (0, 0))
    s.write(b.id, 0, b"bravo")
    c = s.create(deep.id, "c", 0o755, (0, 0))
    s.write(c.id, 0, os.urandom(300_000))
    s.setattr(c.id, mtime_ns=1_600_000_000_000_000_000)
    s.symlink(new.id, "link", "sub/b", (0, 0))
    s.link(a.id, new.id, "twin")
    s.create(new.id, "empty", 0o644, (0, 0))
    return {"new": new.id, "sub": sub.id, "deep": deep.id, "a": a.id, "b": b.id, "c": c.id}


def _expected(s: StagingArea, ids: dict[str, int]) -> dict[str, tuple]:
    return {
        "new": ("dir", 0o750, None), "new/sub": ("dir", 0o755, None), "new/sub/deep": ("dir", 0o700, None),
        "new/a": ("file", 0o644, b"alpha" * 1000), "new/twin": ("file", 0o644, b"alpha" * 1000),
        "new/sub/b": ("file", 0o600, b"bravo"), "new/sub/deep/c": ("file", 0o755, s.read(ids["c"], 0, 1 << 20)),
        "new/link": ("symlink", 0o777, "sub/b"), "new/empty": ("file", 0o644, b""),
    }


def test_a_new_directory_lives_on_disk_and_seals_whole(lrepo, tmp_path):
    base_version(lrepo, tmp_path)
    with StagingArea.open(lrepo, "animals") as s:
        ids = _tree_in_new_dir(s)
        expected = _expected(s, ids)
        assert s.lookup(ids["new"], "twin").id == ids["a"]  # two names, one node
        assert s.getattr(ids["a"]).nlink == 2
        assert s.getattr(ids["c"]).mtime_ns == 1_600_000_000_000_000_000
        assert [n for n, _ in s.listdir(ids["new"])] == ["a", "empty", "link", "sub", "twin"]
        assert s.path_of(ids["c"]) == "new/sub/deep/c"
        assert ("added", "new/sub/deep/c") in s.status()
        v = s.seal("upper").record.version
    tree = version_tree(lrepo, "animals", v)
    assert {p: t for p, t in tree.items() if p.startswith("new")} == expected


def test_what_a_new_directory_holds_survives_a_restart(lrepo, tmp_path):
    base_version(lrepo, tmp_path)
    with StagingArea.open(lrepo, "animals") as s:
        ids = _tree_in_new_dir(s)
        expected = _expected(s, ids)
    with StagingArea.open(lrepo, "animals") as s:  # a new process: nodes are found again by name
        new = s.lookup(ROOT, "new")
        assert new is not None and new.id == ids["new"]  # a root is a row: same id
        sub = s.lookup(new.id, "sub")
        assert sub is not None and s.lookup(sub.id, "b") is not None
        v = s.seal("after restart").record.version
    assert {p: t for p, t in version_tree(lrepo, "animals", v).items() if p.startswith("new")} == expected


@pytest.mark.parametrize("how", ["base dir in", "file out", "link out", "dir out", "reference"])
def test_crossing_turns_the_tree_into_rows_keeping_ids(lrepo, tmp_path, how):
    base_version(lrepo, tmp_path)
    with StagingArea.open(lrepo, "animals") as s:
        ids = _tree_in_new_dir(s)
        expected = _expected(s, ids)
        before = {k: s.getattr(i) for k, i in ids.items()}
        if how == "base dir in":  # a lazy directory of the version into a new one
            s.rename(ROOT, "images", ids["sub"], "images")
            expected = {**expected, "new/sub/images": ("dir", 0o755, None)}
        elif how == "file out":
            s.rename(ids["sub"], "b", ROOT, "b")
            expected = {k: v for k, v in expected.items() if k != "new/sub/b"}
        elif how == "link out":
            s.link(ids["c"], ROOT, "c-again")
        elif how == "dir out":
            s.rename(ids["new"], "sub", ROOT, "sub")
            expected = {k.replace("new/sub", "sub"): v for k, v in expected.items()}
        else:
            s.add_references([("new/sub/ref.bin", "file://" + str(tmp_path / "nowhere"), b"", 0, 0)], check_only=True)
        for k, i in ids.items():  # every node kept its id and what the crossing did not change
            was, now = before[k], s.getattr(i)
            assert (now.id, now.kind, now.mode, now.size, now.uid, now.gid) == \
                (was.id, was.kind, was.mode, was.size, was.uid, was.gid), k
            if now.kind != DIR:
                assert now.mtime_ns == was.mtime_ns, k
        s.write(ids["a"], 0, b"ALPHA")  # and its bytes: both names, one node still
        assert s.read(s.lookup(ids["new"], "twin").id, 0, 5) == b"ALPHA"
        v = s.seal(how).record.version
    tree = version_tree(lrepo, "animals", v)
    expected["new/a"] = expected["new/twin"] = ("file", 0o644, b"ALPHA" + b"alpha" * 999)
    if how == "file out":
        expected["b"] = ("file", 0o600, b"bravo")
    if how == "link out":
        expected["c-again"] = expected["new/sub/deep/c"]
    got = {p: t for p, t in tree.items() if p.split("/")[0] in ("new", "b", "sub", "c-again")}
    if how == "base dir in":
        got = {p: t for p, t in got.items() if not p.startswith("new/sub/images/")}
    assert got == expected


def test_a_crash_in_the_middle_of_a_demotion_is_finished_at_open(lrepo, tmp_path, monkeypatch):
    base_version(lrepo, tmp_path)
    s = StagingArea.open(lrepo, "animals")
    ids = _tree_in_new_dir(s)
    expected = _expected(s, ids)
    real_rename, calls = os.rename, []

    def dies_on_the_second(src, dst, *a, **k):  # the daemon dies after the rows, one file moved
        calls.append(src)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real_rename(src, dst, *a, **k)

    monkeypatch.setattr(os, "rename", dies_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        s.rename(ROOT, "images", ids["new"], "images")
    monkeypatch.setattr(os, "rename", real_rename)
    s.close()  # the process ends here: nothing of a demotion is finished by closing
    with StagingArea.open(lrepo, "animals") as s2:
        v = s2.seal("after the crash").record.version
    tree = version_tree(lrepo, "animals", v)
    assert {p: t for p, t in tree.items() if p.startswith("new") and not p.startswith("new/images")} == expected


def test_an_unlinked_open_file_keeps_its_bytes_until_forgotten(lrepo, tmp_path):
    base_version(lrepo, tmp_path)
    with StagingArea.open(lrepo, "animals") as s:
        new = s.mkdir(ROOT, "new", 0o755, (0, 0))
        f = s.create(new.id, "f", 0o644, (0, 0))
        s.write(f.id, 0, b"still here")
        s.unlink(new.id, "f")
        assert s.lookup(new.id, "f") is None
        assert s.getattr(f.id).nlink == 0
        assert s.read(f.id, 0, 100) == b"still here"
        s.write(f.id, 10, b"!")
        s.forget(f.id)
        with pytest.raises(OSError) as e:
            s.getattr(f.id)
        assert e.value.errno == errno.ENOENT


def test_owners_and_set_group_id_directories(lrepo, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("giving files to other users takes root")
    base_version(lrepo, tmp_path)
    with StagingArea.open(lrepo, "animals") as s:
        shared = s.mkdir(ROOT, "shared", 0o2775, (1000, 4242))
        assert (s.getattr(shared.id).uid, s.getattr(shared.id).gid) == (1000, 4242)
        assert s.getattr(shared.id).mode & stat.S_ISGID
        f = s.create(shared.id, "f", 0o644, (1001, 1001))
        d = s.mkdir(shared.id, "d", 0o755, (1001, 1001))
        assert (f.uid, f.gid) == (1001, 4242)  # the directory's group, as on Linux filesystems
        assert (d.uid, d.gid) == (1001, 4242) and d.mode & stat.S_ISGID


def test_a_crossing_takes_along_the_new_directories_a_file_is_hard_linked_into(lrepo, tmp_path):
    """one/f is also two/f and three/sub/f; three/sub/g is four/g. Moving a base directory into one/
    makes one/ rows, and two/, three/ and four/ with it (the table keeps a node's names together);
    five/, linked to none, stays a directory on disk. Ids, contents and the shared node survive."""
    base_version(lrepo, tmp_path)
    with StagingArea.open(lrepo, "animals") as s:
        one, two, three, four, five = (s.mkdir(ROOT, n, 0o755, (0, 0)) for n in ("one", "two", "three", "four",
                                                                                  "five"))
        sub = s.mkdir(three.id, "sub", 0o700, (0, 0))
        f = s.create(one.id, "f", 0o644, (0, 0))
        s.write(f.id, 0, b"shared")
        s.link(f.id, two.id, "f")  # upper to upper: the disk's own link
        s.link(f.id, sub.id, "f")
        g = s.create(sub.id, "g", 0o600, (0, 0))
        s.write(g.id, 0, b"gee")
        s.link(g.id, four.id, "g")
        s.create(five.id, "alone", 0o644, (0, 0))
        s.rename(ROOT, "images", one.id, "images")
        roots = s._upper.roots
        assert {one.id, two.id, three.id, four.id} & roots == set() and five.id in roots
        assert s.lookup(one.id, "images") is not None and s.lookup(ROOT, "images") is None
        shared = [s.lookup(d, "f") for d in (one.id, two.id, sub.id)]
        assert {n.id for n in shared if n is not None} == {f.id} and s.getattr(f.id).nlink == 3
        s.write(f.id, 0, b"SHARED")  # one node: every name sees it
        assert s.read(s.lookup(two.id, "f").id, 0, 10) == b"SHARED"
        assert s.lookup(four.id, "g").id == g.id and s.getattr(sub.id).mode == 0o700
        v = s.seal("crossed").record.version
    tree = version_tree(lrepo, "animals", v)
    for path in ("one/f", "two/f", "three/sub/f"):
        assert tree[path] == ("file", 0o644, b"SHARED")
    assert tree["four/g"] == tree["three/sub/g"] == ("file", 0o600, b"gee")
    assert tree["one/images/dog.png"] == ("file", 0o644, b"dog" * 1000)
    assert tree["five/alone"] == ("file", 0o644, b"")


def test_what_a_crash_left_of_a_root_is_cleaned_at_open(lrepo, tmp_path):
    base_version(lrepo, tmp_path)
    with StagingArea.open(lrepo, "animals") as s:
        new = s.mkdir(ROOT, "new", 0o755, (0, 0))
        upper = os.path.join(s._layout.upper_dir(s.generation))
    os.mkdir(os.path.join(upper, "999999"))  # a mkdir whose transaction never committed
    os.rmdir(os.path.join(upper, str(new.id)))  # a root's directory gone
    with StagingArea.open(lrepo, "animals") as s:
        assert not os.path.exists(os.path.join(upper, "999999"))
        assert s.listdir(new.id) == []
        s.create(new.id, "f", 0o644, (0, 0))


def test_a_forgotten_node_is_found_again_by_name_and_nothing_is_kept_of_it(lrepo, tmp_path):
    base_version(lrepo, tmp_path)
    with StagingArea.open(lrepo, "animals") as s:
        new = s.mkdir(ROOT, "new", 0o755, (0, 0))
        sub = s.mkdir(new.id, "sub", 0o755, (0, 0))
        made = []
        for i in range(50):
            f = s.create(sub.id, f"f{i}", 0o644, (0, 0))
            s.write(f.id, 0, f"file {i}".encode())
            made.append(f.id)
        s.link(made[0], new.id, "twin")
        for node_id in [*made, sub.id]:  # the kernel forgets them (children before their directory)
            s.forget(node_id)
        assert len(s._upper._names) <= 1  # only what the kernel still holds: new/twin's node went too
        sub2 = s.lookup(new.id, "sub")
        assert sub2 is not None and sub2.id != sub.id  # a new id: the old one is gone for good
        f0 = s.lookup(sub2.id, "f0")
        twin = s.lookup(new.id, "twin")
        assert f0 is not None and twin is not None and f0.id == twin.id and f0.nlink == 2
        assert s.read(f0.id, 0, 100) == b"file 0"
        with pytest.raises(OSError) as e:
            s.getattr(made[1])
        assert e.value.errno == errno.ENOENT


def test_reading_and_listing_keep_atimes_as_the_table_does(lrepo, tmp_path):
    """The local filesystem (relatime) would move an atime at or below mtime on a read; staging is noatime."""
    base_version(lrepo, tmp_path)
    with StagingArea.open(lrepo, "animals") as s:
        new = s.mkdir(ROOT, "new", 0o755, (0, 0))
        f = s.create(new.id, "f", 0o644, (0, 0))
        s.write(f.id, 0, b"bytes")
        link = s.symlink(new.id, "l", "f", (0, 0))
        for node in (f, link, new):
            s.setattr(node.id, atime_ns=1)
        s.read(f.id, 0, 10)
        s.listdir(new.id)
        s.readlink(link.id)
        s.lookup(new.id, "l")
        s.status()
        assert [s.getattr(n.id).atime_ns for n in (f, link, new)] == [1, 1, 1]


def test_setattr_on_each_kind_by_descriptor_and_by_path(lrepo, tmp_path):
    """A file just made is changed through its descriptor; a directory, a symlink (never followed) and,
    after a restart, a file are changed by path; a time not given keeps its value."""
    base_version(lrepo, tmp_path)
    with StagingArea.open(lrepo, "animals") as s:
        new = s.mkdir(ROOT, "new", 0o755, (0, 0))
        f = s.create(new.id, "f", 0o644, (0, 0))
        s.write(f.id, 0, b"0123456789")
        link = s.symlink(new.id, "l", "f", (0, 0))
        sub = s.mkdir(new.id, "sub", 0o755, (0, 0))
        got = s.setattr(f.id, mode=0o600, size=4, mtime_ns=5_000_000_000)
        assert (got.mode, got.size, got.mtime_ns) == (0o600, 4, 5_000_000_000)
        got = s.setattr(f.id, atime_ns=7)
        assert (got.atime_ns, got.mtime_ns) == (7, 5_000_000_000)
        for node, code in ((sub, errno.EISDIR), (link, errno.EINVAL)):
            with pytest.raises(OSError) as e:
                s.setattr(node.id, size=0)
            assert e.value.errno == code
        got = s.setattr(sub.id, mode=0o700, mtime_ns=9)
        assert (got.mode, got.mtime_ns, got.kind) == (0o700, 9, DIR)
        got = s.setattr(link.id, mtime_ns=11, mode=0o600)
        assert (got.mtime_ns, got.mode, got.target) == (11, 0o777, "f")
        if os.geteuid() == 0:
            got = s.setattr(link.id, uid=1234, gid=4321)
            assert (got.uid, got.gid) == (1234, 4321)
        got = s.getattr(f.id)
        assert (got.mtime_ns, got.mode, got.uid, got.gid) == (5_000_000_000, 0o600, 0, 0)
        new_id = new.id
    with StagingArea.open(lrepo, "animals") as s:  # a new process: no descriptor is open
        f2 = s.lookup(new_id, "f")
        assert f2 is not None
        got = s.setattr(f2.id, mode=0o640, atime_ns=3)
        assert (got.mode, got.atime_ns, got.mtime_ns, got.size) == (0o640, 3, 5_000_000_000, 4)
        assert s.read(f2.id, 0, 10) == b"0123"


def test_a_walk_goes_on_when_the_kernel_forgets_a_directory_under_it(lrepo, tmp_path):
    """The kernel may forget any inode it holds no reference to, a directory being walked by a seal
    included: the walk finds its way by disk paths, not by the ids the kernel was given."""
    base_version(lrepo, tmp_path)
    with StagingArea.open(lrepo, "animals") as s:
        new = s.mkdir(ROOT, "new", 0o755, (0, 0))
        sub = s.mkdir(new.id, "sub", 0o755, (0, 0))
        deep = s.mkdir(sub.id, "deep", 0o755, (0, 0))
        for parent, name in ((sub, "a"), (deep, "b"), (new, "z")):
            f = s.create(parent.id, name, 0o644, (0, 0))
            s.write(f.id, 0, name.encode() * 3)
            s.forget(f.id)
        def content(data_id: int | None) -> bytes | None:
            return None if data_id is None else open(s.data_path(data_id), "rb").read()

        expected = [(e.path, content(d)) for e, d in s.walk()]
        got = []
        for e, data_id in s.walk():
            if e.path == "new/sub":
                s.forget(deep.id)
                s.forget(sub.id)
            got.append((e.path, content(data_id)))
        assert got == expected
        assert [p for p, _ in got if p.startswith("new")] == ["new", "new/sub", "new/sub/a", "new/sub/deep",
                                                               "new/sub/deep/b", "new/z"]
        v = s.seal("after forgets").record.version
    tree = version_tree(lrepo, "animals", v)
    assert tree["new/sub/deep/b"] == ("file", 0o644, b"bbb")


def _remade_images(s: StagingArea) -> StagedNode:
    """The base's images/ emptied, removed and made again: an upper root where a base directory was."""
    images = s.lookup(ROOT, "images")
    assert images is not None
    for name in ("dog.png", "cat.png"):
        s.unlink(images.id, name)
    s.rmdir(ROOT, "images")
    return s.mkdir(ROOT, "images", 0o755, (0, 0))


def test_status_compares_a_remade_directory_by_content_and_hashes_a_file_once_per_change(
        lrepo, tmp_path, monkeypatch):
    """A directory of the base removed and made again is an upper tree: status compares its files with
    the base's by digest, remembers a digest until the file changes, and keeps no node of the walk."""
    from artfs.core.staging import upper

    base_version(lrepo, tmp_path)
    with StagingArea.open(lrepo, "animals") as s:
        again = _remade_images(s)
        made = {}
        for name, data in (("dog.png", b"dog" * 1000), ("cat.png", b"kitten")):
            node = s.create(again.id, name, 0o644, (0, 0))
            s.write(node.id, 0, data)
            s.forget(node.id)  # the kernel let go of it
            made[name] = node.id
        hashed: list[str] = []
        real = upper.file_digest
        monkeypatch.setattr(upper, "file_digest", lambda path: hashed.append(path) or real(path))
        assert s.status() == [("modified", "images/cat.png")]
        assert len(hashed) == 2
        assert s.status() == [("modified", "images/cat.png")]
        assert len(hashed) == 2  # remembered
        assert not any(s._upper.below(n) for n in made.values())  # the walk registered nothing
        cat = s.lookup(again.id, "cat.png")
        assert cat is not None
        s.truncate(cat.id, 0)
        s.write(cat.id, 0, b"cat" * 500)
        assert s.status() == []
        assert len(hashed) == 3  # only the changed file again


def test_a_write_forgets_a_remembered_digest_even_when_the_clock_did_not_move(lrepo, tmp_path, monkeypatch):
    """A disk's coarse clock can leave ctime, mtime and size as they were after a write: the digest
    remembered for the file goes with the write, not with the stamp alone."""
    from artfs.core.staging import upper

    base_version(lrepo, tmp_path)
    monkeypatch.setattr(upper, "_stamp", lambda st: bytes(upper._STAMP))  # a clock that never moves
    with StagingArea.open(lrepo, "animals") as s:
        again = _remade_images(s)
        dog = s.create(again.id, "dog.png", 0o644, (0, 0))
        s.write(dog.id, 0, b"dog" * 1000)
        assert s.status() == [("deleted", "images/cat.png")]
        s.write(dog.id, 0, b"DOG")  # same size
        assert s.status() == [("deleted", "images/cat.png"), ("modified", "images/dog.png")]
        s.truncate(dog.id, 0)
        s.write(dog.id, 0, b"dog" * 1000)
        assert s.status() == [("deleted", "images/cat.png")]
