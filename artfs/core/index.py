"""The local index of one store, in LMDB: manifests as lookup tables, known chunks, immutable records.

- `tree`: (manifest id, hash of parent dir, name) → the entry's code (its block and position in the
  manifest file, 6 bytes) and the entry. `lookup(path)` is one get and `listdir(dir)` one cursor range, so a
  version of a million files is never loaded into Python objects at once. (LMDB keys are ≤ 511 bytes, hence
  the parent's hash rather than its path.) The code is what a mount makes inode numbers of: the same
  whether an entry came from here or from the manifest's blocks, and found again from the file by code.
- `chunks`: digest → where the chunk lives (pack, offset, lengths). Commits consult it to upload only
  new chunks; it is filled from the parent version of every commit and every pack uploaded from here.
- `records`: immutable store objects (version records) by key, so they are fetched once.

Shared by the CLI and the mount daemon (LMDB serializes writers across processes). It is rebuildable
from the store at any time, so it is written with sync off. The environment is opened by the rule of
storage/lmdb_env.py (one per path per process, never across fork), like the chunk cache's.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import weakref
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, cast

import lmdb
import msgspec
import xxhash

from artfs.core.manifest import DIR, Entry, Header, path_key
from artfs.core.manifest_file import POS_BITS, ManifestFile, Row, array_header, read_manifest
from artfs.core.packs import FLAG_SOURCE, ChunkRef
from artfs.core.references import is_token
from artfs.storage import lmdb_env

log = logging.getLogger(__name__)

_CHUNK = struct.Struct("<16sQIII")
_CODE = struct.Struct("<IH")  # (block, position): the prefix of every `tree` value
_CODE_MASK = (1 << POS_BITS) - 1
_ROOT = Entry("", DIR, 0o755, 0, 0)
_BATCH = 20000


@dataclass(frozen=True, slots=True)
class _Databases:
    """The index's environment and its databases, replaced together (after fork)."""

    env: lmdb.Environment
    tree: Any  # lmdb._Database, which the stubs keep private
    manifests: Any
    chunks: Any
    records: Any


def _databases(env: lmdb.Environment) -> _Databases:
    # `.2`: values carry entry codes since issue 13; indexes of the older layout are simply rebuilt
    return _Databases(
        env, env.open_db(b"tree.2"), env.open_db(b"manifests.2"), env.open_db(b"chunks"), env.open_db(b"records")
    )


_OPTIONS = lmdb_env.Options("the store index", max_dbs=8, readahead=False)
_TREE, _MANIFESTS, _CHUNKS, _RECORDS = (attrgetter(db) for db in ("tree", "manifests", "chunks", "records"))


_decode_entry = msgspec.msgpack.Decoder(Entry).decode


class _Stat(msgspec.Struct, array_like=True):
    """The leading fields of an encoded Entry: what a listing shows (the chunk list is not decoded, nor the
    path: the index key holds the name)."""

    path: msgspec.Raw
    kind: int
    mode: int
    mtime_ns: int
    size: int


_decode_stats = msgspec.msgpack.Decoder(list[_Stat]).decode


BUILD_QUIET = 0.3  # seconds without block lookups before a background build starts...
BUILD_DEFER_MAX = 5.0  # ...or at most this long after the version was opened


def _wait_quiet(mf: ManifestFile) -> None:
    """Let the first requests on a new version (a first byte, a `find`) have the GIL: a build in this
    process takes it in turns with them and doubles their time, while they need only a block each."""
    deadline = time.monotonic() + BUILD_DEFER_MAX
    while (now := time.monotonic()) < deadline:
        quiet = now - mf.last_used
        if quiet >= BUILD_QUIET:
            return
        time.sleep(min(BUILD_QUIET - quiet, deadline - now))


def _parent_hash(parent: str) -> bytes:
    return xxhash.xxh3_128_digest(parent.encode("utf-8", "surrogateescape"))


def _tree_key(mid: bytes, path: str) -> bytes:
    parent, _, name = path.rpartition("/")
    return mid + _parent_hash(parent) + name.encode("utf-8", "surrogateescape")


