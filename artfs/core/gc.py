"""Garbage collection: delete the packs no kept version needs, with no lock that writers must take.

What is kept. A pack is *referenced* when the manifest of a kept version names it (lifecycle.kept_versions:
live versions, and soft-deleted ones still restorable), when the base version of a staging area on any
machine names it (`gc/staging/<area id>` leases, gc_guard.StagingLeases), or when a relocation record
from a referenced pack points into it (damage.py: readers follow those). Everything else is garbage:
packs of versions past their retention window, and orphans of commits that failed before their claim.

The danger is a writer on another machine, half-way through a commit: its new packs are referenced by no
version yet, and the chunks it dedups against (from its parent, or a stale local known-chunk index) may be
in a pack that looks unreferenced. The protocol (after kopia: safety margins, two phases, re-upload):

- M, the margin, is longer than any commit takes from its first upload to its claim (default 6 h; the
  store's `gc/config.json`, which writers read too; core/gc_guard.py).
- Condemn: a cycle lists versions (starting at T), then condemns each unreferenced pack whose last write
  is older than T − M by creating `gc/condemned/<pack>` (create-if-absent: a record keeps its first time).
- Delete: a later cycle, whose listing of versions started at T' ≥ (the condemnation record's time) + M,
  deletes a condemned pack only if that listing still finds it unreferenced, then the record. A condemned
  pack found referenced again (a writer adopted it before the condemnation reached it) is un-condemned.
- Writers (core/gc_guard.py, before the claim in repo.publish): every pack the manifest names — uploaded
  by the commit or reused — must exist and not be condemned, in a LIST of `gc/condemned/` begun at t0;
  the claim happens before t0 + M/2, else the check is redone. A condemned or missing pack's content is
  uploaded afresh into a new pack (new random id, never condemned), the manifest rewritten, checked again.

Why nothing referenced is lost. Suppose a cycle deletes pack p while version V, claimed at t_c, names p.
The deleting cycle's listing began at T' ≥ r + M, where r is when p's condemnation record was written.
If the listing began after t_c it saw V (LIST is strongly consistent on S3 and on a directory), so p was
referenced: contradiction. So t_c > T' ≥ r + M. V's writer checked p at t0 > t_c − M/2 > r + M/2: the
record existed then (records are created once, never rewritten, so the record the deleting cycle read has
existed since r), so the writer saw p condemned and would not have claimed with it: contradiction. A
staging area's lease and a relocation are read by the same listing, so the same holds for them. Two
collectors at once only repeat each other's idempotent steps (create-if-absent records, deletes of what
is already gone), so `gc/lease` is an optimisation, never part of the argument. A cycle
killed anywhere leaves records that the next one finishes: a record whose pack is gone is removed, an
expired lease is taken over. Clocks: a condemnation's time is the later of the collector's clock written
in it and its store time; a pack's age is its store time (listings' last-modified) against this machine's
clock; writers measure M/2 on their own clock. Skews and request times far below M are absorbed by the
M/2 kept in reserve (and a wrong pack age only condemns early, which the writers' check covers).

Costs are per pack, never per chunk: a LIST of packs/, gc/condemned/, gc/staging/, relocations/ and
quarantine/, a GET of each kept version's manifest not already local (only its header is read), one
request per pack deleted or condemned. Quarantine and relocation records whose pack is gone and named
by no kept manifest are removed too. Packs that are mostly dead are rewritten with --compact
(gc_compact.py): their live chunks are relocated, after which they are collected like any other.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from artfs.core import store_format
from artfs.core.gc_compact import candidates, rewrite, scan_live
from artfs.core.gc_guard import collector_margin, set_margin
from artfs.core.lifecycle import kept_versions
from artfs.core.manifest_file import ManifestFile
from artfs.core.records import GcLease, RelocationRecord, StagingLease, creator, encode
from artfs.core.references import pack_ids
from artfs.core.repo import Repo
from artfs.core.store_keys import (
    CONDEMNED,
    GC_LEASE,
    PACKS,
    QUARANTINE,
    RELOCATIONS,
    STAGING_LEASES,
    condemned_key,
    parse_condemned_key,
    parse_pack_key,
    parse_quarantine_key,
    parse_relocation_key,
)
from artfs.errors import ArtfsError, StoreNotFound
from artfs.storage.store import ObjectInfo, Store

log = logging.getLogger(__name__)

LEASE_TTL = 600.0  # a collector refreshes its lease while it runs; a dead one's lapses after this
ORPHANS = "(no version: orphans of failed commits)"


class GcBusy(ArtfsError):
    """Another collector holds the store's gc lease."""


