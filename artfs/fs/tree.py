"""The inodes of a mount: root, artifact directories, version directories, alias symlinks, version contents.

    MOUNT/animals/v2/...      version contents: an inode per (version, path), from the manifest index
    MOUNT/animals/latest      symlink -> v2 (and one per custom alias)
    MOUNT/animals/staging/    writable: its inodes are the staging area's (areas.py), not this tree's

A version deleted in the store (core/lifecycle.py) leaves the catalog, so its name disappears at the next
poll and `latest` moves; its nodes stay, so a process that has one of its files open (or its directory as
cwd) keeps reading it — its chunks are kept for the retention window — until it lets go.

Inode numbers stay stable for the mount's life (find, tar, rsync and `ls -i` compare them). Root, artifact,
version and alias nodes are allocated on first sight and kept. A version's contents get a range of inode
numbers when it is first loaded, and an entry's inode is base + 1 + its code (block and position in the
manifest file, the same from the index or the file; manifest_file.py), so no per-entry state is needed to
keep numbers stable: the tree keeps only the most recently used entry nodes (a version of a million files
listed by `find` costs no memory per file), and an inode not among them is found again from the manifest
block its code names. A node keeps only what `getattr` needs; chunk lists are re-read from the index on open.

Version contents are immutable, so the kernel may cache their entries and attributes for a day, negative
lookups included. The artifact level (which versions exist, where aliases point) changes: its timeouts
are short, and `apply` returns the kernel entries a new catalog makes stale.

Only `lookup`, `load` and `load_record` await (a version's record and manifest come from the store once,
in a thread); everything else is synchronous, so a handler sees one consistent tree between its awaits.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import stat
import time
from bisect import bisect_right
from collections import OrderedDict

import pyfuse3
import trio

from artfs.core.catalog import Catalog
from artfs.core.index import Row
from artfs.core.manifest import DIR, FILE, LINK, Entry, Header
from artfs.core.manifest_file import POS_BITS, ManifestFile
from artfs.core.names import parse_version
from artfs.core.records import VersionRecord
from artfs.core.references import entry_source
from artfs.core.repo import Repo

ROOT = pyfuse3.ROOT_INODE
IMMUTABLE_TIMEOUT = 24 * 3600.0
MUTABLE_TIMEOUT = 1.0
DIR_SIZE = 4096
VERSION_BLKSIZE = 128 * 1024  # st_blksize of the read-only tree (staging files say STAGING_BLKSIZE)
INO_LIMIT = 1 << 40  # the tree's inodes stay below this: staging's start there (areas.SLOT_BITS)
PREPARED_LISTINGS = 4  # directories listed ahead and not yet opened, kept (prepare_next)
RECENT_ENTRIES = 1 << 15  # entry nodes kept (most recently used); any other is rebuilt from its manifest block

# (what, parent inode or inode, name): "entry" drops a name from a directory, "inode" an inode's attributes
Invalidation = tuple[str, int, str]


class Node:
    __slots__ = ("ino",)

    def __init__(self, ino: int) -> None:
        self.ino = ino


class RootNode(Node):
    __slots__ = ()


class ArtifactNode(Node):
    __slots__ = ("name",)

    def __init__(self, ino: int, name: str) -> None:
        super().__init__(ino)
        self.name = name


class VersionNode(Node):
    """`vN`: its record and manifest header are loaded on first use (`Tree.load`), and with them the
    manifest file (entries found again by code) and the base of its contents' inode range."""

    __slots__ = ("artifact", "number", "record", "header", "lock", "manifest", "base")

    def __init__(self, ino: int, artifact: str, number: int) -> None:
        super().__init__(ino)
        self.artifact = artifact
        self.number = number
        self.record: VersionRecord | None = None
        self.header: Header | None = None
        self.lock: trio.Lock | None = None
        self.manifest: ManifestFile | None = None
        self.base = 0  # an entry with code c is inode base + 1 + c

    @property
    def ref(self) -> str:
        return f"{self.artifact}:v{self.number}"

    @property
    def mid(self) -> str:
        assert self.record is not None
        return self.record.manifest


class AliasNode(Node):
    """`latest` or a custom alias: a symlink whose target follows the catalog."""

    __slots__ = ("artifact", "alias")

    def __init__(self, ino: int, artifact: str, alias: str) -> None:
        super().__init__(ino)
        self.artifact = artifact
        self.alias = alias


