"""Directories made in staging, kept as real directories and files on the local disk (an overlay's
"upper" directory): what `cp -r`, `tar x` or `git clone` makes in staging costs what the disk costs, not
a database transaction per name.

A directory made in a directory of the table (nodes.py) is an *upper root*: its row stays in the table
(its name and place: it moves and is listed like any row), and its content is the real directory
upper/<id>, everything below it plain files, directories and symlinks there. Names, modes, owners, times
and bytes are the local filesystem's, which keeps them across a daemon crash as the table's WAL keeps its
rows; the seal reads them back with `walk`.

Nodes below a root get ids from the table's own sequence (NodeTable.reserve_ids), so one inode space is
never reused either way. A node is known by its (device, inode) on disk, so the names of a hard-linked
file are one node; only this process changes the upper directory, so the names it knows stay true. An
unlinked file keeps an open descriptor until the kernel forgets it (a handle may still read and write).

A rename or hard link between a directory of the table and one of an upper tree (or a reference added
into one) first *demotes* that upper tree: its nodes become rows of the table under the same ids, its
files data files (renamed into data/, not copied), and the operation is then the table's, atomic and
O(1) as before (a lazy directory of the base moves without being read). That costs one row a node, once:
it is what moving something of the version into a new directory asks for, and rare beside the creates
the upper trees are for. Its renames are recorded in the transaction that adds the rows (upper_moves),
so a crash between them is finished at the next open.

A seal or status walks the trees by disk path, not by node: it registers nothing (its memory does not
grow with the tree) and goes on when the kernel forgets a directory it is in. Each file it hands out has
a *walk id* (negative: never a node's), good until the walk moves on.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import itertools
import os
import shutil
import stat
import struct
from collections.abc import Callable, Iterator
from typing import Any

from artfs.core.manifest import DIR, FILE, LINK, Entry
from artfs.core.names import check_symlink_target
from artfs.core.staging.files import file_digest
from artfs.core.staging.nodes import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    NodeTable,
    StagedNode,
    check_entry_name,
    dec,
    enc,
    oserror,
)
from artfs.errors import InvalidName

ID_BLOCK = 4096  # ids reserved from the table per transaction
OPEN_FDS = 512  # data descriptors kept open (an unlinked file's are kept apart, until forgotten)
_AT_FDCWD = -100
# Staging behaves as noatime (as the table does): reading a file or listing a directory here must not
# move its atime, which the local filesystem (relatime) would do when atime <= mtime, e.g. after a utime.
_NOATIME = getattr(os, "O_NOATIME", 0)
_OPEN = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | _NOATIME


def _open(path: bytes, flags: int) -> int:
    """open(2) without following a symlink, atime untouched (O_NOATIME: allowed to the owner and to root)."""
    try:
        return os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW | _NOATIME)
    except PermissionError:
        if not _NOATIME or flags & os.O_ACCMODE != os.O_RDWR:
            return os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW)
        # a read-only file, and this process is not root: reads still work
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)


def _readlink(path: bytes, st: os.stat_result | None = None) -> bytes:
    """A symlink's target, its atime put back if reading moved it (no O_NOATIME for readlink)."""
    before = st if st is not None else os.lstat(path)
    target = os.readlink(path)
    after = os.lstat(path)
    if after.st_atime_ns != before.st_atime_ns:
        os.utime(path, ns=(before.st_atime_ns, after.st_mtime_ns), follow_symlinks=False)
    return target


def _names_in(path: bytes) -> list[bytes]:
    fd = _open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return [os.fsencode(n) for n in os.listdir(fd)]
    finally:
        os.close(fd)


