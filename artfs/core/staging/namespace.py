"""The namespace of a staging tree: lookups, listings and every operation that changes names.

Invariants
- Every visible name outside the upper trees has a node row with a stable id (the inode); a directory
  made here is a row whose content is an upper tree (upper.py: names there are the local disk's, and
  StagingArea sends what happens inside one there). A directory of the base stays "lazy"
  (base_path set, no child rows) until it is first looked into or listed; then its base children are
  inserted as nodes in one transaction. Materializing on lookup is what gives every name an inode the
  kernel can hold, while an untouched subtree of a million files costs one row; renaming a lazy
  directory is still one UPDATE, since its base_path keeps pointing into the base.
- Every change is one SQLite transaction, so kill -9 at any moment leaves a consistent tree.
- A node's first name is its own (parent, name) columns. A hard link adds a name row (`inode` set: the
  node it names, whose row holds everything else, and whose `nlink` counts its names); removing the
  node's own name moves the node into one of its other names' places, so a node with a name always
  has its own, and `path_of` and an area's open files never see a hard link. A seal writes every name
  as its own entry (one file per name, sharing chunks).
  An unlinked node keeps its row (parent NULL) until forget(), because an open file may still be read
  and written; rows of unlinked nodes are dropped on the next open (after a restart nothing holds them).
- Every method runs under the area lock; while `frozen` (a seal) every change raises EBUSY.

Namespace is the part of a StagingArea that owns names; it is given the NodeTable (rows, lock, modes)
and Files (a node's attributes, data files) and keeps no state of its own. `walk` reads the whole staged
tree back as manifest entries, for sealing and status (seal.py).
"""

from __future__ import annotations

import errno
import sqlite3
import stat
import time
from collections.abc import Iterator

import msgspec

from artfs.core.manifest import DIR, FILE, LINK, Entry
from artfs.core.names import check_symlink_target
from artfs.core.repo import Repo
from artfs.core.staging.files import Files
from artfs.core.staging.layout import ROOT_ID
from artfs.core.staging.nodes import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    NodeTable,
    Row,
    StagedNode,
    check_entry_name,
    dec,
    enc,
    oserror,
)
from artfs.core.staging.upper import UpperTrees
from artfs.errors import InvalidName

_PAGE = 10000  # base entries per index listing when a directory is materialized
_WALK_PAGE = 1000  # rows per lock hold in walk()


