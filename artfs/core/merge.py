"""Three-way merge of version trees: apply one side's changes (relative to a common base) onto another.

Used by a seal when someone published while the staging area was open: base = the version staging
started from, theirs = the current latest, ours = the staged tree. All three are streams of entries in
`path_key` order, so a merge of millions of paths is one pass in constant memory.

Per path: unchanged on our side → theirs; unchanged on theirs → ours; the same change on both → it;
anything else is a conflict. Entries are compared as `diff` compares them (manifest.same_content: kind,
content or link target, exec bits), not by mtime: a directory whose children changed on both sides is
not a conflict.
The result must still be a tree: a path whose parent is gone (or is no longer a directory) is a conflict
too; with `force`, ours wins every conflict and such orphans are dropped.
"""

from __future__ import annotations

from collections.abc import Iterator

from artfs.core.manifest import DIR, FILE, Entry, ManifestWriter, path_key, same_content
from artfs.errors import Conflict


class MergeConflict(Conflict):
    """The same paths changed on both sides; `paths` lists every one of them, in path order."""

    def __init__(self, name: str, paths: list[str], side: str = "staged") -> None:
        self.paths = paths
        shown = ", ".join(paths[:20]) + (f", … ({len(paths)} paths)" if len(paths) > 20 else "")
        where, how = ("staging", "seal") if side == "staged" else ("DIR", "put")
        super().__init__(
            f"{name}: changed both in {where} and in the latest version: {shown} "
            f"({how} with --force to keep the {side} side)"
        )


Stream = tuple[list[str], Iterator[Entry]]  # (the manifest's pack table, its entries in path order)


def same(a: Entry | None, b: Entry | None) -> bool:
    """Whether two entries of one path are the same for merging: as `diff` compares them."""
    if a is None or b is None:
        return a is b
    return same_content(a, b)


class _Cursor:
    def __init__(self, stream: Stream) -> None:
        self.packs, self._it = stream
        self.entry: Entry | None = None
        self.key: bytes | None = None
        self.advance()

    def advance(self) -> None:
        self.entry = next(self._it, None)
        self.key = path_key(self.entry.path) if self.entry is not None else None

    def take(self, key: bytes) -> Entry | None:
        if self.key != key:
            return None
        e = self.entry
        self.advance()
        return e


def merge_trees(base: Stream, theirs: Stream, ours: Stream, writer: ManifestWriter, force: bool = False) -> list[str]:
    """Write the merged tree into `writer`; return the conflicting paths. Unless `force`, the writer's
    content is incomplete once there is a conflict (the caller discards it)."""
    cb, ct, co = _Cursor(base), _Cursor(theirs), _Cursor(ours)
    conflicts: list[str] = []
    dirs: list[str] = []  # directories of the result along the current branch (depth-first order)
    while True:
        keys = [c.key for c in (cb, ct, co) if c.key is not None]
        if not keys:
            return conflicts
        key = min(keys)
        b, t, o = cb.take(key), ct.take(key), co.take(key)
        conflict = False
        if same(o, b):
            pick, packs = t, ct.packs
        elif same(t, b) or same(o, t):
            pick, packs = o, co.packs
        else:  # ours is kept: with force it wins; without, it keeps the tree's shape while we list conflicts
            conflict = True
            changed = o if o is not None else t
            assert changed is not None  # not same(o, t): one side has an entry
            conflicts.append(changed.path)
            pick, packs = o, co.packs
        if pick is None:
            continue
        parent = pick.parent
        while dirs and not (parent == dirs[-1] or parent.startswith(dirs[-1] + "/")):
            dirs.pop()
        if parent and (not dirs or dirs[-1] != parent):
            if not conflict:
                conflicts.append(pick.path)
            continue  # its parent was deleted, or replaced by a non-directory, on one side
        if pick.kind == DIR:
            dirs.append(pick.path)
        if force or not conflicts:
            _write(writer, pick, packs)


def _write(writer: ManifestWriter, e: Entry, packs: list[str]) -> None:
    if e.kind == FILE:  # chunk refs index the source manifest's pack table: re-pack against the writer's
        writer.add_file(e.path, e.mode, e.mtime_ns, e.size, e.refs(packs))
    else:
        writer.add(e)
