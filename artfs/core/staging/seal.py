"""Sealing a staging area into a version, and telling what it changed (status).

This module sees a staging area only through `SealableArea`, the small public surface of StagingArea
(area.py) it needs: freeze/thaw, a walk of the staged tree, the data files of staged content, reset to
a fresh view of a version. StagingArea.seal()/status() call in here; nothing here imports the area.

A seal: freeze → write the staged tree as a candidate manifest (unchanged files by reference to their
chunks, never re-read; new content chunked, and only new chunks uploaded) → if latest is still the base,
publish it as base+1; else merge it onto latest and publish as latest+1, merging again if another writer
claims that number first (core/rebase.py) → reset staging to a fresh view of the new version.

Nothing in staging changes until a publish succeeded, and publishing is atomic (core/repo.py), so a failure
or kill -9 anywhere before leaves the staged changes intact and no partial version. A kill between the
publish and the reset leaves the old staged changes: sealing them again merges to "nothing new".
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Protocol

import msgspec

from artfs.core.commit import CommitResult, Committer
from artfs.core.manifest import DIR, LINK, Entry, diff_entries
from artfs.core.names import check_alias, check_message, check_path
from artfs.core.rebase import publish_onto_latest
from artfs.core.repo import Repo
from artfs.errors import ArtfsError, InvalidName


class SealableArea(Protocol):
    """What sealing and status use of a staging area (StagingArea is one)."""

    repo: Repo
    name: str

    @property
    def base(self) -> int | None: ...
    @property
    def dirty(self) -> bool: ...
    @property
    def base_packs(self) -> list[str]: ...
    def latest(self) -> int | None: ...
    def freeze(self) -> None: ...
    def thaw(self) -> None: ...
    def walk(self) -> Iterator[tuple[Entry, int | None]]: ...
    def data_path(self, data_id: int) -> str: ...
    def data_digest(self, data_id: int) -> bytes: ...
    def reset(self, base: int | None) -> None: ...


def area_status(area: SealableArea) -> list[tuple[str, str]]:
    """[(added|modified|deleted, path)] of the staged tree against its base, in path order.

    Renames show as deleted + added. Content is compared by digest, so a file rewritten with the same
    bytes is not modified; data files are hashed (once per change, cached) on the calling thread."""
    repo = area.repo
    base = iter(()) if area.base is None else repo.entries(repo.version(area.name, area.base))[1]

    def staged() -> Iterator[Entry]:
        for e, data_id in area.walk():
            if data_id is not None and not e.digest:
                e = msgspec.structs.replace(e, digest=area.data_digest(data_id))
            yield e

    words = {"removed": "deleted"}
    return [(words.get(change, change), path) for change, path in diff_entries(base, staged())]


def seal_area(
    area: SealableArea, message: str = "", aliases: list[str] | tuple[str, ...] = (), type_: str | None = None,
    metadata: dict[str, str] | None = None, force: bool = False, progress: Callable[[int], None] | None = None,
    run: str | None = None, ttl: float | None = None,
) -> CommitResult:
    """Publish the staged tree; `record` is None when it equals latest (nothing published; the aliases are
    set on latest, as `put` of an unchanged tree does).

    Raises MergeConflict (listing every conflicting path) if latest moved and changed the same paths,
    unless `force`, which keeps the staged side. Writes to the area get EBUSY meanwhile."""
    repo, name = area.repo, area.name
    for a in aliases:
        check_alias(a)
    check_message(message, metadata)
    area.freeze()
    try:
        committer = Committer(repo, name, progress)  # lists the artifact once, for every question below
        try:
            type_ = committer.check_type(type_)
            latest = committer.view().latest
            if latest is not None:  # know latest's chunks too, so content already uploaded by others is reused
                latest_rec = repo.version(name, latest)
                repo.ensure_index(latest_rec)
                if latest == area.base and not area.dirty:  # nothing to publish; aliases apply to latest, as in put
                    for alias in aliases:
                        repo.set_alias(name, alias, latest, committer.view())
                    return CommitResult(None, name, latest_rec.digest, latest_rec.files, latest_rec.bytes, 0, 0, 0)
            _feed(area, committer)
            cand_path, cand_header = committer.build()
            try:
                record, header = publish_onto_latest(repo, name, area.base, cand_path, cand_header, type_, message,
                                                     metadata, aliases, force, run=run, ttl=ttl,
                                                     view=committer.view())
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(cand_path)
        finally:
            committer.close()
        result = committer.result(record, header)
        try:
            area.reset(record.version if record is not None else area.latest())
        except Exception as e:
            what = f"{record.ref} was published" if record is not None else "nothing new to publish"
            raise ArtfsError(f"{what}, but staging could not be reset ({e}); run `artfs discard`") from e
        return result
    finally:
        area.thaw()


def _feed(area: SealableArea, committer: Committer) -> None:
    """The staged tree into the committer, in path order; every unstorable path is reported at once."""
    bad: list[str] = []
    for e, data_id in area.walk():
        try:
            check_path(e.path)
            if e.kind == DIR:
                committer.add_dir(e.path, e.mode, e.mtime_ns)
            elif e.kind == LINK:
                committer.add_symlink(e.path, e.target, e.mtime_ns)
            elif data_id is not None:
                committer.add_file(e.path, area.data_path(data_id), e.mode, e.mtime_ns, e.size)
            else:
                committer.add_existing(e, area.base_packs)
        except InvalidName as err:
            bad.append(str(err))
    if bad:
        shown = "; ".join(bad[:10]) + (f"; … ({len(bad)} problems)" if len(bad) > 10 else "")
        raise InvalidName(f"cannot seal {area.name}: {shown}")