class StoreIndex:
    """The index of one store, at `path` (core/places.py says where: in the disposable cache)."""

    def __init__(self, path: str, store_uri: str, map_size: int = 64 << 30) -> None:
        self.path = path
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        with open(os.path.join(os.path.dirname(self.path), "store-uri"), "w") as f:
            f.write(store_uri + "\n")
        self._building: dict[str, ManifestFile] = {}  # mid → its file, answering until the index is built
        self._building_lock = threading.Lock()
        # mid → the path key up to which a build in progress has committed (listings below it use the index)
        self._built_upto: dict[str, bytes] = {}
        self._shared = lmdb_env.acquire(os.path.realpath(self.path), map_size, _OPTIONS, _databases)
        self._release = weakref.finalize(self, lmdb_env.release, self._shared)  # if dropped unclosed

    def close(self) -> None:
        self._release()

    # --- manifests -------------------------------------------------------------------------------

    def _built(self, mid: str) -> Header | None:
        raw = self._shared.get(bytes.fromhex(mid), _MANIFESTS)
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
                _wait_quiet(mf)
                self.build(mid, manifest_path)
            except Exception as e:  # noqa: BLE001 - lookups keep working from the file; logged for a human
                log.error("cannot index manifest %s: %s", mid, e)
            finally:
                with self._building_lock:  # a lookup may still hold `mf`: it closes when collected
                    self._building.pop(mid, None)
                    self._built_upto.pop(mid, None)

        threading.Thread(target=run, name=f"artfs-index-{mid[:8]}", daemon=True).start()
        return mf.header

    def next_directory(self, mid: str, path: str) -> tuple[int, Entry] | None:
        """ManifestFile.next_directory while the version's index is being built (what a first `find`
        walks); None once it is built (a listing from the index is cheap enough not to guess ahead)."""
        building = self._building.get(mid)
        return building.next_directory(path) if building is not None else None

    def building(self, mid: str) -> ManifestFile | None:
        """The open manifest answering for an index being built (its decoded blocks are shared)."""
        return self._building.get(mid)

    def build(self, mid: str, manifest_path: str) -> Header:
        """Index a manifest for lookup/listdir (streamed, batched write txns). Marked done last.

        Entries are stored in the manifest's own encoding, not re-encoded: this is the first-byte
        latency of a version never opened on this machine. A build started by `start_build` reads the
        file that lookups use meanwhile: blocks they decoded are not decoded again (`find` walks them in
        the same order).
        """
        if (h := self._built(mid)) is not None:
            return h
        opened = self._building.get(mid)
        key_mid = bytes.fromhex(mid)
        mf = opened if opened is not None else ManifestFile(manifest_path, mid)
        header = mf.header
        batch: list[tuple[bytes, bytes]] = []
        code = _CODE.pack
        last = ""

        def flush() -> None:
            batch.sort()  # a run of keys inserted in order fills a page before it splits
            with self._shared.transaction(write=True) as (txn, db):
                txn.cursor(db=db.tree).putmulti(batch, dupdata=False, overwrite=True)
            batch.clear()
            if opened is not None:
                self._built_upto[mid] = path_key(last)

        try:
            # While lookups wait on it (`opened`), commit more often: listings below `_built_upto` use the
            # index. Not much more: a batch is put in key order, and smaller batches fill LMDB's pages less
            # (200k files: 210 / 217 / 246 bytes an entry at 20,000 / 10,000 / 2,500; 270 unsorted).
            size = _BATCH // 2 if opened is not None else _BATCH
            for c, e, raw in mf.coded_frames():
                batch.append((_tree_key(key_mid, e.path), code(c >> POS_BITS, c & _CODE_MASK) + raw))
                if len(batch) >= size:
                    last = e.path
                    flush()
        finally:
            if opened is None:
                mf.close()
        flush()
        with self._shared.transaction(write=True) as (txn, db):
            txn.put(key_mid, msgspec.msgpack.encode(header), db=db.manifests)
        return header

    def build_chunks(self, mid: str, manifest_path: str) -> None:
        """Record where a manifest's chunks live, so commits dedup against it (only commits need this)."""
        done_key = bytes.fromhex(mid) + b"/chunks"
        if self._shared.get(done_key, _MANIFESTS) is not None:
            return
        for _ in read_manifest(manifest_path, mid)[1]:
            pass  # validated whole first: a dedup source with one bad entry gives the index nothing
        header, entries = read_manifest(manifest_path, mid)
        packs = [b"" if is_token(p) else bytes.fromhex(p) for p in header.packs]  # sources are no dedup target
        batch: list[tuple[bytes, bytes]] = []

        def flush() -> None:
            with self._shared.transaction(write=True) as (txn, db):
                txn.cursor(db=db.chunks).putmulti(batch, dupdata=False, overwrite=True)
            batch.clear()

        for e in entries:
            for d, p, off, stored, raw, flags in e.refs_raw():
                if not flags & FLAG_SOURCE:
                    batch.append((d, _CHUNK.pack(packs[p], off, stored, raw, flags)))
            if len(batch) >= _BATCH:
                flush()
        flush()
        with self._shared.transaction(write=True) as (txn, db):
            txn.put(done_key, b"1", db=db.manifests)

    def lookup(self, mid: str, path: str) -> Entry | None:
        """The entry at `path` ('' is the root directory), or None."""
        found = self.lookup_coded(mid, path)
        return found[1] if found is not None else None

    def lookup_coded(self, mid: str, path: str) -> tuple[int, Entry] | None:
        """(code, entry) at `path`, or None. The root directory ('') has code -1: it is no manifest entry."""
        if path == "":
            return -1, _ROOT
        building = self._building.get(mid)  # first: once it is gone, the index is complete
        if building is not None:
            return building.lookup_coded(path)
        key = _tree_key(bytes.fromhex(mid), path)
        with self._shared.transaction(buffers=True) as (txn, db):
            raw = txn.get(key, db=db.tree)
            if raw is None:
                return None
            block, pos = _CODE.unpack_from(raw)
            return (block << POS_BITS) | pos, _decode_entry(raw[_CODE.size:])

    def listdir(self, mid: str, path: str, after: str | None = None, limit: int | None = None) -> list[Entry]:
        """Entries directly inside directory `path`, sorted by name; `after` resumes a listing."""
        return [e for _, e in self.listdir_coded(mid, path, after, limit)]

    def listdir_coded(self, mid: str, path: str, after: str | None = None,
                      limit: int | None = None) -> list[tuple[int, Entry]]:
        """(code, entry) directly inside directory `path`, sorted by name; `after` resumes a listing."""
        building = self._building.get(mid)
        out: list[tuple[int, Entry]] = []
        if building is not None and not (path and path_key(path) + b"\x01" <= self._built_upto.get(mid, b"")):
            for ce in building.children_coded(path, after):
                out.append(ce)
                if limit is not None and len(out) >= limit:
                    break
            return out
        skip = _CODE.size
        for _, code, value in self._children(mid, path, after, limit):
            out.append((code, _decode_entry(value[skip:])))
        return out

    def _children(self, mid: str, path: str, after: str | None,
                  limit: int | None) -> Iterator[tuple[bytes, int, bytes | memoryview]]:
        """(name, code, encoded entry) of the built index's entries directly inside `path`, by name, after
        `after`: one cursor walk for both kinds of listing. The values are views into the transaction:
        decode them before the next one."""
        prefix = bytes.fromhex(mid) + _parent_hash(path)
        start = prefix + after.encode("utf-8", "surrogateescape") if after is not None else prefix
        n = len(prefix)
        unpack = _CODE.unpack_from
        given = 0
        with self._shared.transaction(buffers=True) as (txn, db):
            cur = txn.cursor(db=db.tree)
            if not cur.set_range(start):
                return
            for key, value in cur:
                if key[:n] != prefix:
                    break
                if after is not None and key == start:
                    continue
                block, pos = unpack(value)
                yield bytes(key[n:]), (block << POS_BITS) | pos, value
                given += 1
                if limit is not None and given >= limit:
                    break

    def listdir_rows(self, mid: str, path: str, after: str | None = None,
                     limit: int | None = None) -> list[Row]:
        """What a directory listing shows of the entries directly inside `path`, by name, after `after`:
        (name, code, kind, mode, size, mtime_ns) rows, decoded from the index without the chunk lists
        (a `find` of a million files lists every entry and uses none of them)."""
        building = self._building.get(mid)
        if building is not None and not (path and path_key(path) + b"\x01" <= self._built_upto.get(mid, b"")):
            return building.children_rows(path, after, limit)
        return self._rows(mid, path, after, limit)

    def _rows(self, mid: str, path: str, after: str | None, limit: int | None) -> list[Row]:
        """listdir_rows from the built index: `_children`'s cursor walk, in one loop that makes the rows
        (keys and values copied out as bytes: their slices and prefix tests are cheaper than a buffer's),
        each entry decoded only as far as its size (_Stat), its path left undecoded."""
        prefix = bytes.fromhex(mid) + _parent_hash(path)
        start = prefix + after.encode("utf-8", "surrogateescape") if after is not None else prefix
        n = len(prefix)
        unpack = _CODE.unpack_from
        skip = _CODE.size
        keys: list[bytes] = []
        values: list[bytes] = []
        with self._shared.transaction() as (txn, db):
            cur = txn.cursor(db=db.tree)
            if not cur.set_range(start):
                return []
            for key, value in cast("Iterator[tuple[bytes, bytes]]", cur):  # copies: not a buffers transaction
                if not key.startswith(prefix):
                    break
                if after is not None and key == start:
                    continue
                keys.append(key)
                values.append(value)
                if limit is not None and len(keys) >= limit:
                    break
        if not keys:
            return []
        # one decode for the lot: the encoded entries after their codes, as one msgpack array
        stats = _decode_stats(array_header(len(values)) + b"".join([v[skip:] for v in values]))
        return [(k[n:], (b << POS_BITS) | p, st.kind, st.mode, st.size, st.mtime_ns)
                for k, (b, p), st in zip(keys, map(unpack, values), stats, strict=True)]

    # --- chunks ----------------------------------------------------------------------------------

    def known_chunk(self, digest: bytes) -> ChunkRef | None:
        raw = self._shared.get(digest, _CHUNKS)
        if raw is None:
            return None
        pack, off, stored, raw_len, flags = _CHUNK.unpack(raw)
        return ChunkRef(digest, pack.hex(), off, stored, raw_len, flags)

    def add_chunks(self, refs: Iterable[ChunkRef]) -> None:
        with self._shared.transaction(write=True) as (txn, db):
            for r in refs:
                txn.put(r.digest, _CHUNK.pack(bytes.fromhex(r.pack), r.offset, r.stored_len, r.raw_len, r.flags),
                        db=db.chunks)

    def forget_chunk(self, digest: bytes, pack: str) -> None:
        """Drop a chunk's location if it points into `pack` (the copy there failed verification)."""
        raw_pack = bytes.fromhex(pack)
        with self._shared.transaction(write=True) as (txn, db):
            raw = txn.get(digest, db=db.chunks)
            if raw is not None and bytes(raw[:16]) == raw_pack:
                txn.delete(digest, db=db.chunks)

    def forget_pack_chunks(self, pack: str) -> None:
        """Drop chunk locations pointing at a pack that turned out to be missing (e.g. deleted by GC)."""
        raw_pack = bytes.fromhex(pack)
        with self._shared.transaction(write=True) as (txn, db):
            doomed = [bytes(k) for k, v in txn.cursor(db=db.chunks) if v[:16] == raw_pack]
            for k in doomed:
                txn.delete(k, db=db.chunks)

    # --- footprint (artfs cache) ------------------------------------------------------------------

    def manifest_chunks(self, mid: str, among: Container[bytes]) -> set[bytes] | None:
        """The digests of an indexed manifest's chunks that are `among` the given ones (one cursor pass over
        its entries; the set stays as small as `among`); None if the manifest is not indexed here."""
        if self._built(mid) is None:
            return None
        prefix = bytes.fromhex(mid)
        decode = msgspec.msgpack.Decoder(Entry).decode
        digests: set[bytes] = set()
        with self._shared.transaction(buffers=True) as (txn, db):
            cur = txn.cursor(db=db.tree)
            if cur.set_range(prefix):
                for key, value in cur:
                    if bytes(key[: len(prefix)]) != prefix:
                        break
                    entry = decode(value[_CODE.size:])
                    digests.update(ref[0] for ref in entry.refs_raw() if ref[0] in among)
        return digests

    def records_under(self, prefix: str) -> list[tuple[str, bytes]]:
        """The records held here whose keys start with `prefix`, by key."""
        start = prefix.encode()
        out: list[tuple[str, bytes]] = []
        with self._shared.transaction() as (txn, db):
            cur = txn.cursor(db=db.records)
            if not cur.set_range(start):
                return out
            for key, value in cur:
                if not bytes(key).startswith(start):
                    break
                out.append((bytes(key).decode(), bytes(value)))
        return out

    def drop_rebuildable(self) -> int:
        """Drop what is safe to drop while other processes use this index: the records (fetched again on
        use) and the chunk locations (rebuilt from the parent version of the next commit; a chunk no longer
        known is uploaded again). The manifests' lookup tables stay: a running mount reads them. The number
        of entries dropped; LMDB reuses their pages (the file does not shrink)."""
        with self._shared.transaction(write=True) as (txn, db):
            dropped = txn.stat(db.records)["entries"] + txn.stat(db.chunks)["entries"]
            txn.drop(db.records, delete=False)
            txn.drop(db.chunks, delete=False)
            done = [bytes(k) for k, _ in txn.cursor(db=db.manifests) if bytes(k).endswith(b"/chunks")]
            for k in done:  # so build_chunks fills the locations again
                txn.delete(k, db=db.manifests)
        return dropped

    # --- immutable records -----------------------------------------------------------------------

    def record(self, key: str) -> bytes | None:
        return self._shared.get(key.encode(), _RECORDS)

    def put_record(self, key: str, data: bytes) -> None:
        with self._shared.transaction(write=True) as (txn, db):
            txn.put(key.encode(), data, db=db.records)

