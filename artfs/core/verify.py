"""`artfs verify`: is every byte each version needs still in the store, and (--deep) still right?

Shallow: every version's manifest is read and validated; every chunk location it names must be in a pack
that exists and must not be quarantined (damage.py). Deep: every location is read back with ranged GETs
of whole spans and checked against its digest — the same verification every reader does, bad copies
quarantined as they are found.

--repair makes versions whose copies are bad readable again without rewriting them (versions are
immutable): for each bad location it looks for a good copy of the same content — another location named
by a version of the store, read and verified now, or the chunk in this machine's cache, uploaded afresh
in a new pack — and records a relocation (damage.py), which readers follow when the bad copy fails them.
Content with no good copy anywhere stays broken and is listed: put it again, then run --repair.

References (core/references.py) are checked against their pins instead: one HEAD or stat per external
object (--deep: every range re-read and, with a checksum, re-hashed). A drifted or vanished object is
listed with its URI and pin, and its files count as broken; --repair cannot bring it back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from artfs.core.content import ChunkReader, plan_spans
from artfs.core.manifest import FILE
from artfs.core.packs import FLAG_SOURCE, ChunkRef, PackBuilder
from artfs.core.records import VersionRecord
from artfs.core.references import check_source, parse_token
from artfs.core.repo import Repo
from artfs.core.store_keys import pack_key
from artfs.errors import ArtfsError, IntegrityError

Location = tuple[bytes, str]  # (digest, pack)
MAX_PATHS = 20  # broken paths listed per version


@dataclass
class VersionDamage:
    ref: str
    paths: list[str] = field(default_factory=list)  # up to MAX_PATHS broken paths
    broken_files: int = 0
    problem: str = ""  # the version as a whole (its manifest cannot be read)


@dataclass
class VerifyReport:
    versions: int = 0
    chunks: int = 0
    checked_bytes: int = 0
    bad_locations: int = 0
    repaired: int = 0
    broken: list[VersionDamage] = field(default_factory=list)
    references: int = 0  # external objects checked
    drifted: dict[str, str] = field(default_factory=dict)  # URI → what is wrong with it (changed, gone)

    def as_json(self) -> dict:
        return {"versions": self.versions, "chunks": self.chunks, "checked_bytes": self.checked_bytes,
                "bad_locations": self.bad_locations, "repaired": self.repaired,
                "references": self.references, "drifted": self.drifted,
                "broken": [{"ref": d.ref, "broken_files": d.broken_files, "paths": d.paths, "problem": d.problem}
                           for d in self.broken]}


class _Collector:
    """Every distinct chunk location the checked versions name (and one ref of each)."""

    def __init__(self) -> None:
        self.refs: dict[Location, ChunkRef] = {}
        self.by_digest: dict[bytes, set[str]] = defaultdict(set)

    def add(self, ref: ChunkRef) -> None:
        key = (ref.digest, ref.pack)
        if key not in self.refs:
            self.refs[key] = ref
            self.by_digest[ref.digest].add(ref.pack)


def verify(repo: Repo, records: Iterable[VersionRecord], deep: bool = False, repair: bool = False,
           progress: Callable[[int], None] | None = None) -> VerifyReport:
    report = VerifyReport()
    records = list(records)
    seen = _Collector()
    unreadable: dict[str, str] = {}
    external: dict[str, dict[bytes, ChunkRef]] = defaultdict(dict)  # source token → its chunks
    for rec in records:
        report.versions += 1
        try:
            header, entries = repo.entries(rec)
            for entry in entries:
                if entry.kind == FILE:
                    for ref in entry.refs(header.packs):
                        if ref.flags & FLAG_SOURCE:
                            external[ref.pack].setdefault(ref.digest, ref)
                        else:
                            seen.add(ref)
        except ArtfsError as err:
            unreadable[rec.ref] = str(err)
    report.chunks = len(seen.refs)
    report.references = len(external)
    bad_sources = _check_sources(repo, external, deep, report, progress)
    bad = _find_bad(repo, seen, deep, report, progress)
    report.bad_locations = len(bad)
    fixed: set[Location] = set()
    for loc in bad:
        if repo.damage.relocated(seen.refs[loc]) is not None:
            fixed.add(loc)  # repaired before: readers already follow the relocation
    if repair:
        report.repaired = _repair(repo, seen, bad - fixed, bad, fixed)
    still_bad = bad - fixed
    for rec in records:
        if rec.ref in unreadable:
            report.broken.append(VersionDamage(rec.ref, problem=f"manifest unreadable: {unreadable[rec.ref]}"))
            continue
        if not still_bad and not bad_sources:
            continue
        damage = VersionDamage(rec.ref)
        header, entries = repo.entries(rec)
        for e in entries:
            if e.kind == FILE and any((r.digest, r.pack) in still_bad or r.pack in bad_sources
                                      for r in e.refs(header.packs)):
                damage.broken_files += 1
                if len(damage.paths) < MAX_PATHS:
                    damage.paths.append(e.path)
        if damage.broken_files:
            report.broken.append(damage)
    return report


def _check_sources(repo: Repo, external: dict[str, dict[bytes, ChunkRef]], deep: bool, report: VerifyReport,
                   progress: Callable[[int], None] | None) -> set[str]:
    """The sources (tokens) whose object no longer matches its pin: a HEAD or stat each, in parallel;
    --deep re-reads those that pass, every chunk verified as a reader would (nothing is cached)."""
    tokens = sorted(external)
    with ThreadPoolExecutor(8, thread_name_prefix="artfs-verify") as pool:
        problems = list(pool.map(lambda t: check_source(parse_token(t)), tokens))
    bad = {t: p for t, p in zip(tokens, problems, strict=True) if p is not None}
    if deep:
        reader = ChunkReader(repo.store, None, None)
        for token in tokens:
            if token in bad:
                continue
            for span in plan_spans(external[token].values()):
                try:
                    reader.fetch_span(span, populate=False)
                except ArtfsError as e:
                    bad[token] = str(e)
                    break
                n = sum(r.stored_len for r in span)
                report.checked_bytes += n
                if progress:
                    progress(n)
    for token, problem in bad.items():
        report.drifted[parse_token(token).uri] = problem
    return set(bad)


def _find_bad(repo: Repo, seen: _Collector, deep: bool, report: VerifyReport,
              progress: Callable[[int], None] | None) -> set[Location]:
    bad = {loc for loc in repo.damage.locations() if loc in seen.refs}
    packs = {pack for _, pack in seen.refs}
    missing = {p for p in sorted(packs) if not repo.store.exists(pack_key(p))}
    bad |= {loc for loc in seen.refs if loc[1] in missing}
    if not deep:
        return bad
    found: set[Location] = set()

    class Collect:
        def report(self, ref: ChunkRef, why: str) -> None:
            found.add((ref.digest, ref.pack))
            repo.damage.report(ref, why)

        def relocated(self, ref: ChunkRef) -> ChunkRef | None:
            return None  # check the copies themselves

    reader = ChunkReader(repo.store, None, Collect())
    todo = [ref for loc, ref in seen.refs.items() if loc not in bad]
    for span in plan_spans(todo):
        try:
            reader.fetch_span(span, populate=False)
        except IntegrityError:
            pass  # reported to Collect, chunk by chunk
        n = sum(r.stored_len for r in span)
        report.checked_bytes += n
        if progress:
            progress(n)
    return bad | found


def _repair(repo: Repo, seen: _Collector, todo: set[Location], bad: set[Location], fixed: set[Location]) -> int:
    """Relocate every bad location in `todo` to a verified good copy; returns how many were."""
    checker = ChunkReader(repo.store, None, None)
    pack: PackBuilder | None = None
    waiting: list[tuple[ChunkRef, ChunkRef]] = []  # (bad, good in `pack`) until the pack is uploaded
    repaired = 0
    for loc in sorted(todo):
        ref = seen.refs[loc]
        good = None
        for other_pack in sorted(seen.by_digest[ref.digest] - {ref.pack}):
            other = seen.refs[(ref.digest, other_pack)]
            if (other.digest, other.pack) in bad:
                continue
            try:
                checker.fetch_span([other], populate=False)
            except IntegrityError:
                continue
            good = other
            break
        if good is None:
            known = repo.index.known_chunk(ref.digest)
            if known is not None and known.pack != ref.pack and (known.digest, known.pack) not in bad:
                try:
                    checker.fetch_span([known], populate=False)
                    good = known
                except IntegrityError:
                    pass
        if good is not None:
            repo.damage.relocate(ref, good)
            fixed.add(loc)
            repaired += 1
            continue
        data = repo.cache.get(ref.digest)  # verified when it was cached
        if data is None:
            continue
        if pack is None:
            pack = PackBuilder()
        waiting.append((ref, pack.add(ref.digest, data)))
        if pack.full:
            repaired += _upload(repo, pack, waiting, fixed)
            pack, waiting = None, []
    if pack is not None and waiting:
        repaired += _upload(repo, pack, waiting, fixed)
    return repaired


def _upload(repo: Repo, pack: PackBuilder, waiting: list[tuple[ChunkRef, ChunkRef]], fixed: set[Location]) -> int:
    repo.store.put(pack_key(pack.pack_id), b"".join(pack.finish()))
    repo.index.add_chunks([good for _, good in waiting])
    for bad_ref, good in waiting:
        repo.damage.relocate(bad_ref, good)
        fixed.add((bad_ref.digest, bad_ref.pack))
    return len(waiting)
