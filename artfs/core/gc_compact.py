"""Rewriting packs that are mostly dead (`artfs gc --compact`): their live chunks move, their space goes.

A pack whose chunks are named by kept versions for less than COMPACT_BELOW of its bytes (the rest belongs
to versions past their retention window) would otherwise stay forever. Manifests are immutable and name
(pack, offset), so moving a chunk must leave every manifest that names the old location readable. This
uses the integrity issue's relocation records (`relocations/<digest>/<pack>`, damage.py) rather than a new
pack-level forwarding record: the read path (content.ChunkReader) already follows them one hop when a
pack is gone, `artfs verify` already counts a relocated location as readable, and a relocation is what a
bad copy gets too, so one rule covers both. The price is one small record per chunk moved — only chunks of
packs that are mostly dead, written once — against a second read path and a second record kind.

The steps, each safe to be killed after:
1. The live chunks of a candidate (chunks of kept versions and staging bases not yet relocated) are read,
   verified, and written into a new pack; the pack is uploaded first, then a relocation record per chunk.
   Killed before the records, the new pack is an orphan like any failed commit's.
2. A pack whose every chunk named by a kept manifest is relocated is no longer needed itself (gc.py
   `References.release_relocated`): it is condemned and deleted by the ordinary two-phase rule, and the
   targets of its relocations are kept as long as a kept manifest names the old pack. The decision is made
   from the cycle's listing of versions, like every gc decision, so the safety argument of gc.py holds: a
   writer that adopted a chunk of the old pack the compaction did not move (one that was dead then) makes
   the old pack needed again at the next listing, before any deletion, and the next compaction moves it.
3. A relocation target is never compacted itself (relocations are one hop and never rewritten).
A gc run without --compact does not read chunk lists, so it cannot tell that a pack was let go: it keeps it
(and un-condemns it), which only delays its deletion to the next --compact runs.

Cost: every kept manifest's chunk list is read (local CPU; memory proportional to the live chunks, which
is why this runs only with --compact), ranged GETs of the live spans of candidates, one PUT per new pack
and one per chunk moved.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from artfs.core.content import ChunkReader, plan_spans
from artfs.core.manifest_file import read_manifest
from artfs.core.packs import ChunkRef, PackBuilder
from artfs.core.references import is_token
from artfs.core.repo import Repo
from artfs.core.store_keys import pack_key
from artfs.errors import ArtfsError
from artfs.storage.store import ObjectInfo

log = logging.getLogger(__name__)

COMPACT_BELOW = 0.3  # rewrite a pack when its live chunks fill less than this share of it

Live = dict[str, dict[bytes, ChunkRef]]  # pack → digest → a location of that chunk named by a kept manifest


def scan_live(repo: Repo, manifests: Iterable[str]) -> Live:
    """Every chunk location the given manifests name, by pack (sources of references left out)."""
    live: Live = defaultdict(dict)
    for mid in manifests:
        header, entries = read_manifest(repo.manifest_file(mid), mid)
        for e in entries:
            for ref in e.refs(header.packs):
                if not is_token(ref.pack):
                    live[ref.pack].setdefault(ref.digest, ref)
    return live


@dataclass
class Candidate:
    pack: str
    size: int
    moving: list[ChunkRef]  # its live chunks not relocated yet

    @property
    def live_bytes(self) -> int:
        return sum(r.stored_len for r in self.moving)


def candidates(live: Live, relocated: set[tuple[bytes, str]], targets: set[str], needed: set[str],
               packs: dict[str, ObjectInfo], skip: set[str], old_before: float) -> list[Candidate]:
    """Packs worth rewriting: needed, mostly dead, older than the margin, not a relocation target, not
    condemned or quarantined (`skip`: a bad copy is `artfs verify --repair`'s to move)."""
    out = []
    for p, chunks in live.items():
        info = packs.get(p)
        if info is None or p not in needed or p in targets or p in skip or info.mtime > old_before:
            continue
        moving = [r for d, r in chunks.items() if (d, p) not in relocated]
        c = Candidate(p, info.size, sorted(moving, key=lambda r: r.offset))
        if moving and c.live_bytes < COMPACT_BELOW * info.size:
            out.append(c)
    return out


def rewrite(repo: Repo, cands: list[Candidate], renew: Callable[[], None]) -> tuple[int, int]:
    """Move the candidates' live chunks into new packs, then record the relocations (module docstring).
    Returns (packs rewritten, bytes copied). A candidate that cannot be read whole is left as it is."""
    reader = ChunkReader(repo.store)  # no cache, no relocation: exactly the copies in the pack, verified
    builder: PackBuilder | None = None
    pending: list[tuple[ChunkRef, ChunkRef]] = []
    done = copied = 0

    def flush() -> None:
        nonlocal builder
        if builder is None or not len(builder):
            return
        repo.store.put(pack_key(builder.pack_id), b"".join(builder.finish()))
        for old, new in pending:
            repo.damage.relocate(old, new)
            renew()
        pending.clear()
        builder = None

    for c in cands:
        try:
            data: dict[bytes, bytes] = {}
            for span in plan_spans(c.moving):
                data.update({d: bytes(v) for d, v in reader.fetch_span(span, populate=False).items()})
        except ArtfsError as e:
            log.warning("pack %s is not rewritten: %s", c.pack, e)
            continue
        for r in c.moving:
            if builder is None:
                builder = PackBuilder()
            pending.append((r, builder.add(r.digest, data[r.digest])))
            copied += r.stored_len
            if builder.full:
                flush()
        done += 1
    flush()
    return done, copied
