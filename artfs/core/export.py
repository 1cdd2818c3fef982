"""Exporting a version to a directory (`artfs get`): parallel ranged GETs, verified, written in place.

Chunks of zeros are not written: the files are created at their full size, so those ranges stay holes
(a sparse file comes back sparse, as `cp --sparse` and `rsync -S` keep it) and are not even fetched.

The export is built in a hidden sibling directory and renamed into place at the end, so an interrupted
or failed export never leaves a half-written DEST. It reads through the chunk cache but does not fill
it: the exported copy is the user's copy, and caching it too would double the disk used.

References (core/references.py) are fetched from their external objects, pinned like every read. A
changed or vanished object fails the export, after every other file was tried, listing each such URI;
`references="allow-missing"` leaves their files out and reports them instead, `"skip"` exports no
referenced file at all (the version's own content only).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from artfs.core.chunker import zero_chunk_digest
from artfs.core.content import ChunkReader, FileLayout, plan_spans
from artfs.core.manifest import DIR, FILE, LINK
from artfs.core.packs import FLAG_SOURCE, ChunkRef
from artfs.core.records import VersionRecord
from artfs.core.references import entry_source, parse_token
from artfs.core.repo import Repo
from artfs.errors import ArtfsError

BATCH_BYTES = 4 * 1024 * 1024 * 1024  # bounds bookkeeping only: data streams span by span
SPAN_BYTES = 16 * 1024 * 1024  # measured: 16 MiB ranged GETs beat 8 MiB ones against S3 here
BATCH_FILES = 20000
WORKERS = 8


@dataclass
class ExportResult:
    dest: str
    files: int
    bytes: int
    fetched_bytes: int
    requests: int
    missing: dict[str, str] = field(default_factory=dict)  # URI → why, for references left out
    skipped: int = 0  # referenced files not exported (references="skip")


def _check_dest(dest: str) -> bool:
    """True if DEST is an existing empty directory (filled in place), False if it is to be made."""
    if os.path.islink(dest):
        raise ArtfsError(f"{dest} is a symlink, not a directory")
    if os.path.lexists(dest):
        if not os.path.isdir(dest):
            raise ArtfsError(f"{dest} exists and is not a directory")
        if os.listdir(dest):
            raise ArtfsError(f"{dest} exists and is not empty")
        return True
    parent = os.path.dirname(dest)
    if not os.path.isdir(parent):
        raise ArtfsError(f"{parent} is not a directory" if os.path.lexists(parent) else f"{parent} does not exist")
    return False


def export_version(
    repo: Repo, rec: VersionRecord, dest: str, progress: Callable[[int], None] | None = None,
    workers: int = WORKERS, references: str = "fetch",
) -> ExportResult:
    """Write version `rec` to `dest`: a new directory, or an existing empty one, filled in place (its owner,
    mode and inode stay: it may be a mount point, or sit in a read-only parent). The tree is built in a
    hidden directory (beside a new DEST, inside an existing one) and moved into place at the end; a failed
    export removes it, leaving DEST as it was. Errors name DEST's paths, never the hidden ones."""
    dest = os.path.abspath(dest)
    in_place = _check_dest(dest)
    name = f".artfs-partial-{os.getpid()}"
    tmp = os.path.join(dest, name) if in_place else os.path.join(os.path.dirname(dest),
                                                                   f".{os.path.basename(dest)}{name}")
    shutil.rmtree(tmp, ignore_errors=True)
    reader = ChunkReader(repo.store, repo.cache, repo.damage)
    try:
        os.mkdir(tmp, 0o700)
        header, entries = repo.entries(rec)
        dirs: list[tuple[str, int, int]] = []
        batch = _Batch(tmp, header.packs, reader, progress, workers)
        skipped = 0
        for e in entries:
            full = os.path.join(tmp, e.path)
            if e.kind == DIR:
                os.mkdir(full, 0o700)
                dirs.append((full, e.mode, e.mtime_ns))
            elif e.kind == LINK:
                os.symlink(e.target, full)
                os.utime(full, ns=(e.mtime_ns, e.mtime_ns), follow_symlinks=False)
            elif e.kind == FILE:
                if references == "skip" and entry_source(e, header.packs) is not None:
                    skipped += 1
                    continue
                batch.add(full, e)
                if batch.bytes >= BATCH_BYTES or len(batch.files) >= BATCH_FILES:
                    batch.run()
        batch.run()
        if batch.missing and references != "allow-missing":
            listed = "; ".join(batch.missing.values())
            raise ArtfsError(f"{len(batch.missing)} referenced objects changed or vanished (nothing was exported; "
                             f"--allow-missing-references exports the rest): {listed}")
        for full, mode, mtime in reversed(dirs):  # children first: setting them touches the parent
            os.chmod(full, mode)
            os.utime(full, ns=(mtime, mtime))
        if in_place:  # each top-level entry renamed into DEST (same filesystem), then the hidden dir goes
            for entry in os.listdir(tmp):
                os.rename(os.path.join(tmp, entry), os.path.join(dest, entry))
            os.rmdir(tmp)
        else:
            os.chmod(tmp, 0o755)
            os.rename(tmp, dest)
    except OSError as e:
        _remove(tmp, dest, in_place)
        where = (e.filename or dest).replace(tmp, dest)
        raise ArtfsError(f"cannot write {where}: {e.strerror or e}") from None
    except BaseException:
        _remove(tmp, dest, in_place)
        raise
    return ExportResult(dest, header.files - skipped - batch.left_out, header.bytes, reader.fetched_bytes,
                        reader.requests, batch.missing, skipped)