@dataclass
class PackFate:
    """An unreferenced pack and what this cycle does (or would do) with it."""

    pack: str
    size: int
    action: str  # "delete" (condemned ≥ M ago), "condemn", "wait" (condemned, not old enough), "young"
    versions: list[str] = field(default_factory=list)  # non-kept versions naming it (dry run only)


@dataclass
class GcReport:
    dry_run: bool
    margin: float
    kept_versions: int = 0
    packs: int = 0
    referenced_packs: int = 0
    deleted_packs: int = 0
    freed_bytes: int = 0
    condemned_packs: int = 0
    condemned_bytes: int = 0
    waiting_packs: int = 0
    uncondemned: int = 0
    records_removed: int = 0
    compacted_packs: int = 0
    compacted_bytes: int = 0  # live bytes copied out of them
    compacted_of: int = 0  # their size
    fates: list[PackFate] = field(default_factory=list)

    def by_version(self) -> dict[str, dict[str, int]]:
        """Bytes of unreferenced packs per group of versions naming them: {label: {action: bytes}}."""
        out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for f in self.fates:
            out[", ".join(f.versions) or ORPHANS][f.action] += f.size
        return {k: dict(v) for k, v in sorted(out.items())}

    def as_json(self) -> dict:
        keys = ("dry_run", "margin", "kept_versions", "packs", "referenced_packs", "deleted_packs", "freed_bytes",
                "condemned_packs", "condemned_bytes", "waiting_packs", "uncondemned", "records_removed",
                "compacted_packs", "compacted_bytes")
        out: dict = {k: getattr(self, k) for k in keys}
        if self.dry_run:
            out["unreferenced"] = [{"pack": f.pack, "bytes": f.size, "action": f.action, "versions": f.versions}
                                   for f in self.fates]
            out["by_version"] = self.by_version()
        return out


# --- the lease (an optimisation) ------------------------------------------------------------------------

def _holder_alive(holder: str) -> bool:
    """A lease taken on this host by a process that is gone is dead (a killed gc is rerun at once)."""
    who, _, rest = holder.rpartition("@")
    host, _, pid = rest.partition(":")
    if host != creator().rpartition("@")[2] or not who:
        return True
    try:
        os.kill(int(pid.partition(":")[0]), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


class Lease:
    """`gc/lease`: one collector at a time, as a courtesy (two at once would only repeat each other)."""

    def __init__(self, repo: Repo, clock: Callable[[], float]) -> None:
        self.store = repo.store
        self.clock = clock
        self.holder = f"{creator()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._renewed = 0.0

    def _record(self) -> bytes:
        now = self.clock()
        self._renewed = now
        return encode(GcLease(self.holder, now + LEASE_TTL, now))

    def acquire(self, wait: float = 0.0) -> None:
        deadline = time.monotonic() + wait
        while True:
            if self.store.create_if_absent(GC_LEASE, self._record()):
                return
            try:
                other = msgspec.json.decode(self.store.get(GC_LEASE), type=GcLease)
            except StoreNotFound:
                continue
            except (msgspec.DecodeError, msgspec.ValidationError):
                other = GcLease("an unreadable lease", 0.0)
            if other.expires < self.clock() or not _holder_alive(other.holder):
                log.info("taking over the gc lease of %s (lapsed)", other.holder)
                self.store.delete(GC_LEASE)
                continue
            if time.monotonic() >= deadline:
                raise GcBusy(f"another gc ({other.holder.rsplit(':', 1)[0]}) is collecting {self.store.uri} "
                             f"(its lease runs for {max(0, other.expires - self.clock()):.0f} s more); "
                             f"try again later, or --wait")
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))

    def renew(self) -> None:
        if self.clock() - self._renewed > LEASE_TTL / 4:
            self.store.put(GC_LEASE, self._record())

    def release(self) -> None:
        try:
            mine = msgspec.json.decode(self.store.get(GC_LEASE), type=GcLease).holder == self.holder
        except (StoreNotFound, msgspec.DecodeError, msgspec.ValidationError):
            return
        if mine:
            self.store.delete(GC_LEASE)


# --- what is referenced ----------------------------------------------------------------------------------