class EntryNode(Node):
    """A file, directory or symlink inside a version (attributes copied from its manifest entry)."""

    __slots__ = ("version", "path", "kind", "mode", "size", "mtime_ns")

    def __init__(self, ino: int, version: VersionNode, entry: Entry) -> None:
        super().__init__(ino)
        self.version = version
        self.path = entry.path
        self.kind = entry.kind
        self.mode = entry.mode
        self.size = entry.size
        self.mtime_ns = entry.mtime_ns

    @property
    def label(self) -> str:
        return f"{self.version.ref}/{self.path}"


class RowAttrs:
    """One EntryAttributes for all the rows of a listing, refilled per row (what `_entry_attrs` makes):
    `readdir_reply` copies it at once, and making one per entry was a third of a `find`'s time."""

    __slots__ = ("attrs", "base", "ctime_is_mtime")

    def __init__(self, attrs: pyfuse3.EntryAttributes, base: int, ctime_is_mtime: bool) -> None:
        self.attrs = attrs
        self.base = base  # an entry's inode is base + its code
        self.ctime_is_mtime = ctime_is_mtime

    def fill(self, row: Row) -> pyfuse3.EntryAttributes:
        """The attributes of this row, in the shared object: use them before filling the next."""
        _, code, kind, mode, size, mtime_ns = row
        a = self.attrs
        a.st_ino = self.base + code
        if kind == FILE:
            a.st_mode = stat.S_IFREG | (mode & 0o7777)
            a.st_size = size
            a.st_blocks = (size + 511) >> 9
        elif kind == DIR:
            a.st_mode = stat.S_IFDIR | (mode & 0o7777)
            a.st_size = DIR_SIZE
            a.st_blocks = DIR_SIZE >> 9
        else:
            a.st_mode = stat.S_IFLNK | 0o777
            a.st_size = size
            a.st_blocks = 0
        a.st_mtime_ns = mtime_ns
        a.st_atime_ns = mtime_ns
        if self.ctime_is_mtime:
            a.st_ctime_ns = mtime_ns
        return a


def is_dir(node: Node) -> bool:
    return not isinstance(node, (AliasNode, EntryNode)) or (isinstance(node, EntryNode) and node.kind == DIR)


def is_version_content(node: Node) -> bool:
    """Inside a version directory (or the version directory itself): immutable."""
    return isinstance(node, (VersionNode, EntryNode))


