"""Exporting a version to a directory (`artfs get`): parallel ranged GETs, verified, written in place.

The export is built in a hidden sibling directory and renamed into place at the end, so an interrupted
or failed export never leaves a half-written DEST. It reads through the chunk cache but does not fill
it: the exported copy is the user's copy, and caching it too would double the disk used.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from artfs.core.content import ChunkReader, FileLayout, plan_spans
from artfs.core.manifest import DIR, FILE, LINK
from artfs.core.packs import ChunkRef
from artfs.core.records import VersionRecord
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


def _check_dest(dest: str) -> None:
    if os.path.lexists(dest):
        if not os.path.isdir(dest) or os.path.islink(dest):
            raise ArtfsError(f"{dest} exists and is not a directory")
        if os.listdir(dest):
            raise ArtfsError(f"{dest} exists and is not empty")


def export_version(
    repo: Repo, rec: VersionRecord, dest: str, progress: Callable[[int], None] | None = None,
    workers: int = WORKERS,
) -> ExportResult:
    dest = os.path.abspath(dest)
    _check_dest(dest)
    parent = os.path.dirname(dest)
    if not os.path.isdir(parent):
        raise ArtfsError(f"{parent} does not exist")
    tmp = os.path.join(parent, f".{os.path.basename(dest)}.artfs-partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.mkdir(tmp, 0o700)
    reader = ChunkReader(repo.store, repo.cache, repo.damage)
    try:
        header, entries = repo.entries(rec)
        dirs: list[tuple[str, int, int]] = []
        batch = _Batch(tmp, header.packs, reader, progress, workers)
        for e in entries:
            full = os.path.join(tmp, e.path)
            if e.kind == DIR:
                os.mkdir(full, 0o700)
                dirs.append((full, e.mode, e.mtime_ns))
            elif e.kind == LINK:
                os.symlink(e.target, full)
                os.utime(full, ns=(e.mtime_ns, e.mtime_ns), follow_symlinks=False)
            elif e.kind == FILE:
                batch.add(full, e)
                if batch.bytes >= BATCH_BYTES or len(batch.files) >= BATCH_FILES:
                    batch.run()
        batch.run()
        for full, mode, mtime in reversed(dirs):  # children first: setting them touches the parent
            os.chmod(full, mode)
            os.utime(full, ns=(mtime, mtime))
        os.chmod(tmp, 0o755)
        if os.path.isdir(dest):
            os.rmdir(dest)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(dest, header.files, header.bytes, reader.fetched_bytes, reader.requests)


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

    def add(self, full: str, e) -> None:
        fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            if e.size:
                os.ftruncate(fd, e.size)
        finally:
            os.close(fd)
        self.files.append((full, e.mode, e.mtime_ns))
        for pos, ref in FileLayout.of_entry(e, self.packs).pieces():
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
        for digest, data in self.reader.read_span(span).items():
            self._write(digest, data)

    def run(self) -> None:
        if self.refs:
            spans = plan_spans(self.refs, max_span=SPAN_BYTES)
            spans.sort(key=lambda s: -sum(r.stored_len for r in s))
            with ThreadPoolExecutor(self.workers, thread_name_prefix="artfs-get") as pool:
                for f in [pool.submit(self._span, s) for s in spans]:
                    f.result()
        for full, mode, mtime in self.files:
            os.chmod(full, mode)
            os.utime(full, ns=(mtime, mtime))
        self.files.clear()
        self.targets.clear()
        self.refs.clear()
        self.bytes = 0