class References:
    """The packs that must be kept, as one listing of versions (begun at `started`) saw them."""

    def __init__(self, repo: Repo, now: float) -> None:
        self.repo = repo
        self.started = now
        self._packs_of: dict[str, list[str]] = {}
        kept = kept_versions(repo, now)
        self.kept = {(r.artifact, r.version) for r in kept}
        self.manifests = {r.manifest for r in kept}  # and staging bases': every manifest to keep readable
        self.expired_leases: list[str] = []
        for key in repo.store.list(STAGING_LEASES):
            lease = self._staging_lease(key)
            if lease.expires < now:
                self.expired_leases.append(key)
            elif lease.base is not None and (lease.artifact, lease.base) not in self.kept:
                try:
                    base = repo.version(lease.artifact, lease.base)
                except ArtfsError as e:
                    raise ArtfsError(f"staging lease {key} keeps {lease.artifact}:v{lease.base}, which cannot be "
                                     f"read ({e}); gc stops rather than guess what it keeps alive") from None
                self.manifests.add(base.manifest)
        self.named: set[str] = set()  # packs a kept manifest names
        for mid in self.manifests:
            self.named.update(self.manifest_packs(mid))
        self.packs = set(self.named)  # the packs needed: named ones, and where their copies were relocated
        self.relocations: list[tuple[str, str]] = []  # (key, from pack)
        self.relocated: set[tuple[bytes, str]] = set()
        self.targets: set[str] = set()
        for key in repo.store.list(RELOCATIONS):
            parsed = parse_relocation_key(key)
            if parsed is None:
                continue
            self.relocations.append((key, parsed[1]))
            self.relocated.add(parsed)
            if parsed[1] in self.named:  # readers of the bad (or moved) copy are sent to the good one: keep it
                target = self._relocation_target(key)
                if target is not None:
                    self.targets.add(target)
        self.packs |= self.targets

    def release_relocated(self, live: dict[str, dict[bytes, Any]]) -> None:
        """A pack whose every chunk that kept manifests name was relocated (gc_compact.py) is not needed
        itself: readers follow the relocations, whose targets stay needed."""
        for p in self.named - self.targets:
            chunks = live.get(p)
            if chunks and all((d, p) in self.relocated for d in chunks):
                self.packs.discard(p)

    def manifest_packs(self, mid: str) -> list[str]:
        """A manifest's pack table: from the local index or the manifest's footer (fetched once)."""
        packs = self._packs_of.get(mid)
        if packs is None:
            header = self.repo.index.header(mid)
            if header is None:
                with ManifestFile(self.repo.manifest_file(mid), mid) as mf:
                    header = mf.header
            packs = self._packs_of[mid] = pack_ids(header.packs)  # references' sources are no packs
        return packs

    def _staging_lease(self, key: str) -> StagingLease:
        try:
            return msgspec.json.decode(self.repo.store.get(key), type=StagingLease)
        except StoreNotFound:
            return StagingLease("", None, 0.0)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:  # cannot tell what it keeps: stop
            raise ArtfsError(f"staging lease {key} is unreadable ({e}); gc stops rather than guess what it "
                             f"keeps alive (delete it if no staging area uses it)") from None

    def _relocation_target(self, key: str) -> str | None:
        try:
            return msgspec.json.decode(self.repo.store.get(key), type=RelocationRecord).pack
        except StoreNotFound:  # removed meanwhile by another collector: its pack is gone
            return None
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise ArtfsError(f"relocation record {key} is unreadable ({e}); gc stops rather than guess") from None

    def attribute(self, fates: list[PackFate]) -> None:
        """Name, for each unreferenced pack, the versions past their retention window that use it."""
        wanted = {f.pack: f for f in fates}
        for p, f in wanted.items():
            if p in self.named:  # released by a compaction: kept versions read it through relocations
                f.versions.append("(rewritten: its live chunks moved)")
        for name, view in self.repo.views(self.started).items():
            for n in sorted(view.states):
                if (name, n) in self.kept:
                    continue
                try:
                    packs = self.manifest_packs(self.repo.version(name, n).manifest)
                except ArtfsError as e:
                    log.warning("%s:v%d: %s", name, n, e)
                    continue
                for p in packs:
                    if p in wanted:
                        wanted[p].versions.append(f"{name}:v{n}")


# --- the cycle ----------------------------------------------------------------------------------------------

