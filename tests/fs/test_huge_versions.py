"""Huge versions: inode numbers come from entry codes (block, position), so the tree keeps only recently used
entry nodes; codes agree between the manifest's blocks and the index, evicted nodes come back with the
same inode, and `find` through a mount sees the same names and inodes while the index builds and after."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pyfuse3
import pytest
import trio

from artfs.core.catalog import scan
from artfs.core.commit import Committer
from artfs.core.manifest import DIR, FILE, Entry
from artfs.core.manifest_file import ManifestFile
from artfs.fs import tree as tree_mod
from artfs.fs.tree import EntryNode, Node, Tree, VersionNode
from tests.support.repos import commit, fresh_repo

DIRS, PER_DIR = 20, 1000  # 20,020 entries: ~40 manifest blocks


@pytest.fixture
def huge(local_store_uri: str, tmp_path: Path) -> str:
    """`huge:v0`: DIRS folders of PER_DIR files, all sharing the one stored chunk of `seed:v0` (fast)."""
    src = tmp_path / "seed"
    src.mkdir()
    (src / "x.txt").write_bytes(b"hello\n")
    seed = commit(local_store_uri, src, "seed", tmp_path / "writer-cache")
    repo = fresh_repo(local_store_uri, tmp_path / "writer-cache")
    try:
        header, entries = repo.entries(seed)
        (one,) = [e for e in entries if e.kind == FILE]
        c = Committer(repo, "huge")
        for d in range(DIRS):
            c.add_dir(f"d{d:02d}", 0o755, 0)
            for i in range(PER_DIR):
                c.add_existing(Entry(f"d{d:02d}/f{i:04d}", FILE, 0o644, 0, one.size, one.data, one.digest),
                               header.packs)
        c.publish()
    finally:
        repo.close()
    return local_store_uri


def test_codes_agree_between_blocks_and_index(huge, tmp_path):
    repo = fresh_repo(huge, tmp_path / "reader-cache")
    try:
        rec = repo.version("huge", 0)
        repo.ensure_index(rec)
        mid = rec.manifest
        mf = ManifestFile(repo.manifest_file(mid), mid)
        assert len(mf.header.blocks) > 10
        root = list(mf.children_coded(""))
        assert [(c, e.path) for c, e in root] == [(c, e.path) for c, e in repo.index.listdir_coded(mid, "")]
        for _, d in root:
            from_blocks = [(c, e.path) for c, e in mf.children_coded(d.path)]
            assert from_blocks == [(c, e.path) for c, e in repo.index.listdir_coded(mid, d.path)]
            assert len(from_blocks) == PER_DIR
            later = [(c, e.path) for c, e in repo.index.listdir_coded(mid, d.path, "f0500", 10)]
            assert later == from_blocks[501:511]
            for code, path in from_blocks[::111]:
                assert mf.entry_at(code).path == path
                assert mf.lookup_coded(path)[0] == code == repo.index.lookup_coded(mid, path)[0]
        assert mf.entry_at(len(mf.header.blocks) << 16) is None and mf.lookup_coded("nope") is None
        mf.close()
    finally:
        repo.close()


def test_evicted_entry_nodes_keep_their_inodes(huge, tmp_path, monkeypatch):
    monkeypatch.setattr(tree_mod, "RECENT_ENTRIES", 50)
    repo = fresh_repo(huge, tmp_path / "reader-cache")
    tree = Tree(repo, scan(repo))

    async def main() -> None:
        art = await tree.lookup(tree.root, "huge")
        v0 = await tree.lookup(art, "v0")
        assert isinstance(v0, VersionNode)
        await tree.load(v0)
        listed: dict[str, int] = {}

        def page_of(node: Node, after: str | None, limit: int) -> list[tuple[str, int]]:
            rows = tree.row_attrs(node)
            return [(row[0].decode(), rows.fill(row).st_ino) for row in tree.list_page(node, after, limit)]

        for name, ino in page_of(v0, None, 100):
            listed[name] = ino
            d = tree.node(ino)  # a directory listed: kept (the kernel asks for its attributes next)
            assert isinstance(d, EntryNode) and d.path == name and d.kind == DIR
            after = None
            while page := page_of(d, after, 300):
                listed.update((f"{name}/{n}", i) for n, i in page)
                after = page[-1][0]
            f = tree.node(page_of(d, None, 1)[0][1])  # known to the kernel from the listing only: by its code
            assert isinstance(f, EntryNode) and f.path == f"{name}/{page_of(d, None, 1)[0][0]}"
        assert len(listed) == DIRS * (PER_DIR + 1) and len(set(listed.values())) == len(listed)
        assert len(tree._recent) <= 50
        for path, ino in list(listed.items())[::97]:
            node = v0
            for part in path.split("/"):
                found = await tree.lookup(node, part)
                assert found is not None
                node = found
            assert node.ino == ino  # the same number by lookup as by listing, after evictions
            again = tree.node(ino)
            assert isinstance(again, EntryNode) and again.path == path
            parent = path.rpartition("/")[0]
            assert tree.attrs(again).st_ino == ino and tree.parent_of(again).ino == listed.get(parent, v0.ino)
        with pytest.raises(pyfuse3.FUSEError) as info:
            tree.node(v0.base + 1 + (len(v0.header.blocks) << 16))  # past the version's codes
        assert info.value.errno == errno.ENOENT

    try:
        trio.run(main)
    finally:
        repo.close()


def _walk(root: Path) -> list[tuple[str, int, int]]:
    out = []
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(d, name)
            st = os.lstat(p)
            out.append((os.path.relpath(p, root), st.st_ino, st.st_size))
    return sorted(out)


def test_find_is_the_same_while_the_index_builds_and_after(huge, mount_artfs):
    m = mount_artfs(huge)
    v0 = m.path / "huge" / "v0"
    cold = _walk(v0)  # a version never opened here: answered from manifest blocks while its index builds
    warm = _walk(v0)
    assert cold == warm
    assert len(cold) == DIRS * (PER_DIR + 1) and len({ino for _, ino, _ in cold}) == len(cold)
    assert (v0 / "d07" / "f0123").read_bytes() == b"hello\n"
    m.close()
    again = mount_artfs(huge, cache_dir=m.cache_dir)  # the index is built now (or resumed): the same tree
    assert [(p, s) for p, _, s in _walk(again.path / "huge" / "v0")] == [(p, s) for p, _, s in cold]


def test_listings_made_ahead_serve_only_their_own_directory(huge, mount_artfs):
    """After each listing the mount lists ahead the directory a walk would enter next (Tree.prepare_next).
    Directories listed in another order get their own entries — the guess is never served for another —
    and `find` (the walk it is for) lists every entry once, cold and again."""
    import random
    import subprocess

    m = mount_artfs(huge)
    v0 = m.path / "huge" / "v0"
    names = [f"d{d:02d}" for d in range(DIRS)]
    order = names[:]
    random.Random(3).shuffle(order)
    for d in order:  # each listing guesses the next in name order; most guesses are not opened next
        assert sorted(os.listdir(v0 / d)) == [f"f{i:04d}" for i in range(PER_DIR)], d
    found = subprocess.run(["find", str(v0)], capture_output=True, text=True, check=True).stdout.split()
    expect = [str(v0), *(str(v0 / d) for d in names)]
    expect += [str(v0 / d / f"f{i:04d}") for d in names for i in range(PER_DIR)]
    assert sorted(found) == sorted(expect)
    m.close()
    fresh = mount_artfs(huge)  # cold again: `find` first, every guess right
    out = subprocess.run(["find", str(fresh.path / "huge" / "v0"), "-type", "f"], capture_output=True, text=True,
                         check=True).stdout.split()
    assert len(out) == len(set(out)) == DIRS * PER_DIR