class Namespace:
    """Names of the staged tree: lookup, listdir, create, mkdir, symlink, link, unlink, rmdir, rename, forget,
    walk."""

    def __init__(self, nodes: NodeTable, files: Files, repo: Repo, upper: UpperTrees) -> None:
        self._nodes = nodes
        self._files = files
        self._repo = repo
        self._upper = upper  # directories made here hold their content there (upper.py)

    def _attrs(self, row: Row) -> StagedNode:
        if row.id in self._upper.roots:  # its mode, owner and times are its upper directory's
            return self._upper.getattr(row.id)
        return self._files.attrs(row)

    def _dir(self, node_id: int, live: bool = False) -> Row:
        """A directory, materialized. `live`: it must still have a name (no creating in a removed dir)."""
        row = self._nodes.get(node_id)
        if row.kind != DIR:
            raise oserror(errno.ENOTDIR, f"node {node_id}")
        if live and row.parent is None and row.id != ROOT_ID:
            raise oserror(errno.ENOENT, f"node {node_id} was removed")
        if row.base_path is not None:
            row = self._materialize(row, dec(row.base_path))
        return row

    def _materialize(self, row: Row, base_dir: str) -> Row:
        """Insert a lazy dir's base children as nodes (files by reference, subdirs lazy), in one txn."""
        self._nodes.check_not_quick()
        manifest = self._nodes.base_manifest()
        entries: list[Entry] = []
        after = None
        while True:
            page = self._repo.index.listdir(manifest, base_dir, after, _PAGE)
            entries.extend(page)
            if len(page) < _PAGE:
                break
            after = page[-1].name
        with self._nodes.txn() as db:
            db.executemany(
                "INSERT INTO nodes(parent, name, kind, mode, mtime_ns, ctime_ns, size, base_path, target) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (row.id, enc(e.name), e.kind, e.mode & 0o7777, e.mtime_ns, e.mtime_ns, e.size,
                     enc(e.path) if e.kind != LINK else None, e.data if e.kind == LINK else None)
                    for e in entries
                ],
            )
            db.execute("UPDATE nodes SET base_path = NULL WHERE id = ?", (row.id,))
        return row._replace(base_path=None)

    def _is_empty(self, row: Row) -> bool:
        if row.id in self._upper.roots:
            return self._upper.is_empty(row.id)
        if row.base_path is not None:
            return not self._repo.index.listdir(self._nodes.base_manifest(), dec(row.base_path), limit=1)
        return self._nodes.db.execute("SELECT 1 FROM nodes WHERE parent = ? LIMIT 1", (row.id,)).fetchone() is None

    def _is_within(self, node_id: int | None, ancestor: int) -> bool:
        """Whether `node_id` is `ancestor` or below it."""
        while node_id is not None:
            if node_id == ancestor:
                return True
            node_id = self._nodes.db.execute("SELECT parent FROM nodes WHERE id = ?", (node_id,)).fetchone()[0]
        return False

    def _drop_name(self, db: sqlite3.Connection, row: Row, now: int) -> None:
        """Remove the directory entry `row`: a hard link's extra name goes; a node's own name goes too,
        and the node moves into one of its other names' places (its id, the inode, stays) or, with none
        left, is unlinked (parent NULL, kept until forget)."""
        if row.inode is not None:
            db.execute("DELETE FROM nodes WHERE id = ?", (row.id,))
            db.execute("UPDATE nodes SET nlink = nlink - 1, ctime_ns = ? WHERE id = ?", (now, row.inode))
            return
        other = None
        if row.nlink > 1:
            other = db.execute("SELECT id, parent, name FROM nodes WHERE inode = ? ORDER BY id LIMIT 1",
                               (row.id,)).fetchone()
        if other is not None:
            db.execute("DELETE FROM nodes WHERE id = ?", (other[0],))
            db.execute("UPDATE nodes SET parent = ?, name = ?, nlink = nlink - 1, ctime_ns = ? WHERE id = ?",
                       (other[1], other[2], now, row.id))
        else:
            db.execute("UPDATE nodes SET parent = NULL, name = NULL, ctime_ns = ? WHERE id = ?", (now, row.id))
            if row.id in self._upper.roots:
                db.execute("DELETE FROM upper_roots WHERE id = ?", (row.id,))

    def _dropped(self, row: Row | None) -> None:
        """After the transaction that removed directory `row`'s name: an upper root's directory goes too
        (a crash first leaves it for UpperTrees.attach to remove)."""
        if row is not None and row.id in self._upper.roots:
            self._upper.drop_root(row.id)

    def _move(self, db: sqlite3.Connection, row: Row, parent_id: int, raw: bytes, now: int) -> None:
        """Put the directory entry `row` at (parent, name); the node it names has changed (ctime)."""
        db.execute("UPDATE nodes SET parent = ?, name = ? WHERE id = ?", (parent_id, raw, row.id))
        db.execute("UPDATE nodes SET ctime_ns = ? WHERE id = ?", (now, row.node_id))

    # --- namespace -------------------------------------------------------------------------------

    def lookup(self, parent_id: int, name: str) -> StagedNode | None:
        """The node `name` in directory `parent_id`, or None. Materializes the directory (see above)."""
        with self._nodes.lock:
            if name == ".":
                return self._files.attrs(self._dir(parent_id))
            if name == "..":
                parent = self._dir(parent_id)
                return self._files.attrs(self._nodes.get(parent.parent if parent.parent is not None else ROOT_ID))
            raw = check_entry_name(name)
            row = self._nodes.child(self._dir(parent_id).id, raw)
            return self._attrs(row) if row is not None else None

    def getattr(self, node_id: int) -> StagedNode:
        with self._nodes.lock:
            return self._files.attrs(self._nodes.get(node_id))

    def listdir(self, node_id: int) -> list[tuple[str, StagedNode]]:
        """A directory's entries sorted by name (bytes), without '.' and '..'."""
        with self._nodes.lock:
            return [(dec(r.entry_name), self._attrs(r)) for r in self._nodes.children(self._dir(node_id).id)]

    def readlink(self, node_id: int) -> str:
        with self._nodes.lock:
            row = self._nodes.get(node_id)
            if row.kind != LINK:
                raise oserror(errno.EINVAL, f"node {node_id} is not a symlink")
            return dec(row.link_target)

    def path_of(self, node_id: int) -> str:
        """The node's path in the tree ('' for the root). ENOENT once unlinked."""
        with self._nodes.lock:
            parts = []
            row = self._nodes.get(node_id)
            while row.id != ROOT_ID:
                if row.parent is None:
                    raise oserror(errno.ENOENT, f"node {node_id} was removed")
                parts.append(dec(row.entry_name))
                row = self._nodes.get(row.parent)
            return "/".join(reversed(parts))

    def _new(self, parent_id: int, name: str, kind: int, mode: int, target: bytes | None = None,
             owner: tuple[int, int] | None = None) -> StagedNode:
        """A new node owned by `owner` (uid, gid; None: the mount's user), its group the directory's if
        that is set-group-ID (and a new directory set-group-ID too), as on Linux filesystems.

        The hot path of `cp -r` and `tar x` (maybe on an event loop, StagingArea.quick): a taken name is
        the dirents index's IntegrityError rather than a SELECT first, and the answer is built from the
        values just inserted rather than read back."""
        raw = check_entry_name(name, new=True)
        uid, gid = owner if owner is not None else (None, None)
        nodes = self._nodes
        with nodes.lock:
            nodes.check_writable()
            parent = self._dir(parent_id, live=True)
            if target is not None:  # a symlink: EEXIST before a refused target, as the kernel orders them
                if nodes.child(parent.id, raw) is not None:
                    raise oserror(errno.EEXIST, name)
                try:
                    check_symlink_target(f"{self.path_of(parent.id)}/{name}".lstrip("/"), dec(target))
                except InvalidName as e:
                    raise oserror(errno.EPERM, str(e)) from None
            if parent.mode & stat.S_ISGID:
                gid = parent.gid
                if kind == DIR:
                    mode |= stat.S_ISGID
            mode &= 0o7777
            size = len(target or b"")
            now = time.time_ns()
            nid = None
            try:
                with nodes.txn() as db:
                    try:
                        nid = db.execute(
                            "INSERT INTO nodes(parent, name, kind, mode, mtime_ns, ctime_ns, atime_ns, size, has_data, "
                            "target, uid, gid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (parent.id, raw, kind, mode, now, now, now, size, int(kind == FILE), target, uid, gid),
                        ).lastrowid
                    except sqlite3.IntegrityError:  # the dirents index: the name is taken
                        raise oserror(errno.EEXIST, name) from None
                    assert nid is not None  # the rowid of the INSERT
                    if kind == FILE:
                        self._files.create_data(nid, now)
                    elif kind == DIR:  # its content will be a real directory (upper.py)
                        db.execute("INSERT INTO upper_roots(id) VALUES (?)", (nid,))
                        self._upper.make_root(nid, mode, (uid, gid) if uid is not None and gid is not None else None)
                    nodes.touch(db, parent.id, now)
                    nodes.changed(db)
            except BaseException:
                if nid is not None and kind == FILE:
                    self._files.forget(nid)
                if nid is not None and kind == DIR:
                    self._upper.drop_root(nid)
                raise
            row = Row(nid, parent.id, raw, kind, mode, now, now, size, None, int(kind == FILE), target, None, uid,
                      gid, now, 1, None, None, None)
            nodes.remember(row)  # the next requests (write, setattr, getattr; a lookup in the same directory)
            nodes.remember(parent._replace(  # read both: their rows as this transaction left them (see touch)
                mtime_ns=now, ctime_ns=now, atime_ns=parent.mtime_ns if parent.atime_ns is None else parent.atime_ns))
            return self._attrs(row)

    def create(self, parent_id: int, name: str, mode: int = 0o644, owner: tuple[int, int] | None = None) -> StagedNode:
        """A new empty regular file. Special files (FIFOs, devices, sockets): EPERM."""
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
            raise oserror(errno.EPERM, f"{name}: only regular files, directories and symlinks can be staged")
        return self._new(parent_id, name, FILE, mode, owner=owner)

    mknod = create

    def mkdir(self, parent_id: int, name: str, mode: int = 0o755, owner: tuple[int, int] | None = None) -> StagedNode:
        return self._new(parent_id, name, DIR, mode, owner=owner)

    def symlink(self, parent_id: int, name: str, target: str, owner: tuple[int, int] | None = None) -> StagedNode:
        """A symlink; versions only keep relative targets inside the tree, so others get EPERM here."""
        return self._new(parent_id, name, LINK, 0o777, enc(target), owner)

    def add_references(self, items: list[tuple[str, str, bytes, int, int]],
                       check_only: bool = False) -> list[tuple[int, str]]:
        """Staged references (`artfs ref add`): one file per (path, source token, chunks, size, mtime_ns),
        with missing parent directories, all in one transaction or none (an existing path: EEXIST, a
        file on the way: ENOTDIR). Their content is the source's (Files._base_entry) until written.
        Returns the new names made in directories that existed before, as (directory id, name).
        `check_only`: raise what adding would, add nothing (before the objects are read)."""
        nodes = self._nodes
        with nodes.lock:
            nodes.check_writable()
            for path, *_ in items:  # materialize every existing directory on the way, outside the txn
                parent, raw, whole = self._parent_for(None, path)
                if whole and nodes.child(parent, raw) is not None:
                    raise oserror(errno.EEXIST, path)
            if check_only:
                return []
            now = time.time_ns()
            made: list[tuple[int, str]] = []
            with nodes.txn() as db:
                for path, token, chunks, size, mtime_ns in items:
                    parent, raw, _ = self._parent_for(db, path, made)
                    if nodes.child(parent, raw) is not None:
                        raise oserror(errno.EEXIST, path)
                    db.execute(
                        "INSERT INTO nodes(parent, name, kind, mode, mtime_ns, ctime_ns, size, source, chunks) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (parent, raw, FILE, 0o644, mtime_ns or now, now, size, token, chunks))
                    nodes.touch(db, parent, now)
                    made.append((parent, dec(raw)))
                nodes.changed(db)
            return made

    def _parent_for(self, db: sqlite3.Connection | None, path: str,
                    made: list[tuple[int, str]] | None = None) -> tuple[int, bytes, bool]:
        """(directory id, name, True) of `path`: its directories walked from the root (materialized), and
        made where missing when `db` (a transaction) is given; without it, the walk stops at the first
        missing one (False: the path cannot exist yet)."""
        *dirs, name = path.split("/")
        parent = self._dir(ROOT_ID).id
        for i, part in enumerate(dirs):
            raw = check_entry_name(part, new=True)
            row = self._nodes.child(parent, raw)
            if row is None:
                if db is None:
                    return parent, b"", False
                now = time.time_ns()
                if made is not None and (parent, part) not in made:
                    made.append((parent, part))
                new = db.execute("INSERT INTO nodes(parent, name, kind, mode, mtime_ns, ctime_ns, atime_ns) "
                                 "VALUES (?, ?, ?, ?, ?, ?, ?)", (parent, raw, DIR, 0o755, now, now, now)).lastrowid
                assert new is not None  # the rowid of the INSERT
                parent = new
                continue
            if row.kind != DIR or row.inode is not None:
                raise oserror(errno.ENOTDIR, "/".join(dirs[: i + 1]))
            if row.id in self._upper.roots:  # made in staging: its tree becomes rows first (not in a txn)
                if db is not None:
                    raise oserror(errno.EXDEV, "/".join(dirs[: i + 1]))
                self._upper.demote(row.id)
            parent = self._dir(row.id).id
        return parent, check_entry_name(name, new=True), True

    def link(self, node_id: int, new_parent_id: int, new_name: str) -> StagedNode:
        """Another name for a file or symlink (a hard link): one node, so the names share content and
        attributes; a seal writes each as its own entry, sharing chunks. A directory: EPERM (as Linux);
        a node already unlinked: ENOENT (as linkat of an open, deleted file)."""
        raw = check_entry_name(new_name, new=True)
        with self._nodes.lock:
            self._nodes.check_writable()
            row = self._nodes.get(node_id)
            parent = self._dir(new_parent_id, live=True)
            if self._nodes.child(parent.id, raw) is not None:
                raise oserror(errno.EEXIST, new_name)
            if row.kind == DIR:
                raise oserror(errno.EPERM, f"{new_name}: a directory cannot be hard-linked")
            if row.parent is None:
                raise oserror(errno.ENOENT, f"node {node_id} was removed")
            now = time.time_ns()
            with self._nodes.txn() as db:
                db.execute("INSERT INTO nodes(parent, name, kind, mode, mtime_ns, ctime_ns, inode) "
                           "VALUES (?, ?, ?, 0, 0, 0, ?)", (parent.id, raw, row.kind, row.id))
                db.execute("UPDATE nodes SET nlink = nlink + 1, ctime_ns = ? WHERE id = ?", (now, row.id))
                self._nodes.touch(db, parent.id, now)
                self._nodes.changed(db)
            return self._files.attrs(self._nodes.get(node_id))

    def unlink(self, parent_id: int, name: str) -> None:
        """Remove a name; on a full disk the area's reserve pays for the transaction (deleting is how a
        user makes room, so it must work when nothing else can)."""
        try:
            self._unlink(parent_id, name)
        except OSError as e:
            if e.errno != errno.ENOSPC or not self._nodes.spend_reserve():
                raise
            self._unlink(parent_id, name)

    def _unlink(self, parent_id: int, name: str) -> None:
        raw = check_entry_name(name)
        with self._nodes.lock:
            self._nodes.check_writable()
            parent = self._dir(parent_id)
            row = self._nodes.child(parent.id, raw)
            if row is None:
                raise oserror(errno.ENOENT, name)
            if row.kind == DIR:
                raise oserror(errno.EISDIR, name)
            now = time.time_ns()
            with self._nodes.txn() as db:
                self._drop_name(db, row, now)
                self._nodes.touch(db, parent.id, now)
                self._nodes.changed(db)

    def rmdir(self, parent_id: int, name: str) -> None:
        raw = check_entry_name(name)
        with self._nodes.lock:
            self._nodes.check_writable()
            parent = self._dir(parent_id)
            row = self._nodes.child(parent.id, raw)
            if row is None:
                raise oserror(errno.ENOENT, name)
            if row.kind != DIR:
                raise oserror(errno.ENOTDIR, name)
            if not self._is_empty(row):
                raise oserror(errno.ENOTEMPTY, name)
            now = time.time_ns()
            with self._nodes.txn() as db:
                self._drop_name(db, row, now)
                self._nodes.touch(db, parent.id, now)
                self._nodes.changed(db)
            self._dropped(row)

    def rename(self, old_parent: int, old_name: str, new_parent: int, new_name: str, flags: int = 0) -> None:
        """rename(2)/renameat2: over an existing file or empty dir, NOREPLACE and EXCHANGE, with the
        kernel's errnos in the kernel's order. O(1): a lazy directory moves without being materialized."""
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or flags == RENAME_NOREPLACE | RENAME_EXCHANGE:
            raise oserror(errno.EINVAL, "rename flags")
        raw_old, raw_new = check_entry_name(old_name), check_entry_name(new_name, new=True)
        with self._nodes.lock:
            self._nodes.check_writable()
            op = self._dir(old_parent)
            np = self._dir(new_parent, live=True)
            src = self._nodes.child(op.id, raw_old)
            if src is None:
                raise oserror(errno.ENOENT, old_name)
            dst = self._nodes.child(np.id, raw_new)
            if flags & RENAME_NOREPLACE and dst is not None:
                raise oserror(errno.EEXIST, new_name)
            if flags & RENAME_EXCHANGE and dst is None:
                raise oserror(errno.ENOENT, new_name)
            if src.kind == DIR and self._is_within(np.id, src.id):
                raise oserror(errno.EINVAL, f"cannot move {old_name} into itself")
            if dst is not None and dst.kind == DIR and self._is_within(op.id, dst.id):
                raise oserror(errno.EINVAL if flags & RENAME_EXCHANGE else errno.ENOTEMPTY, new_name)
            if dst is not None and dst.node_id == src.node_id:
                return  # two names of one node (or one name): POSIX says do nothing
            if dst is not None and not flags & RENAME_EXCHANGE:
                if src.kind == DIR and dst.kind != DIR:
                    raise oserror(errno.ENOTDIR, new_name)
                if src.kind != DIR and dst.kind == DIR:
                    raise oserror(errno.EISDIR, new_name)
                if dst.kind == DIR and not self._is_empty(dst):
                    raise oserror(errno.ENOTEMPTY, new_name)
            now = time.time_ns()
            with self._nodes.txn() as db:
                if dst is not None and flags & RENAME_EXCHANGE:
                    db.execute("UPDATE nodes SET parent = NULL WHERE id = ?", (src.id,))
                    self._move(db, dst, op.id, raw_old, now)
                elif dst is not None:
                    self._drop_name(db, dst, now)
                self._move(db, src, np.id, raw_new, now)
                self._nodes.touch(db, op.id, now)
                self._nodes.touch(db, np.id, now)
                self._nodes.changed(db)
            if dst is not None and not flags & RENAME_EXCHANGE and dst.kind == DIR:
                self._dropped(dst)

    def forget(self, node_id: int) -> None:
        """The kernel forgot an inode: if it was unlinked, its row and data go now."""
        with self._nodes.lock:
            row = self._nodes.row(node_id)
            if row is None or row.parent is not None or row.id == ROOT_ID:
                return
            self._nodes.check_not_quick()
            with self._nodes.txn() as db:
                db.execute("DELETE FROM nodes WHERE id = ?", (node_id,))
            self._files.forget(node_id)

    # --- the staged tree as manifest entries -----------------------------------------------------

    def walk(self, dir_id: int = ROOT_ID, prefix: str = "") -> Iterator[tuple[Entry, int | None]]:
        """The staged tree in manifest order, as (entry, data id). The data id is set when a file's content
        is data/<id> (the entry has no chunks then); an unchanged base file keeps its base entry's chunks.
        A lazy directory streams its base subtree from the index, paths rewritten. The area lock is held
        per page of a directory, not across the walk."""
        nodes = self._nodes
        after = None
        while True:
            with nodes.lock:
                row = nodes.get(dir_id)
                lazy = (nodes.base_manifest(), dec(row.base_path)) if row.base_path is not None else None
                page = [] if lazy is not None else nodes.children(dir_id, after, _WALK_PAGE)
                items = [(r, self._entry(nodes.node_of(r),
                                         f"{prefix}/{dec(r.entry_name)}" if prefix else dec(r.entry_name)))
                         for r in page]
            if lazy is not None:
                yield from self._walk_base(*lazy, prefix)
                return
            for r, item in items:
                if r.id in self._upper.roots:  # a directory made here: its content is a real directory
                    yield self._upper.root_entry(r.id, item[0].path), None
                    yield from self._upper.walk(r.id, item[0].path)
                    continue
                yield item
                if r.kind == DIR:
                    yield from self.walk(r.id, item[0].path)
            if len(page) < _WALK_PAGE:
                return
            after = page[-1].name

    def _walk_base(self, manifest: str, base_dir: str, prefix: str) -> Iterator[tuple[Entry, int | None]]:
        after = None
        while True:
            page = self._repo.index.listdir(manifest, base_dir, after, _WALK_PAGE)
            for e in page:
                path = f"{prefix}/{e.name}" if prefix else e.name
                yield msgspec.structs.replace(e, path=path), None
                if e.kind == DIR:
                    yield from self._walk_base(manifest, e.path, path)
            if len(page) < _WALK_PAGE:
                return
            after = page[-1].name

    def _entry(self, row: Row, path: str) -> tuple[Entry, int | None]:
        if row.kind == DIR:
            return Entry(path, DIR, row.mode, row.mtime_ns, 0), None
        if row.kind == LINK:
            return Entry(path, LINK, 0o777, row.mtime_ns, len(row.link_target), row.link_target), None
        return self._files.file_entry(row, path)