def collect(repo: Repo, *, dry_run: bool = False, margin: float | None = None, wait: float = 0.0,
            compact: bool = False, clock: Callable[[], float] = time.time) -> GcReport:
    """One gc cycle (module docstring): delete what an earlier cycle condemned at least a margin ago and is
    still unreferenced, condemn what is unreferenced now, drop records about packs that are gone.
    `margin` (seconds) changes the store's setting first. With `dry_run`, change nothing: say what would
    go, and which versions it belonged to. With `compact`, also rewrite packs that are mostly dead
    (gc_compact.py), and let go of those whose live chunks were moved."""
    store = repo.store
    if margin is not None and not dry_run:
        set_margin(store, margin, clock())
    m = collector_margin(store, clock())
    if margin is not None and dry_run:
        m = max(m, margin)
    report = GcReport(dry_run, m)
    lease = None
    if not dry_run:
        repo.check_write(store_format.GC)  # a client that does not know gc must not write here any more
        lease = Lease(repo, clock)
        lease.acquire(wait)
    try:
        _cycle(repo, report, lease, clock, compact)
    finally:
        if lease is not None:
            lease.release()
    return report


class _Condemnation(msgspec.Struct, frozen=True):
    time: float
    by: str = ""


def _condemned_at(store: Store, info: ObjectInfo) -> float:
    """When a pack was condemned: the collector's clock, written in the record (its store time if the
    record cannot be read: the later of the two counts, so a damaged record only delays)."""
    try:
        return max(msgspec.json.decode(store.get(info.key), type=_Condemnation).time, info.mtime)
    except StoreNotFound:
        return info.mtime
    except (msgspec.DecodeError, msgspec.ValidationError):
        return info.mtime


def _cycle(repo: Repo, report: GcReport, lease: Lease | None, clock: Callable[[], float],
           compact: bool = False) -> None:
    store, m, dry = repo.store, report.margin, report.dry_run
    refs = References(repo, clock())  # T: every decision below is against this listing
    t = refs.started
    live = None
    if compact:
        live = scan_live(repo, refs.manifests)
        refs.release_relocated(live)
    report.kept_versions, report.referenced_packs = len(refs.kept), len(refs.packs)
    packs = {p: info for info in store.list_info(PACKS) if (p := parse_pack_key(info.key))}
    condemned = {p: info for info in store.list_info(CONDEMNED) if (p := parse_condemned_key(info.key))}
    report.packs = len(packs)

    def remove(key: str) -> None:
        report.records_removed += 1
        if not dry:
            store.delete(key)
            if lease is not None:
                lease.renew()

    gone: set[str] = set()
    for p, rec in condemned.items():
        if p in refs.packs:  # adopted by a version claimed before the condemnation reached its writer
            report.uncondemned += 1
            remove(rec.key)
        elif p not in packs:  # deleted by a cycle killed before it removed the record
            remove(rec.key)
        elif _condemned_at(store, rec) + m <= t:
            info = packs[p]
            report.fates.append(PackFate(p, info.size, "delete"))
            report.deleted_packs += 1
            report.freed_bytes += info.size
            if not dry:
                store.delete(info.key)
                gone.add(p)
            remove(rec.key)
        else:
            report.fates.append(PackFate(p, packs[p].size, "wait"))
            report.waiting_packs += 1
    for p, info in packs.items():
        if p in refs.packs or p in condemned:
            continue
        if info.mtime + m > t:
            report.fates.append(PackFate(p, info.size, "young"))
            continue
        report.fates.append(PackFate(p, info.size, "condemn"))
        report.condemned_packs += 1
        report.condemned_bytes += info.size
        if not dry:
            store.create_if_absent(condemned_key(p), msgspec.json.encode(_Condemnation(t, creator())))
            if lease is not None:
                lease.renew()
    # Records about copies in packs that are gone and that no kept manifest names help no reader any more.
    present = set(packs) - gone
    quarantined = set()
    for key, p in refs.relocations:
        if p not in present and p not in refs.named:
            remove(key)
    for key in store.list(QUARANTINE):
        parsed = parse_quarantine_key(key)
        if parsed is None:
            continue
        quarantined.add(parsed[1])
        if parsed[1] not in present and parsed[1] not in refs.named:
            remove(key)
    if live is not None:
        cands = candidates(live, refs.relocated, refs.targets, refs.packs, packs, set(condemned) | quarantined,
                           t - m)
        report.compacted_packs = len(cands)
        report.compacted_bytes = sum(c.live_bytes for c in cands)
        report.compacted_of = sum(c.size for c in cands)
        if not dry and cands:
            report.compacted_packs, report.compacted_bytes = rewrite(
                repo, cands, lease.renew if lease is not None else lambda: None)
    for key in refs.expired_leases:
        remove(key)
    if dry:
        refs.attribute(report.fates)
