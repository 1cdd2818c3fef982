"""Committing a tree: chunk and hash new content, upload only new chunks in packs, then publish.

Chunking and hashing run on the calling thread (≈3 GB/s); finished packs upload on a small thread
pool, at most UPLOADS_IN_FLIGHT at once (backpressure bounds memory at a few packs). A chunk counts as
known — and is not uploaded — only once the pack holding it is confirmed in the store, so a failed
commit never leaves the index pointing at data that is not there. Until then it is in the committer's
`_pending` (so that the same content twice in one commit is packed once); once its pack is stored and in
the index, the index answers for it and `_pending` lets it go: memory stays at a few packs' worth of
chunks, not one entry per new chunk of the whole commit.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from artfs.core.chunker import digest, read_chunks
from artfs.core.manifest import DIR, LINK, Entry, Header, ManifestWriter
from artfs.core.names import check_alias, check_message, check_name, check_path, check_symlink_target
from artfs.core.packs import ChunkRef, PackBuilder
from artfs.core.rebase import publish_onto_latest
from artfs.core.records import VersionRecord
from artfs.core.references import Source, read_source_chunks, source_refs
from artfs.core.repo import ArtifactView, Repo
from artfs.core.store_keys import pack_key
from artfs.errors import ArtfsError, InvalidName, StoreUnavailable

log = logging.getLogger(__name__)

UPLOADS_IN_FLIGHT = 4
Progress = Callable[[int], None]


@dataclass
class CommitResult:
    record: VersionRecord | None  # None: the tree equals latest, nothing published
    name: str
    digest: str
    files: int
    bytes: int
    uploaded_bytes: int
    new_chunks: int
    reused_chunks: int

    @property
    def ref(self) -> str:
        return self.record.ref if self.record else ""

    def as_json(self) -> dict:
        return {
            "ref": self.ref or None,
            "version": self.record.version if self.record else None,
            "digest": self.digest,
            "files": self.files,
            "bytes": self.bytes,
            "uploaded_bytes": self.uploaded_bytes,
            "new_chunks": self.new_chunks,
            "reused_chunks": self.reused_chunks,
            "unchanged": self.record is None,
        }


class Committer:
    """Builds one new version: feed it entries in path order, then `publish()`.

    Entries can come from a directory walk (`commit_tree`) or from a staging tree, which passes
    unchanged files as existing entries so their chunks are reused without being read again.

    The artifact's records are listed once per commit (`view`): the type check, the dedup source and
    the claim all use that one listing (Repo.publish says why a stale one is safe to claim with), so a
    commit does not cost a LIST of every version per question it asks.
    """

    def __init__(self, repo: Repo, name: str, progress: Progress | None = None) -> None:
        self.repo = repo
        self.name = check_name(name)
        self.writer = ManifestWriter(tmp_dir=repo.cache_dir)
        self._progress = progress
        self._pack: PackBuilder | None = None
        self._pending: dict[bytes, ChunkRef] = {}  # chunks in packs not yet confirmed uploaded
        self._pack_refs: list[ChunkRef] = []  # the new chunks of the pack being built
        self._pool = ThreadPoolExecutor(UPLOADS_IN_FLIGHT, thread_name_prefix="artfs-upload")
        self._slots = threading.Semaphore(UPLOADS_IN_FLIGHT + 1)
        self._futures: list[Future] = []
        self._lock = threading.Lock()
        self._parent_known = False
        self._view: ArtifactView | None = None
        self._bad: set[tuple[bytes, str]] = set()  # quarantined locations: content to upload afresh
        self._packs_seen: dict[str, bool] = {}  # pack → still in the store (asked once per commit)
        self.repaired = False  # content was uploaded again because the copies to reuse were bad or gone
        self.uploaded_bytes = 0
        self.new_chunks = 0
        self.reused_chunks = 0

    def view(self) -> ArtifactView:
        """The artifact as listed when this commit first asked (one LIST per commit)."""
        if self._view is None:
            self._view = self.repo.view(self.name)
        return self._view

    def check_type(self, type_: str | None) -> str:
        """The type the new version gets (Repo.check_type, on this commit's one listing)."""
        return self.repo.check_type(self.name, type_, self.view())

    # --- entries ---------------------------------------------------------------------------------

    def add_dir(self, path: str, mode: int, mtime_ns: int) -> None:
        self.writer.add(Entry(path, DIR, mode & 0o7777, mtime_ns, 0))

    def add_symlink(self, path: str, target: str, mtime_ns: int) -> None:
        check_symlink_target(path, target)
        self.writer.add(Entry(path, LINK, 0o777, mtime_ns, len(target.encode("utf-8", "surrogateescape")),
                              target.encode("utf-8", "surrogateescape")))

    def add_existing(self, entry: Entry, packs: list[str]) -> None:
        """Reuse a file entry of another version of this store as it is (no read, no upload)."""
        refs = entry.refs(packs)
        self.reused_chunks += len(refs)
        self.writer.add_file(entry.path, entry.mode, entry.mtime_ns, entry.size, refs)
        if self._progress:
            self._progress(entry.size)

    def add_file(self, path: str, source: str | os.PathLike, mode: int, mtime_ns: int, size: int,
                 expect: os.stat_result | None = None) -> None:
        """Chunk, hash and (for new chunks) pack a file's content: `size` bytes, read once into memory of
        this process (chunker.read_chunks), the file still as `expect` describes it when read (else
        SourceChanged: nothing is published)."""
        refs: list[ChunkRef] = []
        for data in read_chunks(source, expect, size):
            refs.append(self._chunk(data))
            if self._progress:
                self._progress(len(data))
        self.writer.add_file(path, mode & 0o7777, mtime_ns, size, refs)

    def add_reference(self, path: str, source: Source, mtime_ns: int, mode: int = 0o644, copy: bool = False) -> None:
        """A file whose bytes stay in an external object (core/references.py): nothing is uploaded; with a
        checksum the object is read once here and cut like content, so its chunk digests are recorded.
        With `copy` the object's bytes are stored as ordinary content instead (no reference is kept)."""
        if copy:
            refs = []
            for data in read_source_chunks(source.pin):
                refs.append(self._chunk(data))
                if self._progress:
                    self._progress(len(data))
            self.writer.add_file(path, mode & 0o7777, mtime_ns, source.pin.size, refs)
            return
        refs = source_refs(source, self._progress)
        if not source.checksum and self._progress:
            self._progress(source.pin.size)
        self.writer.add_file(path, mode & 0o7777, mtime_ns, source.pin.size, refs)

    def _know_parent_chunks(self) -> None:
        """Dedup against the artifact's latest version even on a machine that never read it, and learn
        which stored copies are bad (the quarantine). A latest that cannot be read is no dedup source,
        and no reason to refuse the commit."""
        self._parent_known = True
        self._bad = self.repo.damage.locations()
        self.repo.guard.prepare()  # the gc listing this commit's uploads are checked against (gc_guard.py)
        latest = self.view().latest  # the newest live version (deleted ones may be collected)
        if latest is not None:
            try:
                self.repo.ensure_chunks(self.repo.version(self.name, latest))
            except ArtfsError as e:
                if isinstance(e, StoreUnavailable):
                    raise
                log.warning("%s:v%d is no dedup source: %s", self.name, latest, e)

    def _reusable(self, ref: ChunkRef) -> bool:
        """A known copy may be reused unless it failed verification, or its pack is gone or condemned by
        garbage collection (core/gc_guard.py: one LIST of the condemned, at most one HEAD per pack), so
        neither a stale local index nor a deleted pack ends up under a new version."""
        if (ref.digest, ref.pack) in self._bad:
            return False
        present = self._packs_seen.get(ref.pack)
        if present is None:
            present = self._packs_seen[ref.pack] = self.repo.guard.usable(ref.pack)
        return present

    def _chunk(self, data: memoryview) -> ChunkRef:
        if not self._parent_known:
            self._know_parent_chunks()
        d = digest(data)
        ref = self._pending.get(d)
        if ref is None:
            ref = self.repo.index.known_chunk(d)
            if ref is not None and not self._reusable(ref):
                ref = None
                self.repaired = True
        if ref is not None:
            self.reused_chunks += 1
            return ref
        if self._pack is None:
            self._pack = PackBuilder()
        ref = self._pack.add(d, data)
        self._pending[d] = ref
        self._pack_refs.append(ref)
        self.new_chunks += 1
        if self._pack.full:
            self._flush_pack()
        return ref

    # --- packs -----------------------------------------------------------------------------------

    def _flush_pack(self) -> None:
        pack, self._pack = self._pack, None
        if pack is None or not len(pack):
            return
        self._raise_failed()
        self._slots.acquire()
        parts = pack.finish()
        refs, self._pack_refs = self._pack_refs, []

        def upload() -> None:
            try:
                data = b"".join(parts)
                started = self.repo.guard.now()
                self.repo.store.put(pack_key(pack.pack_id), data)
                self.repo.guard.uploaded(pack.pack_id, started)
                try:
                    self.repo.index.add_chunks(refs)
                except ArtfsError as e:  # the index only speeds up later dedup: the pack is stored
                    log.warning("%s", e)
                else:
                    self._uploaded(pack.pack_id, refs)
                with self._lock:
                    self.uploaded_bytes += len(data)
            finally:
                self._slots.release()

        self._futures.append(self._pool.submit(upload))

    def _uploaded(self, pack_id: str, refs: list[ChunkRef]) -> None:
        """The pack is stored and its chunks are in the index: from now on the index answers for them
        (`_chunk` asks `_pending` first, then the index; they were added to the index before they leave
        `_pending`, so a lookup in between finds them in one or the other). The pack is known present,
        so reusing them costs no HEAD."""
        with self._lock:
            self._packs_seen[pack_id] = True
            for r in refs:
                if self._pending.get(r.digest) is r:
                    del self._pending[r.digest]

    def _raise_failed(self) -> None:
        for f in [f for f in self._futures if f.done()]:
            self._futures.remove(f)
            f.result()

    def _wait_uploads(self) -> None:
        self._flush_pack()
        futures, self._futures = self._futures, []
        for f in futures:
            f.result()
        self._pending.clear()

    # --- publishing ------------------------------------------------------------------------------

    def build(self) -> tuple[str, Header]:
        """Finish uploads and write the manifest: (temp manifest path, Header). Nothing is published."""
        self._wait_uploads()
        return self.writer.finish()

    def result(self, record: VersionRecord | None, header: Header) -> CommitResult:
        return CommitResult(record, self.name, header.digest, header.files, header.bytes,
                            self.uploaded_bytes, self.new_chunks, self.reused_chunks)

    def publish(
        self, type_: str | None = None, message: str = "", metadata: dict[str, str] | None = None,
        aliases: list[str] | tuple[str, ...] = (), parent: int | None = None, base: int | None = None,
        force: bool = False, run: str | None = None, ttl: float | None = None,
    ) -> CommitResult:
        """Build, then claim the next version (none if the tree equals latest's). With `base`, the tree is
        that version plus changes, merged onto latest (core/rebase.py; `force` keeps this side). `ttl`:
        seconds after which the new version is soft-deleted (core/lifecycle.py)."""
        try:
            type_ = self.check_type(type_)
            manifest_path, header = self.build()
            try:
                if base is None:
                    record = self.repo.publish(self.name, type_, manifest_path, header, message, metadata, aliases,
                                               parent, repaired=self.repaired, run=run, ttl=ttl, view=self._view)
                else:
                    record, header = publish_onto_latest(self.repo, self.name, base, manifest_path, header, type_,
                                                         message, metadata, aliases, force, side="DIR's",
                                                         repaired=self.repaired, run=run, ttl=ttl, view=self._view)
            finally:
                if os.path.exists(manifest_path):
                    os.unlink(manifest_path)
        finally:
            self.close()
        return self.result(record, header)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.writer.close()


def walk_tree(root: str) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, lstat) for everything under `root`, in manifest order (name-sorted, depth-first)."""

    def walk(abs_dir: str, rel: str) -> Iterator[tuple[str, os.stat_result]]:
        try:
            with os.scandir(abs_dir) as it:
                names = sorted((e.name for e in it), key=lambda n: n.encode("utf-8", "surrogateescape"))
        except OSError as e:
            raise ArtfsError(f"cannot read directory {abs_dir}: {e.strerror}") from None
        for name in names:
            path = f"{rel}/{name}" if rel else name
            full = os.path.join(abs_dir, name)
            st = os.lstat(full)
            yield path, st
            if stat.S_ISDIR(st.st_mode):
                yield from walk(full, path)

    yield from walk(root, "")


def scan_size(root: str) -> int:
    return sum(st.st_size for _, st in walk_tree(root) if stat.S_ISREG(st.st_mode))


def commit_tree(
    repo: Repo, src: str, name: str, type_: str | None = None, message: str = "",
    metadata: dict[str, str] | None = None, aliases: list[str] | tuple[str, ...] = (),
    progress: Progress | None = None, base: int | None = None, force: bool = False, run: str | None = None,
    ttl: float | None = None,
) -> CommitResult:
    """`artfs put`: commit the directory `src` as the next version of `name`.

    Without `base` the version is exactly `src` (a snapshot: what others published meanwhile is not in
    it). With `base`, `src` is version `base` plus the user's changes, and those changes are merged onto
    latest like a seal's (core/rebase.py): conflicts are refused and listed, `force` keeps src's side."""
    check_name(name)
    for a in aliases:
        check_alias(a)
    check_message(message, metadata)
    if not os.path.isdir(src):
        raise ArtfsError(f"{src} is not a directory")
    committer = Committer(repo, name, progress)
    try:
        committer.check_type(type_)  # before reading anything: a wrong type fails at once
        for path, st in walk_tree(src):
            try:
                check_path(path)
            except InvalidName as e:
                raise ArtfsError(f"cannot store {os.path.join(src, path)}: {e}") from None
            full = os.path.join(src, path)
            if stat.S_ISDIR(st.st_mode):
                committer.add_dir(path, st.st_mode, st.st_mtime_ns)
            elif stat.S_ISREG(st.st_mode):
                committer.add_file(path, full, st.st_mode, st.st_mtime_ns, st.st_size, expect=st)
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(full)
                try:
                    committer.add_symlink(path, target, st.st_mtime_ns)
                except InvalidName:
                    raise ArtfsError(
                        f"cannot store symlink {full} -> {target}: it points outside the tree"
                    ) from None
            else:
                raise ArtfsError(f"cannot store {full}: not a regular file, directory or symlink")
    except BaseException:
        committer.close()
        raise
    return committer.publish(type_, message, metadata, aliases, base=base, force=force, run=run, ttl=ttl)
