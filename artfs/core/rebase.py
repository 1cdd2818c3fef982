"""Publishing a tree that was made from an older version: onto latest, by a three-way merge.

A seal (a staging tree started from version `base`) and `put DIR --base REF` (DIR is REF plus the user's
changes) both hold a candidate tree made against `base`. If latest is still `base`, the candidate is
published as base+1. Otherwise someone published meanwhile: the candidate's changes are merged onto latest
(core/merge.py; the same path changed on both sides is a conflict, refused and listed unless `force`
keeps the candidate's side) and published as latest+1 — and if another writer claims that number first,
merged again onto the newer latest. No writer's changes are ever silently dropped.
"""

from __future__ import annotations

import contextlib
import os

from artfs.core.manifest import Header, ManifestWriter
from artfs.core.manifest_file import read_manifest
from artfs.core.merge import MergeConflict, Stream, merge_trees
from artfs.core.records import VersionRecord
from artfs.core.repo import ArtifactView, Repo, VersionTaken
from artfs.errors import NotFound


def publish_onto_latest(
    repo: Repo, name: str, base: int | None, cand_path: str, cand_header: Header, type_: str, message: str,
    metadata: dict[str, str] | None, aliases: list[str] | tuple[str, ...], force: bool, side: str = "staged",
    repaired: bool = False, run: str | None = None, ttl: float | None = None, view: ArtifactView | None = None,
) -> tuple[VersionRecord | None, Header]:
    """Claim base+1 for the candidate, or latest+1 for its merge onto latest; re-merge if beaten to it.
    `side` names the candidate in a conflict message ("staged", "DIR's").

    repo.publish moves the manifest file it is given into the manifest cache, so each attempt gets its
    own hard link of the candidate (the candidate is needed again if the attempt loses its number).

    Latest is the newest live version and the number is the highest ever claimed + 1 (deleted versions
    keep theirs, core/lifecycle.py); if every version was deleted meanwhile, the candidate is published
    as it is (there is nothing to merge onto).

    `view`: the artifact as the caller listed it (a commit lists it once), for the first attempt; safe when
    stale, as Repo.publish says: a number someone claimed since fails the claim, and the next attempt lists
    afresh (once: its view answers both the heads and the claim)."""
    while True:
        if view is None:
            view = repo.view(name)
        latest, number = view.latest, view.next_number
        if base is not None and number == 0:  # no version record at all: the base is not this store's
            raise NotFound(f"{name}:v{base} does not exist")
        if latest == base or latest is None:
            path = cand_path + ".attempt"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            os.link(cand_path, path)
            header = cand_header
        else:
            path, header = _merge(repo, name, base, cand_path, cand_header, latest, force, side)
        try:
            record = repo.publish(name, type_, path, header, message, metadata, aliases, parent=base,
                                  number=number, repaired=repaired, run=run, ttl=ttl, view=view)
        except VersionTaken:
            view = None
            continue
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return record, header


def _merge(repo: Repo, name: str, base: int | None, cand_path: str, cand_header: Header, latest: int,
           force: bool, side: str) -> tuple[str, Header]:
    def stream(number: int) -> Stream:
        header, entries = repo.entries(repo.version(name, number))
        return header.packs, entries

    base_stream: Stream = ([], iter(())) if base is None else stream(base)
    ours: Stream = (cand_header.packs, read_manifest(cand_path, f"{side} tree")[1])
    writer = ManifestWriter(tmp_dir=repo.cache_dir)
    try:
        conflicts = merge_trees(base_stream, stream(latest), ours, writer, force)
        if conflicts and not force:
            raise MergeConflict(name, conflicts, side)
        return writer.finish()
    except BaseException:
        writer.close()
        raise
