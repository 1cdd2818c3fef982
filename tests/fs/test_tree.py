"""The tree and the catalog without FUSE: lookups, stable inodes, attributes, and what a poll invalidates."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import trio

from artfs.core.catalog import ArtifactState, scan
from artfs.core.commit import commit_tree
from artfs.core.places import Places
from artfs.core.repo import Repo
from artfs.fs.tree import ROOT, AliasNode, EntryNode, Tree, VersionNode
from artfs.storage.open import open_store

ATTRS = ("st_ino", "st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks", "st_blksize", "st_atime_ns",
         "st_mtime_ns", "st_ctime_ns", "entry_timeout", "attr_timeout")


@pytest.fixture
def repo(tmp_path: Path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f.txt").write_text("f\n")
    (src / "top.txt").write_text("top\n")
    r = Repo(open_store(str(tmp_path / "store")), Places.under(str(tmp_path / "cache")))
    commit_tree(r, str(src), "animals", message="one")
    (src / "top.txt").write_text("top 2\n")
    commit_tree(r, str(src), "animals", aliases=("best",))
    r.set_alias("animals", "best", 0)  # moved back
    yield r
    r.close()


def test_scan_reads_numbers_and_aliases(repo, monkeypatch):
    catalog = scan(repo)
    state = catalog["animals"]
    assert list(catalog) == ["animals"] and isinstance(state, ArtifactState)
    assert (state.numbers, state.aliases, state.alias_seqs) == ((0, 1), {"best": 0}, (0, 1))
    assert state.links() == {"latest": 1, "best": 0}
    monkeypatch.setattr(repo, "alias_log", lambda *a, **k: pytest.fail("alias log re-read though unchanged"))
    assert scan(repo, catalog) == catalog


def test_lookups_attributes_and_stable_inodes(repo):
    tree = Tree(repo, scan(repo))

    async def main() -> None:
        art = await tree.lookup(tree.root, "animals")
        assert art is not None and await tree.lookup(tree.root, "plants") is None
        v0 = await tree.lookup(art, "v0")
        assert isinstance(v0, VersionNode) and v0.record is not None
        assert await tree.lookup(art, "v2") is None
        latest = await tree.lookup(art, "latest")
        assert isinstance(latest, AliasNode) and tree.readlink(latest) == b"v1"
        d = await tree.lookup(v0, "d")
        f = await tree.lookup(d, "f.txt")
        assert isinstance(f, EntryNode) and f.path == "d/f.txt"
        assert (await tree.lookup(d, "f.txt")) is f  # same inode every time
        assert tree.parent_of(f) is d and tree.parent_of(d) is v0 and tree.parent_of(v0) is art
        a = tree.attrs(f)
        assert stat.S_ISREG(a.st_mode) and a.st_size == 2 and a.entry_timeout > 3600
        assert stat.S_ISLNK(tree.attrs(latest).st_mode) and tree.attrs(latest).attr_timeout <= 1
        assert tree.attrs(art).st_nlink == 5  # ., .., v0, v1, staging
        assert tree.negative(v0) is not None and tree.negative(art) is None
        assert [row[0] for row in tree.list_page(v0, None, 10)] == [b"d", b"top.txt"]
        assert [row[0] for row in tree.list_page(v0, "d", 10)] == [b"top.txt"]
        listed = [tree.row_attrs(v0).fill(row) for row in tree.list_page(v0, None, 10)]
        assert listed[0].st_ino == d.ino and stat.S_ISDIR(listed[0].st_mode)  # one object, refilled per row
        top = await tree.lookup(v0, "top.txt")
        filled = tree.row_attrs(v0).fill(tree.list_page(v0, None, 10)[1])
        expect = tree.attrs(top)
        assert [getattr(filled, k) for k in ATTRS] == [getattr(expect, k) for k in ATTRS]
        assert [name for name, _ in tree.list_small(art)] == ["v0", "v1", "best", "latest"]
        x = tree.xattrs(f)
        assert x["user.artfs.ref"] == b"animals:v0" and x["user.artfs.message"] == b"one"
        assert x["user.artfs.store"] == repo.store.uri.encode()

    trio.run(main)


def test_apply_names_what_the_kernel_must_forget(repo):
    old = {"animals": ArtifactState((0,), {}, ())}
    tree = Tree(repo, old)
    art = tree.artifact_node("animals")  # as if the kernel had looked these up
    latest = tree.alias_node("animals", "latest")
    new = {"animals": ArtifactState((0, 1), {"best": 0}, (0,)), "model": ArtifactState((0,), {}, ())}
    stale, changes = tree.apply(new)
    assert ("entry", ROOT, "model") in stale and ("inode", ROOT, "") in stale
    assert ("entry", art.ino, "v1") in stale
    assert ("entry", art.ino, "latest") in stale and ("inode", latest.ino, "") in stale
    assert ("entry", art.ino, "best") in stale
    assert changes == ["animals: new v1", "animals: best -> v0", "animals: latest -> v1", "model: new artifact"]
    assert tree.apply(new) == ([], [])
