"""The store index (core/index.py): a built manifest answers lookups and listings exactly, and is compact."""

from __future__ import annotations

import lmdb

from artfs.core.index import StoreIndex
from artfs.core.manifest import DIR, FILE, Entry, ManifestWriter
from artfs.core.packs import REF

DIRS, PER_DIR = 30, 400


def _manifest(tmp_path, tag: str) -> tuple[str, list[Entry]]:
    """Folders of many small files (a dataset's shape), written in the manifest's path order."""
    w = ManifestWriter(tmp_dir=str(tmp_path))
    w.pack_index["ab" * 16] = 0
    entries: list[Entry] = []
    for d in range(DIRS):
        entries.append(Entry(f"{tag}{d:02d}", DIR, 0o755, 1, 0))
        for i in range(PER_DIR):
            digest = (d * PER_DIR + i).to_bytes(16, "little")
            entries.append(Entry(f"{tag}{d:02d}/f{i:05d}.txt", FILE, 0o644, 1, 100,
                                 REF.pack(digest, 0, i * 100, 100, 100, 0), digest))
    for e in entries:
        w.add(e)
    path, _ = w.finish()
    return path, entries


def _bytes_per_entry(index_dir: str) -> float:
    env = lmdb.open(index_dir, max_dbs=8, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            st = txn.stat(env.open_db(b"tree.2", txn=txn, create=False))
        return (st["leaf_pages"] + st["branch_pages"]) * st["psize"] / st["entries"]
    finally:
        env.close()


def test_built_manifests_answer_exactly_and_pack_pages_densely(tmp_path):
    """Two manifests in one index (their key ranges interleave at the edges): every path is found with its
    entry, every folder lists its names in order, and pages are filled: batches are put in key order
    (unsorted, this shape took ~50% more pages)."""
    index_dir = str(tmp_path / "index")
    index = StoreIndex(index_dir, "file:///store")
    try:
        built = {}
        for mid, tag in (("01" * 16, "a"), ("fe" * 16, "b")):
            path, entries = _manifest(tmp_path, tag)
            index.build(mid, path)
            built[mid] = entries
        for mid, entries in built.items():
            for e in entries[:: 37]:
                assert index.lookup(mid, e.path) == e
            folders = [e for e in entries if e.kind == DIR]
            assert [e.name for e in index.listdir(mid, "")] == [f.name for f in folders]
            for f in folders[::7]:
                names = [e.name for e in index.listdir(mid, f.path)]
                assert names == [f"f{i:05d}.txt" for i in range(PER_DIR)]
    finally:
        index.close()
    assert _bytes_per_entry(index_dir) < 180  # 148 sorted; 226 in manifest order


def test_listing_rows_from_the_index_equal_those_from_the_manifest(tmp_path):
    """A listing's rows (name, code, kind, mode, size, mtime) are the same whether the built index gives
    them (one cursor walk, one decode per page) or the manifest does (a version not indexed yet): in every
    folder, from the start or after any name, cut at any limit — with two manifests' keys side by side."""
    from artfs.core.manifest_file import ManifestFile

    index = StoreIndex(str(tmp_path / "index"), "file:///store")
    try:
        paths = {}
        for mid, tag in (("01" * 16, "a"), ("fe" * 16, "b")):
            paths[mid], _ = _manifest(tmp_path, tag)
            index.build(mid, paths[mid])
        for mid, path in paths.items():
            with ManifestFile(path) as mf:
                folders = [""] + [r[0].decode() for r in mf.children_rows("")]
                for folder in folders[:4]:
                    whole = mf.children_rows(folder)
                    assert index.listdir_rows(mid, folder) == whole and whole
                    for k in (0, 1, 15, 16, 17, len(whole) - 1):
                        after = whole[k][0].decode() if k else None
                        rest = whole[k + 1:] if k else whole
                        for limit in (1, 15, 16, 300, None):
                            assert index.listdir_rows(mid, folder, after, limit) == rest[:limit]
                assert index.listdir_rows(mid, "no such folder") == []
    finally:
        index.close()