class Tree:
    """Every inode of one mount, over a Repo (for records and manifests) and a catalog (from the poller)."""

    def __init__(self, repo: Repo, catalog: Catalog, uid: int | None = None, gid: int | None = None,
                 deadline: float = 28.0) -> None:
        self.repo = repo
        self.deadline = deadline  # store calls for a lookup give up (EIO) after this many seconds
        self.index = repo.index
        self.catalog = catalog
        self.local: set[str] = set()  # artifacts with a staging area here (some not published yet)
        self.uid = os.getuid() if uid is None else uid
        self.gid = os.getgid() if gid is None else gid
        self.started_ns = time.time_ns()
        self.root = RootNode(ROOT)
        self._nodes: dict[int, Node] = {ROOT: self.root}
        self._next_ino = ROOT + 1
        self._artifacts: dict[str, ArtifactNode] = {}
        self._versions: dict[tuple[str, int], VersionNode] = {}
        self._aliases: dict[tuple[str, str], AliasNode] = {}
        self._recent: OrderedDict[int, EntryNode] = OrderedDict()  # entry nodes, least recently used first
        self._prepared: OrderedDict[int, list[Row]] = OrderedDict()  # first pages listed ahead (prepare_next)
        self._bases: list[int] = []  # the loaded versions' inode bases, ascending (allocated in order)
        self._based: list[VersionNode] = []  # the version of each base

    # --- nodes -------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._nodes) + len(self._recent)

    def node(self, ino: int) -> Node:
        found = self._nodes.get(ino)
        if found is not None:
            return found
        entry = self._recent.get(ino)
        if entry is not None:
            self._recent.move_to_end(ino)
            return entry
        return self._revive(ino)

    def _revive(self, ino: int) -> EntryNode:
        """An entry node evicted from `_recent` (the kernel still holds its inode): from its manifest block."""
        i = bisect_right(self._bases, ino) - 1
        if i < 0:
            raise pyfuse3.FUSEError(errno.ENOENT)
        version = self._based[i]
        entry = version.manifest.entry_at(ino - version.base - 1) if version.manifest is not None else None
        if entry is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._remember(EntryNode(ino, version, entry))

    def _remember(self, node: EntryNode) -> EntryNode:
        self._recent[node.ino] = node
        if len(self._recent) > RECENT_ENTRIES:
            self._recent.popitem(last=False)
        return node

    def _ino(self) -> int:
        ino, self._next_ino = self._next_ino, self._next_ino + 1
        return ino

    def artifact_node(self, name: str) -> ArtifactNode:
        node = self._artifacts.get(name)
        if node is None:
            node = self._artifacts[name] = ArtifactNode(self._ino(), name)
            self._nodes[node.ino] = node
        return node

    def version_node(self, artifact: str, number: int) -> VersionNode:
        node = self._versions.get((artifact, number))
        if node is None:
            node = self._versions[(artifact, number)] = VersionNode(self._ino(), artifact, number)
            self._nodes[node.ino] = node
        return node

    def alias_node(self, artifact: str, alias: str) -> AliasNode:
        node = self._aliases.get((artifact, alias))
        if node is None:
            node = self._aliases[(artifact, alias)] = AliasNode(self._ino(), artifact, alias)
            self._nodes[node.ino] = node
        return node

    def entry_node(self, version: VersionNode, code: int, entry: Entry) -> EntryNode:
        """The node of a loaded version's entry with this code (manifest_file.py)."""
        ino = version.base + 1 + code
        node = self._recent.get(ino)
        if node is None:
            return self._remember(EntryNode(ino, version, entry))
        self._recent.move_to_end(ino)
        return node

    def _place(self, version: VersionNode, header: Header) -> None:
        """Give a version's contents their inode range: one number per possible code."""
        size = (len(header.blocks) << POS_BITS) + 1
        if self._next_ino + size > INO_LIMIT:
            raise pyfuse3.FUSEError(errno.ENOSPC)  # after ~4,000 versions of a million files in one mount
        version.base, self._next_ino = self._next_ino, self._next_ino + size
        self._bases.append(version.base)
        self._based.append(version)

    def label(self, node: Node) -> str:
        """A node as people name it: `animals`, `animals:v1`, `animals:v1/data/x.bin`, `animals/latest`."""
        if isinstance(node, EntryNode):
            return node.label
        if isinstance(node, VersionNode):
            return node.ref
        if isinstance(node, ArtifactNode):
            return node.name
        if isinstance(node, AliasNode):
            return f"{node.artifact}/{node.alias}"
        return ""

    def entry_of(self, node: EntryNode) -> Entry:
        """The full manifest entry (chunk list, digest, symlink target) of a node, from the index."""
        entry = self.index.lookup(node.version.mid, node.path)
        if entry is None:  # the index was rebuilt under us and lost it: should not happen
            raise pyfuse3.FUSEError(errno.ENOENT)
        return entry

    def parent_of(self, node: Node) -> Node:
        if isinstance(node, EntryNode):
            parent = node.path.rpartition("/")[0]
            if not parent:
                return node.version
            found = self.index.lookup_coded(node.version.mid, parent)
            return self.entry_node(node.version, *found) if found is not None else node.version
        if isinstance(node, (VersionNode, AliasNode)):
            return self.artifact_node(node.artifact)
        return self.root

    # --- loading versions (the only awaits) --------------------------------------------------------

    async def load_record(self, node: VersionNode) -> VersionRecord:
        """The version's record (a store GET the first time this cache sees it; immutable after)."""
        if node.record is None:
            if node.lock is None:
                node.lock = trio.Lock()
            async with node.lock:
                if node.record is None:
                    with trio.fail_after(self.deadline):
                        node.record = await trio.to_thread.run_sync(
                            self.repo.version, node.artifact, node.number, abandon_on_cancel=True)
        return node.record

    async def load(self, node: VersionNode) -> Header:
        """Record and manifest index of a version, so lookups inside it are LMDB reads (single flight)."""
        if node.header is None:
            record = await self.load_record(node)
            assert node.lock is not None
            async with node.lock:
                if node.header is None:
                    with trio.fail_after(self.deadline):
                        header, manifest = await trio.to_thread.run_sync(self._open_version, record,
                                                                         abandon_on_cancel=True)
                    node.manifest = manifest
                    self._place(node, header)
                    node.header = header
        return node.header

    def _open_version(self, record: VersionRecord) -> tuple[Header, ManifestFile]:
        """(In a thread.) The index, built in the background if new (lookups are answered from manifest
        blocks meanwhile), and the manifest file, which finds an entry again by its code."""
        header = self.repo.ensure_index(record, True)
        building = self.index.building(record.manifest)  # shares its decoded blocks with the build
        if building is not None:
            return header, building
        return header, ManifestFile(self.repo.manifest_file(record.manifest), record.manifest)

    async def lookup(self, parent: Node, name: str) -> Node | None:
        if name == ".":
            return parent
        if name == "..":
            return self.parent_of(parent)
        if isinstance(parent, RootNode):
            return self.artifact_node(name) if name in self.catalog or name in self.local else None
        if isinstance(parent, ArtifactNode):
            state = self.catalog.get(parent.name)
            if state is None:
                return None
            number = parse_version(name)
            if number is not None:
                if number not in state.numbers:
                    return None
                node = self.version_node(parent.name, number)
                await self.load_record(node)
                return node
            return self.alias_node(parent.name, name) if name in state.links() else None
        if isinstance(parent, VersionNode):
            await self.load(parent)
            version, path = parent, name
        elif isinstance(parent, EntryNode) and parent.kind == DIR:
            version, path = parent.version, f"{parent.path}/{name}"
        else:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        found = self.index.lookup_coded(version.mid, path)
        return self.entry_node(version, *found) if found is not None else None

    # --- listings ------------------------------------------------------------------------------------

    def list_small(self, node: Node) -> list[tuple[str, Node]]:
        """The whole listing of the root or an artifact directory (a snapshot, for one readdir)."""
        if isinstance(node, RootNode):
            return [(name, self.artifact_node(name)) for name in sorted(self.catalog.keys() | self.local)]
        assert isinstance(node, ArtifactNode)
        state = self.catalog.get(node.name)
        if state is None:
            return []
        out: list[tuple[str, Node]] = [(f"v{n}", self.version_node(node.name, n)) for n in state.numbers]
        out += [(alias, self.alias_node(node.name, alias)) for alias in sorted(state.links())]
        return out

    def list_page(self, node: Node, after: str | None, limit: int) -> list[Row]:
        """Up to `limit` rows (name, code, kind, mode, size, mtime_ns) of a directory inside a version, by
        name, after `after`; `RowAttrs` turns them into attributes. Files get no node (a listing of a
        million files keeps nothing per file); directories do: they are few, and the kernel asks for
        their attributes on entering them (a `getattr` of a node not kept decodes its manifest block)."""
        version, path = self._listed(node)
        rows = self.index.listdir_rows(version.mid, path, after, limit)
        base = version.base + 1
        prefix = f"{path}/" if path else ""
        for name, code, kind, mode, size, mtime_ns in rows:
            if kind == DIR and base + code not in self._recent:
                entry = Entry(prefix + name.decode("utf-8", "surrogateescape"), DIR, mode, mtime_ns, size)
                self._remember(EntryNode(base + code, version, entry))
        return rows

    def prepare_next(self, node: Node, limit: int) -> None:
        """List ahead the first `limit` rows of the directory a walk enters after `node` (find and
        os.walk list a directory, then its subdirectories in name order): while the kernel takes in the
        listing just sent, on another CPU, not after it. Kept for `take_prepared`; a wrong guess costs
        one page of listing."""
        version, path = self._listed(node)
        found = self.index.next_directory(version.mid, path)
        if found is None:
            return
        code, entry = found
        ino = version.base + 1 + code
        if ino in self._prepared:
            return
        nxt = self._recent.get(ino) or self._remember(EntryNode(ino, version, entry))
        self._prepared[ino] = self.list_page(nxt, None, limit)
        while len(self._prepared) > PREPARED_LISTINGS:
            self._prepared.popitem(last=False)

    def take_prepared(self, ino: int) -> list[Row] | None:
        """The rows `prepare_next` listed for this directory, once."""
        return self._prepared.pop(ino, None) if self._prepared else None

    def row_attrs(self, node: Node) -> RowAttrs:
        """The attributes of the rows `list_page` gives for this directory."""
        version, _ = self._listed(node)
        created = _ns(version.record.created) if version.record else None
        return RowAttrs(self._attrs(0, 0, 0, 0, 1, IMMUTABLE_TIMEOUT, created), version.base + 1, created is None)

    @staticmethod
    def _listed(node: Node) -> tuple[VersionNode, str]:
        if isinstance(node, VersionNode):
            return node, ""
        assert isinstance(node, EntryNode)
        return node.version, node.path

    # --- attributes ----------------------------------------------------------------------------------

    def _attrs(self, ino: int, mode: int, size: int, mtime_ns: int, nlink: int, timeout: float,
               ctime_ns: int | None = None) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        a.entry_timeout = timeout
        a.attr_timeout = timeout
        a.st_mode = mode
        a.st_nlink = nlink
        a.st_uid = self.uid
        a.st_gid = self.gid
        a.st_size = size
        a.st_blksize = VERSION_BLKSIZE
        a.st_blocks = 0 if stat.S_ISLNK(mode) else (size + 511) // 512
        a.st_atime_ns = mtime_ns
        a.st_mtime_ns = mtime_ns
        a.st_ctime_ns = mtime_ns if ctime_ns is None else ctime_ns
        return a

    def attrs(self, node: Node) -> pyfuse3.EntryAttributes:
        """Full attributes, also for readdir: pyfuse3 always answers READDIRPLUS, and the kernel keeps
        what a listing says for the entry's timeouts. Never loads anything."""
        if isinstance(node, EntryNode):
            created = _ns(node.version.record.created) if node.version.record else None
            return self._entry_attrs(node.ino, node.kind, node.mode, node.size, node.mtime_ns, created)
        if isinstance(node, VersionNode):
            mtime = _ns(node.record.created) if node.record else self.started_ns
            timeout = IMMUTABLE_TIMEOUT if node.record else 0.0  # listed before looked up: ask again
            return self._attrs(node.ino, stat.S_IFDIR | 0o755, DIR_SIZE, mtime, 1, timeout)
        if isinstance(node, AliasNode):
            target = self.alias_target(node)
            return self._attrs(node.ino, stat.S_IFLNK | 0o777, len(target or b""), self.started_ns, 1,
                               MUTABLE_TIMEOUT)
        if isinstance(node, ArtifactNode):
            state = self.catalog.get(node.name)
            versions = len(state.numbers) if state else 0
            latest = self._versions.get((node.name, state.latest)) if state else None
            mtime = _ns(latest.record.created) if latest and latest.record else self.started_ns
            # 2 + subdirectories: the versions and staging/
            return self._attrs(node.ino, stat.S_IFDIR | 0o755, DIR_SIZE, mtime, 3 + versions, MUTABLE_TIMEOUT)
        return self._attrs(ROOT, stat.S_IFDIR | 0o755, DIR_SIZE, self.started_ns,
                           2 + len(self.catalog.keys() | self.local), MUTABLE_TIMEOUT)

    def _entry_attrs(self, ino: int, kind: int, mode: int, size: int, mtime_ns: int,
                     created_ns: int | None) -> pyfuse3.EntryAttributes:
        if kind == FILE:
            mode = stat.S_IFREG | (mode & 0o7777)
        elif kind == DIR:
            mode, size = stat.S_IFDIR | (mode & 0o7777), DIR_SIZE
        else:
            mode = stat.S_IFLNK | 0o777
        # nlink 1 on a directory means "unknown" to find/fts (as on btrfs): the index has no subdir counts
        created = mtime_ns if created_ns is None else created_ns
        return self._attrs(ino, mode, size, mtime_ns, 1, IMMUTABLE_TIMEOUT, created)

    def negative(self, parent: Node) -> pyfuse3.EntryAttributes | None:
        """A cacheable "no such name" inside a version (immutable); None where names may appear later."""
        if not is_version_content(parent):
            return None
        a = pyfuse3.EntryAttributes()
        a.st_ino = 0
        a.entry_timeout = IMMUTABLE_TIMEOUT
        return a

    def alias_target(self, node: AliasNode) -> bytes | None:
        state = self.catalog.get(node.artifact)
        number = state.links().get(node.alias) if state else None
        return None if number is None else f"v{number}".encode()

    def readlink(self, node: Node) -> bytes:
        if isinstance(node, AliasNode):
            target = self.alias_target(node)
            if target is None:  # the alias was deleted since the kernel looked it up
                raise pyfuse3.FUSEError(errno.ENOENT)
            return target
        if isinstance(node, EntryNode) and node.kind == LINK:
            return self.entry_of(node).data
        raise pyfuse3.FUSEError(errno.EINVAL)

    # --- extended attributes -------------------------------------------------------------------------

    def xattrs(self, node: Node) -> dict[str, bytes]:
        """`user.artfs.*` of a node: ref, digest, type, created, message, store (what `artfs info` reads), and
        on a version directory made inside a run, `run`.

        On a version directory `digest` is the version's tree digest; on a file, the file's content digest.
        """
        store = self.repo.store.uri.encode()
        if isinstance(node, RootNode):
            return {"user.artfs.store": store}
        if isinstance(node, ArtifactNode):
            return {"user.artfs.ref": node.name.encode(), "user.artfs.store": store}
        if isinstance(node, AliasNode):
            return {}
        version = node.version if isinstance(node, EntryNode) else node
        assert isinstance(version, VersionNode)
        rec = version.record
        if rec is None:
            return {}
        out = {"user.artfs.ref": rec.ref.encode()}
        if isinstance(node, VersionNode):
            out["user.artfs.digest"] = rec.digest.encode()
        elif isinstance(node, EntryNode) and node.kind == FILE:
            entry = self.entry_of(node)
            out["user.artfs.digest"] = entry.digest.hex().encode()
            header = node.version.header
            source = entry_source(entry, header.packs) if header is not None else None
            if source is not None:  # a reference (core/references.py): where its bytes are, how they are pinned
                out["user.artfs.source"] = source.uri.encode()
                out["user.artfs.pin"] = source.pin.describe().encode()
        out["user.artfs.type"] = rec.type.encode()
        created = dt.datetime.fromtimestamp(rec.created, dt.UTC).isoformat(timespec="seconds")
        out["user.artfs.created"] = created.replace("+00:00", "Z").encode()
        if rec.message:
            out["user.artfs.message"] = rec.message.encode()
        if rec.run and isinstance(node, VersionNode):
            out["user.artfs.run"] = rec.run.encode()  # the run that produced it (core/runs.py)
        out["user.artfs.store"] = store
        return out

    # --- catalog changes -----------------------------------------------------------------------------

    def apply(self, new: Catalog) -> tuple[list[Invalidation], list[str]]:
        """Switch to a newer catalog; returns the kernel entries to invalidate and a line per change."""
        old, self.catalog = self.catalog, new
        stale: list[Invalidation] = []
        changes: list[str] = []
        root_changed = False
        for name in sorted(old.keys() | new.keys()):
            before, after = old.get(name), new.get(name)
            if before == after:
                continue
            if before is None or after is None:
                root_changed = True
                if name not in self.local:  # shown all along for its staging area otherwise
                    stale.append(("entry", ROOT, name))
                changes.append(f"{name}: {'new artifact' if before is None else 'gone'}")
            art = self._artifacts.get(name)
            before_n = set(before.numbers) if before else set()
            after_n = set(after.numbers) if after else set()
            added = sorted(after_n - before_n)
            if added and before is not None:
                changes.append(f"{name}: new " + ", ".join(f"v{n}" for n in added))
            removed = sorted(before_n - after_n)  # deleted (core/lifecycle.py): hidden, never yanked
            if removed and after is not None:
                changes.append(f"{name}: deleted " + ", ".join(f"v{n}" for n in removed))
            before_l = before.links() if before else {}
            after_l = after.links() if after else {}
            moved = [a for a in sorted(before_l.keys() | after_l.keys()) if before_l.get(a) != after_l.get(a)]
            for alias in moved:
                target = after_l.get(alias)
                if before is not None:
                    changes.append(f"{name}: {alias} -> " + (f"v{target}" if target is not None else "(deleted)"))
            if art is None:  # the kernel never saw this artifact's directory: nothing of it is cached
                continue
            stale += [("entry", art.ino, f"v{n}") for n in sorted(before_n ^ after_n)]
            for alias in moved:
                stale.append(("entry", art.ino, alias))
                link = self._aliases.get((name, alias))
                if link is not None:
                    stale.append(("inode", link.ino, ""))
            stale.append(("inode", art.ino, ""))
        if root_changed:
            stale.append(("inode", ROOT, ""))
        return stale, changes


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)