def _remove(tmp: str, dest: str, in_place: bool) -> None:
    """Undo a failed export: the hidden tree, and whatever was already moved into an in-place DEST."""
    shutil.rmtree(tmp, ignore_errors=True)
    if in_place:
        for entry in os.listdir(dest):
            path = os.path.join(dest, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(path)


class _Batch:
    """Files whose chunks are fetched together: spans across files, so small files share GETs."""

    def __init__(self, root: str, packs: list[str], reader: ChunkReader,
                 progress: Callable[[int], None] | None, workers: int) -> None:
        self.root, self.packs, self.reader = root, packs, reader
        self.progress, self.workers = progress, workers
        self.files: list[tuple[str, int, int]] = []
        self.targets: dict[bytes, list[tuple[str, int]]] = defaultdict(list)
        self.refs: list[ChunkRef] = []
        self.bytes = 0
        self._lock = threading.Lock()
        self.missing: dict[str, str] = {}  # URI → why: references whose object changed or vanished
        self._failed: set[bytes] = set()  # the digests they left unwritten
        self.left_out = 0

    def add(self, full: str, e) -> None:
        fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            if e.size:
                os.ftruncate(fd, e.size)
        finally:
            os.close(fd)
        self.files.append((full, e.mode, e.mtime_ns))
        for pos, ref in FileLayout.of_entry(e, self.packs).pieces():
            if ref.digest == zero_chunk_digest(ref.raw_len):  # a hole, as the source had (cp --sparse):
                if self.progress:                              # the file is already that long
                    self.progress(ref.raw_len)
                continue
            if ref.digest not in self.targets:
                self.refs.append(ref)
            self.targets[ref.digest].append((full, pos))
        self.bytes += e.size

    def _write(self, digest: bytes, data: bytes | memoryview) -> None:
        for full, pos in self.targets[digest]:
            fd = os.open(full, os.O_WRONLY)
            try:
                os.pwrite(fd, data, pos)
            finally:
                os.close(fd)
            if self.progress:
                with self._lock:
                    self.progress(len(data))

    def _span(self, span: list[ChunkRef]) -> None:
        if span[0].flags & FLAG_SOURCE:  # a changed source fails its files, not the others: all are listed
            try:
                got = self.reader.read_span(span)
            except ArtfsError as e:
                with self._lock:
                    self.missing[parse_token(span[0].pack).uri] = str(e)
                    self._failed.update(r.digest for r in span)
                return
        else:
            got = self.reader.read_span(span)
        for digest, data in got.items():
            self._write(digest, data)

    def run(self) -> None:
        if self.refs:
            spans = plan_spans(self.refs, max_span=SPAN_BYTES)
            spans.sort(key=lambda s: -sum(r.stored_len for r in s))
            with ThreadPoolExecutor(self.workers, thread_name_prefix="artfs-get") as pool:
                for f in [pool.submit(self._span, s) for s in spans]:
                    f.result()
        gone = {full for d in self._failed for full, _ in self.targets[d]}
        for full in gone:  # left out, never half-written (allow-missing), or the export fails anyway
            os.unlink(full)
        self.left_out += len(gone)
        self._failed.clear()
        for full, mode, mtime in self.files:
            if full in gone:
                continue
            os.chmod(full, mode)
            os.utime(full, ns=(mtime, mtime))
        self.files.clear()
        self.targets.clear()
        self.refs.clear()
        self.bytes = 0
