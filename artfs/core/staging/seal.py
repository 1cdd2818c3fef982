"""Sealing a staging area into a version, and telling what it changed (status).

A seal: freeze → write the staged tree as a candidate manifest (unchanged files by reference to their
chunks, never re-read; new content chunked, and only new chunks uploaded) → if latest is still the base,
publish it as base+1; else merge it onto latest (merge.py) and publish as latest+1, merging again if
another writer claims that number first → reset staging to a fresh view of the new version.

Nothing in staging changes until a publish succeeded, and publishing is atomic (repo.py), so a failure
or kill -9 anywhere before leaves the staged changes intact and no partial version. A kill between the
publish and the reset leaves the old staged changes: sealing them again merges to "nothing new".
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import msgspec

from artfs.core.commit import CommitResult, Committer
from artfs.core.manifest import DIR, FILE, LINK, Entry, Header, ManifestWriter, diff_entries
from artfs.core.manifest_file import read_manifest
from artfs.core.merge import MergeConflict, Stream, merge_trees
from artfs.core.names import check_alias, check_path
from artfs.core.records import VersionRecord
from artfs.core.repo import VersionTaken
from artfs.core.staging.layout import ROOT_ID
from artfs.core.staging.nodes import Row, dec
from artfs.errors import ArtfsError, InvalidName

if TYPE_CHECKING:
    from artfs.core.staging.area import StagingArea


def status(area: StagingArea) -> list[tuple[str, str]]:
    """[(added|modified|deleted, path)] of the staged tree against its base, in path order.

    Renames show as deleted + added. Content is compared by digest, so a file rewritten with the same
    bytes is not modified; data files are hashed (once per change, cached) on the calling thread."""
    repo = area.repo
    base = iter(()) if area.base is None else repo.entries(repo.version(area.name, area.base))[1]

    def staged() -> Iterator[Entry]:
        for e, data_id in walk(area):
            if data_id is not None and not e.digest:
                e = msgspec.structs.replace(e, digest=area._data_digest(data_id))
            yield e

    words = {"removed": "deleted"}
    return [(words.get(change, change), path) for change, path in diff_entries(base, staged())]


def seal(
    area: StagingArea, message: str = "", aliases: list[str] | tuple[str, ...] = (), type_: str | None = None,
    metadata: dict[str, str] | None = None, force: bool = False, progress: Callable[[int], None] | None = None,
) -> CommitResult:
    """Publish the staged tree; `record` is None when it equals latest (nothing published, no alias set).

    Raises MergeConflict (listing every conflicting path) if latest moved and changed the same paths,
    unless `force`, which keeps the staged side. Writes to the area get EBUSY meanwhile."""
    repo, name = area.repo, area.name
    for a in aliases:
        check_alias(a)
    with area._lock:
        area._writable()
        area._frozen = True
    try:
        type_ = repo.check_type(name, type_)
        latest = area._latest()
        if latest is not None:  # know latest's chunks too, so content already uploaded by others is reused
            latest_rec = repo.version(name, latest)
            repo.ensure_index(latest_rec)
            if latest == area.base and not area.dirty:
                return CommitResult(None, name, latest_rec.digest, latest_rec.files, latest_rec.bytes, 0, 0, 0)
        committer = Committer(repo, name, progress)
        try:
            _feed(area, committer)
            cand_path, cand_header = committer.build()
            try:
                record, header = _publish(area, type_, cand_path, cand_header, message, metadata, aliases, force)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(cand_path)
        finally:
            committer.close()
        result = committer.result(record, header)
        try:
            area._reset(record.version if record is not None else area._latest())
        except Exception as e:
            what = f"{record.ref} was published" if record is not None else "nothing new to publish"
            raise ArtfsError(f"{what}, but staging could not be reset ({e}); run `artfs discard`") from e
        return result
    finally:
        area._frozen = False


def _feed(area: StagingArea, committer: Committer) -> None:
    """The staged tree into the committer, in path order; every unstorable path is reported at once."""
    bad: list[str] = []
    for e, data_id in walk(area):
        try:
            check_path(e.path)
            if e.kind == DIR:
                committer.add_dir(e.path, e.mode, e.mtime_ns)
            elif e.kind == LINK:
                committer.add_symlink(e.path, e.target, e.mtime_ns)
            elif data_id is not None:
                committer.add_file(e.path, area._data_path(data_id), e.mode, e.mtime_ns, e.size)
            else:
                committer.add_existing(e, area.base_packs)
        except InvalidName as err:
            bad.append(str(err))
    if bad:
        shown = "; ".join(bad[:10]) + (f"; … ({len(bad)} problems)" if len(bad) > 10 else "")
        raise InvalidName(f"cannot seal {area.name}: {shown}")


def _publish(
    area: StagingArea, type_: str, cand_path: str, cand_header: Header, message: str,
    metadata: dict[str, str] | None, aliases: list[str] | tuple[str, ...], force: bool,
) -> tuple[VersionRecord | None, Header]:
    """Claim base+1 for the candidate, or latest+1 for its merge onto latest; re-merge if beaten to it.

    repo.publish moves the manifest file it is given into the manifest cache, so each attempt gets its
    own hard link of the candidate (the candidate is needed again if the attempt loses its number)."""
    repo, name, base = area.repo, area.name, area.base
    while True:
        latest = area._latest()
        if latest == base:
            path = cand_path + ".attempt"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            os.link(cand_path, path)
            header, number = cand_header, 0 if base is None else base + 1
        else:
            path, header = _merge(area, cand_path, cand_header, latest, force)
            number = latest + 1
        try:
            record = repo.publish(name, type_, path, header, message, metadata, aliases, parent=base, number=number)
        except VersionTaken:
            continue
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return record, header


def _merge(area: StagingArea, cand_path: str, cand_header: Header, latest: int, force: bool) -> tuple[str, Header]:
    repo, name = area.repo, area.name

    def stream(number: int) -> Stream:
        header, entries = repo.entries(repo.version(name, number))
        return header.packs, entries

    base: Stream = ([], iter(())) if area.base is None else stream(area.base)
    ours: Stream = (cand_header.packs, read_manifest(cand_path, "staged tree")[1])
    writer = ManifestWriter(tmp_dir=repo.cache_dir)
    try:
        conflicts = merge_trees(base, stream(latest), ours, writer, force)
        if conflicts and not force:
            raise MergeConflict(name, conflicts)
        return writer.finish()
    except BaseException:
        writer.close()
        raise


# --- the staged tree as manifest entries ---------------------------------------------------------------

_PAGE = 1000


def walk(area: StagingArea, dir_id: int = ROOT_ID, prefix: str = "") -> Iterator[tuple[Entry, int | None]]:
    """The staged tree in manifest order, as (entry, data id). The data id is set when a file's content
    is data/<id> (the entry has no chunks then); an unchanged base file keeps its base entry's chunks.
    A lazy directory streams its base subtree from the index, paths rewritten. The area lock is held
    per page of a directory, not across the walk."""
    after = None
    while True:
        with area._lock:
            row = area._get(dir_id)
            lazy = dec(row.base_path) if row.base_path is not None else None
            page = [] if lazy is not None else area._children(dir_id, after, _PAGE)
            items = [(r, _entry(area, r, f"{prefix}/{dec(r.name)}" if prefix else dec(r.name))) for r in page]
        if lazy is not None:
            yield from _walk_base(area, lazy, prefix)
            return
        for r, item in items:
            yield item
            if r.kind == DIR:
                yield from walk(area, r.id, item[0].path)
        if len(page) < _PAGE:
            return
        after = page[-1].name


def _walk_base(area: StagingArea, base_dir: str, prefix: str) -> Iterator[tuple[Entry, int | None]]:
    after = None
    while True:
        page = area.repo.index.listdir(area._mid, base_dir, after, _PAGE)
        for e in page:
            path = f"{prefix}/{e.name}" if prefix else e.name
            yield msgspec.structs.replace(e, path=path), None
            if e.kind == DIR:
                yield from _walk_base(area, e.path, path)
        if len(page) < _PAGE:
            return
        after = page[-1].name


def _entry(area: StagingArea, row: Row, path: str) -> tuple[Entry, int | None]:
    if row.kind == DIR:
        return Entry(path, DIR, row.mode, row.mtime_ns, 0), None
    if row.kind == LINK:
        return Entry(path, LINK, 0o777, row.mtime_ns, len(row.target), row.target), None
    if row.has_data:
        st = os.fstat(area._data.fd(row.id))
        return Entry(path, FILE, row.mode, st.st_mtime_ns, st.st_size, b"", row.digest or b""), row.id
    base = area._base_entry(row)
    return msgspec.structs.replace(base, path=path, mode=row.mode, mtime_ns=row.mtime_ns), None