def _renameat2(src: bytes, dst: bytes, flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(_AT_FDCWD, src, _AT_FDCWD, dst, ctypes.c_uint(flags)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


class UpperTrees:
    """The upper trees of the live generation: their roots (ids of table rows) and every node below them
    that this process has seen. Every method takes the area lock, as the table's do."""

    def __init__(self, nodes: NodeTable, table_path: Callable[[int], str]) -> None:
        self._nodes = nodes
        self._table_path = table_path  # a root's path in the tree (Namespace.path_of)
        self.roots: set[int] = set()
        self._dir = b""
        self._key: dict[tuple[int, int], int] = {}  # (st_dev, st_ino) of a live disk object → node id
        self._names: dict[int, list[tuple[int, bytes]]] = {}  # node → (parent, name) of each name; [] unlinked
        self._fds: collections.OrderedDict[int, int] = collections.OrderedDict()  # oldest first
        self._unlinked: dict[int, int] = {}  # node → descriptor of an unlinked file
        self._digests: dict[int, bytes] = {}  # st_ino → _stamp(st) + digest (~170 bytes a file statused)
        self._writes = 0  # content changes made, ever (data_digest's check that none came while hashing)
        self._walked: dict[int, bytes] = {}  # walk id → its file's disk path, while the walk is at it
        self._targets: dict[int, bytes] = {}  # symlink node → its target (read once: readlink moves atime)
        self._ids: Iterator[int] = iter(())
        self._uid, self._gid = os.geteuid(), os.getegid()

    # --- generations -------------------------------------------------------------------------------

    def attach(self, upper_dir: str, data_dir: str) -> None:
        """Serve the generation whose upper directory is `upper_dir` and whose table is open: make what a
        crash left half-done whole (a demotion's files not yet moved: moved now; a root's directory
        missing: empty; a directory of no root: removed)."""
        self._dir = os.fsencode(upper_dir)
        self._data = os.fsencode(data_dir)
        os.makedirs(upper_dir, mode=0o700, exist_ok=True)
        moves = self._nodes.db.execute("SELECT id, path FROM upper_moves").fetchall()
        for node_id, path in moves:
            with contextlib.suppress(FileNotFoundError):
                os.rename(path, self._data_path(node_id))
        if moves:
            with self._nodes.txn() as db:
                db.execute("DELETE FROM upper_moves")
        self.roots = self._nodes.upper_roots()
        for name in os.listdir(self._dir):
            if not name.isdigit() or int(name) not in self.roots:
                shutil.rmtree(os.path.join(self._dir, name), ignore_errors=True)
        for r in self.roots:
            with contextlib.suppress(FileExistsError):
                os.mkdir(self._root_path(r), 0o755)
        self._ids = iter(())

    def detach(self) -> None:
        for fds in (self._fds, self._unlinked):
            while fds:
                os.close(fds.popitem()[1])
        self.roots = set()
        self._key.clear()
        self._names.clear()
        self._digests.clear()
        self._targets.clear()

    # --- who is who --------------------------------------------------------------------------------

    def owns(self, node_id: int) -> bool:
        """An upper root or a node below one (every request in such a directory comes here)."""
        return node_id in self._names or node_id in self.roots

    def below(self, node_id: int) -> bool:
        """A node below a root (its row is not in the table)."""
        return node_id in self._names

    @staticmethod
    def walked(data_id: int) -> bool:
        """A data id `walk` gave (of a file in an upper tree)."""
        return data_id < 0

    def _data_path(self, node_id: int) -> bytes:
        return self._data + b"/" + str(node_id).encode()  # DataFiles.path's layout

    def _root_path(self, root: int) -> bytes:
        return self._dir + b"/" + str(root).encode()

    def _chain(self, node_id: int) -> tuple[int, list[bytes]]:
        """(the root holding `node_id`, the names from there down to it): one walk up its first names."""
        parts = []
        while node_id not in self.roots:
            names = self._names.get(node_id)
            if not names:
                raise oserror(errno.ENOENT, f"node {node_id} was removed")
            node_id, name = names[0]
            parts.append(name)
        parts.reverse()
        return node_id, parts

    def _path(self, node_id: int) -> bytes:
        root, names = self._chain(node_id)
        return b"/".join([self._root_path(root), *names])

    def _path_by(self, names: list[tuple[int, bytes]]) -> bytes:
        parent, raw = names[0]
        return self._path(parent) + b"/" + raw

    def tree_path(self, node_id: int) -> str:
        """The node's path in the staged tree."""
        with self._nodes.lock:
            root, names = self._chain(node_id)
            return "/".join([self._table_path(root), *map(dec, names)])

    def root_of(self, node_id: int) -> int:
        """The upper root whose tree holds `node_id` (itself, for a root)."""
        return self._chain(node_id)[0]

    def demote(self, root: int) -> None:
        """Make upper tree `root` rows of the table (see the module docstring): after this, `root` is a
        directory of the table and every node below it keeps its id. A file hard-linked into other upper
        trees takes them along, in the same transaction (the table keeps a node's names together). Too
        slow for an event loop."""
        nodes = self._nodes
        with nodes.lock:
            if root not in self.roots:
                return  # demoted already, with a tree it shared a file with
            nodes.check_not_quick()
            nodes.check_writable()
            rows: list[list[Any]] = []
            moves: list[tuple[int, bytes]] = []
            files: dict[tuple[int, int], list] = {}  # (dev, ino) → its node's row (a list: nlink counted)
            nlinks: dict[tuple[int, int], int] = {}  # (dev, ino) → its names on disk
            below: list[int] = []

            def visit(dir_id: int) -> None:
                for raw, node_id, st, path in self._entries(dir_id):
                    mode, times = st.st_mode & 0o7777, (st.st_mtime_ns, st.st_ctime_ns)
                    if stat.S_ISDIR(st.st_mode):
                        rows.append([node_id, dir_id, raw, DIR, mode, *times, 0, 0, None, st.st_uid, st.st_gid,
                                     st.st_atime_ns, 1, None])
                        below.append(node_id)
                        visit(node_id)
                    else:  # a file or symlink: one row for the node, a name row for each further name
                        key = (st.st_dev, st.st_ino)
                        row = files.get(key)
                        if row is None:
                            link = stat.S_ISLNK(st.st_mode)
                            target = self._target(node_id, path, st) if link else None
                            row = files[key] = [node_id, dir_id, raw, LINK if link else FILE, 0o777 if link else mode,
                                                *times, len(target) if target is not None else st.st_size,
                                                int(not link), target, st.st_uid, st.st_gid, st.st_atime_ns, 1, None]
                            nlinks[key] = st.st_nlink
                            rows.append(row)
                            below.append(node_id)
                            if not link:
                                moves.append((node_id, path))
                        else:  # as Namespace.link makes them
                            row[13] += 1
                            rows.append([self._new_id(), dir_id, raw, row[3], 0, 0, 0, 0, 0, None, None, None, None,
                                         1, row[0]])

            trees = [root]
            visit(root)
            while missing := {key for key, n in nlinks.items() if files[key][13] < n}:
                more = [r for r in sorted(self.roots - set(trees)) if self._holds(r, missing)]
                if not more:  # (every name of an upper file is in an upper tree: a guard)
                    raise oserror(errno.EXDEV, "a file hard-linked out of the directories made in staging")
                for r in more:
                    trees.append(r)
                    visit(r)
            with nodes.txn() as db:
                db.executemany(
                    "INSERT INTO nodes(id, parent, name, kind, mode, mtime_ns, ctime_ns, size, has_data, target, "
                    "uid, gid, atime_ns, nlink, inode) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                for r in trees:
                    st = os.lstat(self._root_path(r))
                    db.execute("UPDATE nodes SET mode = ?, mtime_ns = ?, ctime_ns = ?, uid = ?, gid = ?, "
                               "atime_ns = ? WHERE id = ?", (st.st_mode & 0o7777, st.st_mtime_ns, st.st_ctime_ns,
                                                             st.st_uid, st.st_gid, st.st_atime_ns, r))
                    db.execute("DELETE FROM upper_roots WHERE id = ?", (r,))
                db.executemany("INSERT INTO upper_moves(id, path) VALUES (?, ?)", moves)
                nodes.changed(db)
            self.roots.difference_update(trees)
            for node_id in below:
                fd = self._fds.pop(node_id, None)
                if fd is not None:
                    os.close(fd)
            for node_id, path in moves:
                os.rename(path, self._data_path(node_id))
            with nodes.txn() as db:
                db.execute("DELETE FROM upper_moves")
            for r in trees:
                shutil.rmtree(self._root_path(r), ignore_errors=True)
            for node_id in below:
                if node_id not in self._unlinked:
                    self._names.pop(node_id, None)
            for key in files:  # the table deletes them when it will: their inode numbers may come back
                self._digests.pop(key[1], None)
            self._key = {k: v for k, v in self._key.items() if v in self._names}

    def _holds(self, root: int, keys: set[tuple[int, int]]) -> bool:
        """Whether upper tree `root` has a name of any of these (device, inode)s."""
        todo = [self._root_path(root)]
        while todo:
            top = todo.pop()
            for raw in _names_in(top):  # (not os.walk: a listing here keeps the directory's atime)
                st = os.lstat(top + b"/" + raw)
                if (st.st_dev, st.st_ino) in keys:
                    return True
                if stat.S_ISDIR(st.st_mode):
                    todo.append(top + b"/" + raw)
        return False

    def parent_of(self, node_id: int) -> int:
        names = self._names.get(node_id)
        if not names:
            raise oserror(errno.ENOENT, f"node {node_id} was removed")
        return names[0][0]

    def _new_id(self) -> int:
        try:
            return next(self._ids)
        except StopIteration:
            self._ids = iter(self._nodes.reserve_ids(ID_BLOCK))
            return next(self._ids)

    def _known(self, parent: int, raw: bytes, st: os.stat_result) -> int:
        """The node of the disk object `st`, found at (parent, raw): known, or given an id now."""
        key = (st.st_dev, st.st_ino)
        node_id = self._key.get(key)
        if node_id is None or node_id not in self._names:  # new to this process, or forgotten since
            node_id = self._key[key] = self._new_id()
            self._names[node_id] = [(parent, raw)]
        else:
            names = self._names[node_id]
            if not names or names[0] != (parent, raw):  # the name it was just found by comes first: it is
                with contextlib.suppress(ValueError):  # sure to be live (an older one's directory may have
                    names.remove((parent, raw))  # been forgotten since)
                names.insert(0, (parent, raw))
        return node_id

    def _drop_name(self, node_id: int, parent: int, raw: bytes, st: os.stat_result) -> None:
        """(parent, raw) no longer names the node; with no name left, its disk inode may be reused."""
        names = self._names.get(node_id, [])
        with contextlib.suppress(ValueError):
            names.remove((parent, raw))
        if not names:
            self._key.pop((st.st_dev, st.st_ino), None)
            self._digests.pop(st.st_ino, None)  # its inode number may be a new file's next

    def _attrs(self, node_id: int, st: os.stat_result, path: bytes | None = None) -> StagedNode:
        fmt = stat.S_IFMT(st.st_mode)
        target = None
        size = st.st_size
        if fmt == stat.S_IFDIR:
            kind, nlink, size = DIR, 1, 0  # as the table's (the mount shows its own DIR_SIZE)
        elif fmt == stat.S_IFLNK:
            kind, nlink = LINK, st.st_nlink
            target = dec(self._target(node_id, path if path is not None else self._path(node_id), st))
        else:
            kind, nlink = FILE, st.st_nlink
        return StagedNode(node_id, kind, st.st_mode & 0o7777, size, st.st_mtime_ns, st.st_ctime_ns, nlink,
                          target, st.st_uid, st.st_gid, st.st_atime_ns)

    def _target(self, node_id: int, path: bytes, st: os.stat_result) -> bytes:
        """A symlink's target, read from disk once per node (a symlink's target never changes)."""
        target = self._targets.get(node_id)
        if target is None:
            target = self._targets[node_id] = _readlink(path, st)
        return target

    def _fd(self, node_id: int) -> int:
        fd = self._fds.get(node_id) or self._unlinked.get(node_id)
        if fd is None:
            path = self._path(node_id)
            try:
                fd = _open(path, os.O_RDWR)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise oserror(errno.EINVAL, f"node {node_id} is a symlink") from None
                raise
            self._keep_fd(node_id, fd)
        return fd

    def _keep_fd(self, node_id: int, fd: int) -> None:
        if len(self._fds) >= OPEN_FDS:
            os.close(self._fds.popitem(last=False)[1])  # (a dict's first key is O(holes) to find)
        self._fds[node_id] = fd

    def _stat(self, node_id: int) -> os.stat_result:
        fd = self._fds.get(node_id) or self._unlinked.get(node_id)
        return os.fstat(fd) if fd is not None else os.lstat(self._path(node_id))

    def _own(self, path: bytes, fd: int | None, st: os.stat_result, parent_path: bytes,
             owner: tuple[int, int] | None) -> os.stat_result:
        """Give a new node to `owner` (uid, gid), its group the directory's if that is set-group-ID (the
        local filesystem did that already). A process that is not root keeps its own."""
        if owner is None or self._uid != 0:
            return st
        uid, gid = owner
        if gid != st.st_gid and os.lstat(parent_path).st_mode & stat.S_ISGID:
            gid = -1
        if uid == st.st_uid and gid in (-1, st.st_gid):
            return st
        if fd is not None:
            os.fchown(fd, uid, gid)
            return os.fstat(fd)
        os.lchown(path, uid, gid)
        return os.lstat(path)

    # --- names -------------------------------------------------------------------------------------

    def lookup(self, parent: int, name: str) -> StagedNode | None:
        raw = check_entry_name(name)
        with self._nodes.lock:
            path = self._path(parent) + b"/" + raw
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                return None
            return self._attrs(self._known(parent, raw, st), st, path)

    def getattr(self, node_id: int) -> StagedNode:
        with self._nodes.lock:
            return self._attrs(node_id, self._stat(node_id))

    def listdir(self, node_id: int) -> list[tuple[str, StagedNode]]:
        """A directory's entries sorted by name (bytes), as the table's."""
        with self._nodes.lock:
            return [(dec(raw), self._attrs(nid, st, path)) for raw, nid, st, path in self._entries(node_id)]

    def _entries(self, node_id: int) -> list[tuple[bytes, int, os.stat_result, bytes]]:
        base = self._path(node_id)
        out = []
        for raw in sorted(_names_in(base)):
            path = base + b"/" + raw
            st = os.lstat(path)
            out.append((raw, self._known(node_id, raw, st), st, path))
        return out

    def readlink(self, node_id: int) -> str:
        with self._nodes.lock:
            try:
                path = self._path(node_id)
                st = os.lstat(path)
                if not stat.S_ISLNK(st.st_mode):
                    raise oserror(errno.EINVAL, f"node {node_id} is not a symlink")
                return dec(self._target(node_id, path, st))
            except OSError as e:
                if e.errno == errno.EINVAL:
                    raise oserror(errno.EINVAL, f"node {node_id} is not a symlink") from None
                raise

    def is_empty(self, root: int) -> bool:
        with self._nodes.lock:
            return not _names_in(self._root_path(root))

    def make_root(self, root: int, mode: int, owner: tuple[int, int] | None) -> None:
        """Directory `root` (a row being inserted) gets its upper directory: call inside its transaction,
        so a failure here inserts nothing (and a crash before the commit leaves a directory `attach`
        removes)."""
        path = self._root_path(root)
        os.mkdir(path, 0o700)
        os.chmod(path, mode)
        if owner is not None and self._uid == 0 and owner != (self._uid, self._gid):
            os.chown(path, *owner)
        self.roots.add(root)

    def drop_root(self, root: int) -> None:
        """After the transaction that removed root's name: its (empty) directory goes."""
        self.roots.discard(root)
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(self._root_path(root))

    def create(self, parent: int, name: str, mode: int, owner: tuple[int, int] | None) -> StagedNode:
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
            raise oserror(errno.EPERM, f"{name}: only regular files, directories and symlinks can be staged")
        raw = check_entry_name(name, new=True)
        with self._nodes.lock:
            self._nodes.check_writable()
            ppath = self._path(parent)
            path = ppath + b"/" + raw
            fd = os.open(path, os.O_CREAT | os.O_EXCL | _OPEN, mode & 0o7777)
            try:
                st = os.fstat(fd)
                if st.st_mode & 0o7777 != mode & 0o7777:  # this process's umask took bits the caller's left
                    os.fchmod(fd, mode & 0o7777)
                    st = os.fstat(fd)
                st = self._own(path, fd, st, ppath, owner)
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(path)
                raise
            node_id = self._known(parent, raw, st)
            self._keep_fd(node_id, fd)
            return self._attrs(node_id, st)

    def mkdir(self, parent: int, name: str, mode: int, owner: tuple[int, int] | None) -> StagedNode:
        raw = check_entry_name(name, new=True)
        with self._nodes.lock:
            self._nodes.check_writable()
            ppath = self._path(parent)
            path = ppath + b"/" + raw
            os.mkdir(path, mode & 0o7777)
            try:
                st = os.lstat(path)
                want = (mode & 0o7777) | (st.st_mode & stat.S_ISGID)  # a set-group-ID parent's bit stays
                if st.st_mode & 0o7777 != want:
                    os.chmod(path, want)
                    st = os.lstat(path)
                st = self._own(path, None, st, ppath, owner)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.rmdir(path)
                raise
            return self._attrs(self._known(parent, raw, st), st, path)

    def symlink(self, parent: int, name: str, target: str, owner: tuple[int, int] | None) -> StagedNode:
        raw = check_entry_name(name, new=True)
        with self._nodes.lock:
            self._nodes.check_writable()
            ppath = self._path(parent)
            path = ppath + b"/" + raw
            if os.path.lexists(path):  # EEXIST before a refused target, as the kernel orders them
                raise oserror(errno.EEXIST, name)
            try:
                check_symlink_target(f"{self.tree_path(parent)}/{name}".lstrip("/"), target)
            except InvalidName as e:
                raise oserror(errno.EPERM, str(e)) from None
            os.symlink(enc(target), path)
            st = self._own(path, None, os.lstat(path), ppath, owner)
            node_id = self._known(parent, raw, st)
            self._targets[node_id] = enc(target)
            return self._attrs(node_id, st, path)

    def link(self, node_id: int, new_parent: int, new_name: str) -> StagedNode:
        raw = check_entry_name(new_name, new=True)
        with self._nodes.lock:
            self._nodes.check_writable()
            src = self._path(node_id)
            dst = self._path(new_parent) + b"/" + raw
            if stat.S_ISDIR(os.lstat(src).st_mode):
                raise oserror(errno.EPERM, f"{new_name}: a directory cannot be hard-linked")
            os.link(src, dst, follow_symlinks=False)
            self._names[node_id].append((new_parent, raw))
            return self._attrs(node_id, os.lstat(dst), dst)

    def _keep_if_last(self, node_id: int, path: bytes, st: os.stat_result) -> None:
        """Before a file's last name goes: keep a descriptor, for handles still open on it."""
        if stat.S_ISREG(st.st_mode) and st.st_nlink <= 1 and node_id not in self._unlinked:
            fd = self._fds.pop(node_id, None)
            if fd is None:
                fd = _open(path, os.O_RDWR)
            self._unlinked[node_id] = fd

    def unlink(self, parent: int, name: str) -> None:
        raw = check_entry_name(name)
        with self._nodes.lock:
            self._nodes.check_writable()
            path = self._path(parent) + b"/" + raw
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                raise oserror(errno.EISDIR, name)
            node_id = self._known(parent, raw, st)
            self._keep_if_last(node_id, path, st)
            os.unlink(path)
            self._drop_name(node_id, parent, raw, st)

    def rmdir(self, parent: int, name: str) -> None:
        raw = check_entry_name(name)
        with self._nodes.lock:
            self._nodes.check_writable()
            path = self._path(parent) + b"/" + raw
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode):
                raise oserror(errno.ENOTDIR, name)
            os.rmdir(path)
            node_id = self._key.get((st.st_dev, st.st_ino))
            if node_id is not None:
                self._drop_name(node_id, parent, raw, st)

    def rename(self, old_parent: int, old_name: str, new_parent: int, new_name: str, flags: int = 0) -> None:
        """rename(2)/renameat2 below roots: the local filesystem's own, its errnos; the names follow."""
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or flags == RENAME_NOREPLACE | RENAME_EXCHANGE:
            raise oserror(errno.EINVAL, "rename flags")
        raw_old, raw_new = check_entry_name(old_name), check_entry_name(new_name, new=True)
        with self._nodes.lock:
            self._nodes.check_writable()
            src = self._path(old_parent) + b"/" + raw_old
            dst = self._path(new_parent) + b"/" + raw_new
            sst = os.lstat(src)
            try:
                dst_st: os.stat_result | None = os.lstat(dst)
            except FileNotFoundError:
                dst_st = None
            if dst_st is not None and (dst_st.st_dev, dst_st.st_ino) == (sst.st_dev, sst.st_ino):
                return  # two names of one node (or one name): POSIX says do nothing
            moving = self._known(old_parent, raw_old, sst)
            replaced = self._known(new_parent, raw_new, dst_st) if dst_st is not None else None
            if flags:
                _renameat2(src, dst, flags)
            else:
                if replaced is not None and dst_st is not None:
                    self._keep_if_last(replaced, dst, dst_st)
                os.rename(src, dst)
            self._drop_name(moving, old_parent, raw_old, sst)
            self._names[moving].insert(0, (new_parent, raw_new))
            self._key[(sst.st_dev, sst.st_ino)] = moving
            if replaced is not None and dst_st is not None:
                self._drop_name(replaced, new_parent, raw_new, dst_st)
                if flags & RENAME_EXCHANGE:
                    self._names[replaced].insert(0, (old_parent, raw_old))
                    self._key[(dst_st.st_dev, dst_st.st_ino)] = replaced
                elif stat.S_ISDIR(dst_st.st_mode):
                    self._names[replaced] = []

    def forget(self, node_id: int) -> None:
        """The kernel forgot the node: what is kept of it goes (a lookup gives it a new id), so memory
        follows what the kernel holds, not how many files were made. An unlinked file's bytes go too."""
        with self._nodes.lock:
            names = self._names.pop(node_id, None)
            if names is None:
                return
            fd = self._unlinked.pop(node_id, None) or self._fds.pop(node_id, None)
            if fd is not None:
                os.close(fd)
            self._targets.pop(node_id, None)
            if names:
                with contextlib.suppress(OSError):
                    st = os.lstat(self._path_by(names))
                    if self._key.get((st.st_dev, st.st_ino)) == node_id:
                        del self._key[(st.st_dev, st.st_ino)]

    # --- bytes -------------------------------------------------------------------------------------

    def setattr(self, node_id: int, mode: int | None, size: int | None, mtime_ns: int | None,
                atime_ns: int | None, uid: int | None, gid: int | None) -> StagedNode:
        """On the node's descriptor when it has one (a file just made: tar's chown, chmod and utimens
        need no stat first), else by path, never through a symlink."""
        with self._nodes.lock:
            self._nodes.check_writable()
            fd = self._fds.get(node_id) or self._unlinked.get(node_id)
            st = None
            if fd is None:
                st = self._stat(node_id)
                if not stat.S_ISLNK(st.st_mode) and not stat.S_ISDIR(st.st_mode):
                    fd = self._fd(node_id)
            if size is not None:
                if fd is None:
                    raise oserror(errno.EINVAL if st and stat.S_ISLNK(st.st_mode) else errno.EISDIR,
                                  f"node {node_id}")
                os.ftruncate(fd, size)
                self._changed(fd)
            if fd is not None:
                if uid is not None or gid is not None:  # the kernel has put any set-user-ID clearing in `mode`
                    os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
                if mode is not None:
                    os.fchmod(fd, mode)
                if mtime_ns is not None or atime_ns is not None:
                    if mtime_ns is None or atime_ns is None:  # os.utime wants both
                        now = os.fstat(fd)
                        atime_ns = now.st_atime_ns if atime_ns is None else atime_ns
                        mtime_ns = now.st_mtime_ns if mtime_ns is None else mtime_ns
                    os.utime(fd, ns=(atime_ns, mtime_ns))
                return self._attrs(node_id, os.fstat(fd))
            assert st is not None
            path = self._path(node_id)
            if uid is not None or gid is not None:
                os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid, follow_symlinks=False)
            if mode is not None and not stat.S_ISLNK(st.st_mode):  # a symlink's is 0777 on Linux
                os.chmod(path, mode)
            if mtime_ns is not None or atime_ns is not None:
                os.utime(path, ns=(st.st_atime_ns if atime_ns is None else atime_ns,
                                   st.st_mtime_ns if mtime_ns is None else mtime_ns), follow_symlinks=False)
            return self._attrs(node_id, os.lstat(path), path)

    def read(self, node_id: int, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0:
            raise oserror(errno.EINVAL, "negative offset or size")
        with self._nodes.lock:
            return os.pread(self._file_fd(node_id), size, offset)

    def write(self, node_id: int, offset: int, data: bytes | memoryview) -> int:
        if offset < 0:
            raise oserror(errno.EINVAL, "negative offset")
        with self._nodes.lock:
            self._nodes.check_writable()
            fd = self._file_fd(node_id)
            self._changed(fd)
            return os.pwrite(fd, data, offset)

    def truncate(self, node_id: int, size: int) -> None:
        if size < 0:
            raise oserror(errno.EINVAL, "negative size")
        with self._nodes.lock:
            self._nodes.check_writable()
            fd = self._file_fd(node_id)
            self._changed(fd)
            os.ftruncate(fd, size)

    def fsync(self, node_id: int) -> None:
        """The bytes and the name on disk, for power loss too (a crash of the daemon loses neither)."""
        with self._nodes.lock:
            os.fsync(self._file_fd(node_id))
            names = self._names.get(node_id)
            parent = self._path(names[0][0]) if names else None
        if parent is not None:
            dfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def _changed(self, fd: int) -> None:
        """Content is about to change: a digest taken of it goes (a write within one tick of the disk's
        clock may leave ctime, mtime and size as they were), as does one being taken now."""
        self._writes += 1
        if self._digests:
            self._digests.pop(os.fstat(fd).st_ino, None)

    def _file_fd(self, node_id: int) -> int:
        st = self._stat(node_id)
        if stat.S_ISDIR(st.st_mode):
            raise oserror(errno.EISDIR, f"node {node_id}")
        if not stat.S_ISREG(st.st_mode):
            raise oserror(errno.EINVAL, f"node {node_id} is not a file")
        return self._fd(node_id)

    # --- the tree as manifest entries (seal, status) -----------------------------------------------

    def walk(self, root: int, prefix: str) -> Iterator[tuple[Entry, int | None]]:
        """Everything below `root` in manifest order, as Namespace.walk: (entry, data id), the data id a
        walk id for every file (data_path and data_digest answer for it until the walk goes on). The lock
        is held per directory."""
        with self._nodes.lock:
            path = self._root_path(root)
        yield from self._walk(path, prefix)

    def _walk(self, dir_path: bytes, prefix: str) -> Iterator[tuple[Entry, int | None]]:
        with self._nodes.lock:
            items = []
            for raw in sorted(_names_in(dir_path)):
                path = dir_path + b"/" + raw
                st = os.lstat(path)
                target = None
                if stat.S_ISLNK(st.st_mode):
                    node_id = self._key.get((st.st_dev, st.st_ino))
                    target = self._targets.get(node_id) if node_id is not None else None
                    if target is None:
                        target = _readlink(path, st)
                items.append((raw, path, st, target))
        for raw, path, st, target in items:
            where = f"{prefix}/{dec(raw)}"
            if stat.S_ISDIR(st.st_mode):
                yield Entry(where, DIR, st.st_mode & 0o7777, st.st_mtime_ns, 0), None
                yield from self._walk(path, where)
            elif target is not None:
                yield Entry(where, LINK, 0o777, st.st_mtime_ns, len(target), target), None
            else:
                walk_id = next(_WALK_IDS)
                self._walked[walk_id] = path
                try:
                    yield Entry(where, FILE, st.st_mode & 0o7777, st.st_mtime_ns, st.st_size, b"", b""), walk_id
                finally:
                    del self._walked[walk_id]

    def root_entry(self, root: int, path: str) -> Entry:
        with self._nodes.lock:
            st = os.lstat(self._root_path(root))
        return Entry(path, DIR, st.st_mode & 0o7777, st.st_mtime_ns, 0)

    def data_path(self, walk_id: int) -> str:
        return os.fsdecode(self._walked_path(walk_id))

    def data_digest(self, walk_id: int) -> bytes:
        """A file's content digest, remembered by inode until it changes (its ctime, mtime or size moves)."""
        with self._nodes.lock:
            path = self._walked_path(walk_id)
            st = os.lstat(path)
            writes = self._writes
        stamp = _stamp(st)
        known = self._digests.get(st.st_ino)
        if known is not None and known[:_STAMP] == stamp:
            return known[_STAMP:]
        d = file_digest(os.fsdecode(path))
        with self._nodes.lock:
            if self._writes == writes:  # no write since the stat: the digest is of those bytes
                self._digests[st.st_ino] = stamp + d
        return d

    def _walked_path(self, walk_id: int) -> bytes:
        path = self._walked.get(walk_id)
        if path is None:
            raise oserror(errno.ENOENT, f"walk id {walk_id} is out of date")
        return path


_WALK_IDS = itertools.count(-1, -1)  # one sequence for every walk: two walks at once never share an id
_STAMP = 32


def _stamp(st: os.stat_result) -> bytes:
    """What says a file is unchanged since its digest was taken (ctime moves on any change through us)."""
    return struct.pack("<4q", st.st_dev, st.st_ctime_ns, st.st_mtime_ns, st.st_size)
