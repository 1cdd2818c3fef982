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
