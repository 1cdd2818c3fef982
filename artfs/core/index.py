"""The local index of one store, in LMDB: manifests as lookup tables, known chunks, immutable records.

- `tree`: (manifest id, hash of parent dir, name) → entry. `lookup(path)` is one get and `listdir(dir)`
  one cursor range, so a version of a million files is never loaded into Python objects at once.
  (LMDB keys are ≤ 511 bytes, hence the parent's hash rather than its path.)
- `chunks`: digest → where the chunk lives (pack, offset, lengths). Commits consult it to upload only
  new chunks; it is filled from the parent version of every commit and every pack uploaded from here.
- `records`: immutable store objects (version records) by key, so they are fetched once.

Shared by the CLI and the mount daemon (LMDB serializes writers across processes). It is rebuildable
from the store at any time, so it is written with sync off.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import threading
from collections.abc import Iterable

import lmdb
import msgspec
import xxhash

from artfs.core.manifest import DIR, Entry, Header
from artfs.core.manifest_file import ManifestFile, read_manifest, read_manifest_frames
from artfs.core.packs import ChunkRef

log = logging.getLogger(__name__)

_CHUNK = struct.Struct("<16sQIII")
_ROOT = Entry("", DIR, 0o755, 0, 0)
_BATCH = 20000


def _parent_hash(parent: str) -> bytes:
    return xxhash.xxh3_128_digest(parent.encode("utf-8", "surrogateescape"))


def _tree_key(mid: bytes, path: str) -> bytes:
    parent, _, name = path.rpartition("/")
    return mid + _parent_hash(parent) + name.encode("utf-8", "surrogateescape")


class StoreIndex:
    """The index for one store URI, under `<cache_dir>/stores/<hash of uri>/index.lmdb`."""

    def __init__(self, cache_dir: str, store_uri: str, map_size: int = 64 << 30) -> None:
        tag = hashlib.sha256(store_uri.encode()).hexdigest()[:16]
        self.path = os.path.join(cache_dir, "stores", tag, "index.lmdb")
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        with open(os.path.join(os.path.dirname(self.path), "store-uri"), "w") as f:
            f.write(store_uri + "\n")
        self._map_size = map_size
        self._pid = -1
        self._building: dict[str, ManifestFile] = {}  # mid → its file, answering until the index is built
        self._building_lock = threading.Lock()
        self._open()

    def _open(self) -> None:
        self.env = lmdb.open(
            self.path, map_size=self._map_size, max_dbs=8, max_readers=512,
            sync=False, metasync=False, readahead=False,
        )
        self._tree = self.env.open_db(b"tree")
        self._manifests = self.env.open_db(b"manifests")
        self._chunks = self.env.open_db(b"chunks")
        self._records = self.env.open_db(b"records")
        self._pid = os.getpid()

    def _env(self) -> lmdb.Environment:
        if self._pid != os.getpid():  # never use an environment across fork()
            self._open()
        return self.env

    def close(self) -> None:
        self.env.close()

    # --- manifests -------------------------------------------------------------------------------

    def _built(self, mid: str) -> Header | None:
        with self._env().begin(db=self._manifests) as txn:
            raw = txn.get(bytes.fromhex(mid))
        return msgspec.msgpack.decode(raw, type=Header) if raw is not None else None

    def header(self, mid: str) -> Header | None:
        """The header of an indexed manifest, or of one being indexed; else None."""
        building = self._building.get(mid)
        return building.header if building is not None else self._built(mid)

    def start_build(self, mid: str, manifest_path: str) -> Header:
        """Index a manifest in a background thread; until it is done, lookups decode single blocks.

        This is what makes the first byte of a file in a huge version never opened here fast: the
        manifest's block table finds any path by decoding one ~64 KiB block.
        """
        with self._building_lock:
            if (h := self.header(mid)) is not None:
                return h
            mf = ManifestFile(manifest_path, mid)
            self._building[mid] = mf

        def run() -> None:
            try:
                self.build(mid, manifest_path)
            except Exception as e:  # noqa: BLE001 - lookups keep working from the file; logged for a human
                log.error("cannot index manifest %s: %s", mid, e)
            finally:
                with self._building_lock:  # a lookup may still hold `mf`: it closes when collected
                    self._building.pop(mid, None)

        threading.Thread(target=run, name=f"artfs-index-{mid[:8]}", daemon=True).start()
        return mf.header

    def build(self, mid: str, manifest_path: str) -> Header:
        """Index a manifest for lookup/listdir (streamed, batched write txns). Marked done last.

        Entries are stored in the manifest's own encoding, not re-encoded: this is the first-byte
        latency of a version never opened on this machine.
        """
        if (h := self._built(mid)) is not None:
            return h
        key_mid = bytes.fromhex(mid)
        header, frames = read_manifest_frames(manifest_path, mid)
        batch: list[tuple[bytes, bytes]] = []

        def flush() -> None:
            with self._env().begin(write=True, db=self._tree) as txn:
                txn.cursor().putmulti(batch, dupdata=False, overwrite=True)
            batch.clear()

        for e, raw in frames:
            batch.append((_tree_key(key_mid, e.path), raw))
            if len(batch) >= _BATCH:
                flush()
        flush()
        with self._env().begin(write=True) as txn:
            txn.put(key_mid, msgspec.msgpack.encode(header), db=self._manifests)
        return header

    def build_chunks(self, mid: str, manifest_path: str) -> None:
        """Record where a manifest's chunks live, so commits dedup against it (only commits need this)."""
        done_key = bytes.fromhex(mid) + b"/chunks"
        with self._env().begin(db=self._manifests) as txn:
            if txn.get(done_key) is not None:
                return
        header, entries = read_manifest(manifest_path, mid)
        packs = [bytes.fromhex(p) for p in header.packs]
        batch: list[tuple[bytes, bytes]] = []

        def flush() -> None:
            with self._env().begin(write=True, db=self._chunks) as txn:
                txn.cursor().putmulti(batch, dupdata=False, overwrite=True)
            batch.clear()

        for e in entries:
            for d, p, off, stored, raw, flags in e.refs_raw():
                batch.append((d, _CHUNK.pack(packs[p], off, stored, raw, flags)))
            if len(batch) >= _BATCH:
                flush()
        flush()
        with self._env().begin(write=True, db=self._manifests) as txn:
            txn.put(done_key, b"1")

    def lookup(self, mid: str, path: str) -> Entry | None:
        """The entry at `path` ('' is the root directory), or None."""
        if path == "":
            return _ROOT
        building = self._building.get(mid)  # first: once it is gone, the index is complete
        if building is not None:
            return building.lookup(path)
        with self._env().begin(db=self._tree) as txn:
            raw = txn.get(_tree_key(bytes.fromhex(mid), path))
        return msgspec.msgpack.decode(raw, type=Entry) if raw is not None else None

    def listdir(self, mid: str, path: str, after: str | None = None, limit: int | None = None) -> list[Entry]:
        """Entries directly inside directory `path`, sorted by name; `after` resumes a listing."""
        building = self._building.get(mid)
        if building is not None:
            out = []
            for e in building.children(path, after):
                out.append(e)
                if limit is not None and len(out) >= limit:
                    break
            return out
        prefix = bytes.fromhex(mid) + _parent_hash(path)
        start = prefix + after.encode("utf-8", "surrogateescape") if after is not None else prefix
        out: list[Entry] = []
        decode = msgspec.msgpack.Decoder(Entry).decode
        with self._env().begin(db=self._tree, buffers=True) as txn:
            cur = txn.cursor()
            if not cur.set_range(start):
                return out
            for key, value in cur:
                if bytes(key[: len(prefix)]) != prefix:
                    break
                if after is not None and bytes(key) == start:
                    continue
                out.append(decode(value))
                if limit is not None and len(out) >= limit:
                    break
        return out

    # --- chunks ----------------------------------------------------------------------------------

    def known_chunk(self, digest: bytes) -> ChunkRef | None:
        with self._env().begin(db=self._chunks) as txn:
            raw = txn.get(digest)
        if raw is None:
            return None
        pack, off, stored, raw_len, flags = _CHUNK.unpack(raw)
        return ChunkRef(digest, pack.hex(), off, stored, raw_len, flags)

    def add_chunks(self, refs: Iterable[ChunkRef]) -> None:
        with self._env().begin(write=True, db=self._chunks) as txn:
            for r in refs:
                txn.put(r.digest, _CHUNK.pack(bytes.fromhex(r.pack), r.offset, r.stored_len, r.raw_len, r.flags))

    def forget_pack_chunks(self, pack: str) -> None:
        """Drop chunk locations pointing at a pack that turned out to be missing (e.g. deleted by GC)."""
        raw_pack = bytes.fromhex(pack)
        with self._env().begin(write=True, db=self._chunks) as txn:
            doomed = [bytes(k) for k, v in txn.cursor() if v[:16] == raw_pack]
            for k in doomed:
                txn.delete(k)

    # --- immutable records -----------------------------------------------------------------------

    def record(self, key: str) -> bytes | None:
        with self._env().begin(db=self._records) as txn:
            return txn.get(key.encode())

    def put_record(self, key: str, data: bytes) -> None:
        with self._env().begin(write=True, db=self._records) as txn:
            txn.put(key.encode(), data)

