"""Model-based test through a real mount: random operations applied both to MOUNT/NAME/staging and to a
plain directory must agree — trees, contents and errnos — after every step; then `artfs seal`, and the
new version equals the plain directory.

Each example gets its own artifact: `mkdir MOUNT/mN`, the initial tree written into its staging and
sealed as v0, so the example starts on a copy-on-write view of v0 (base files, lazy directories) —
the same start every time, which shrinking needs. $ARTFS_MOUNT_MODEL_EXAMPLES sets the budget.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import os
import random
import shutil
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

import artfs.api
from tests.conftest import Mount
from tests.fs.conftest import seal, tree_of

MiB = 1 << 20
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
NAMES = ["a", "b", "c"]
LINK_NAMES = ["l1", "l2"]  # symlinks only ever live under these names, so no path walks through one
PATHS = ["/".join(t) for d in (1, 2, 3) for t in itertools.product(NAMES, repeat=d)]
LINK_PATHS = [f"{p}/{ln}" if p else ln for p in ["", *[p for p in PATHS if p.count("/") < 2]] for ln in LINK_NAMES]
TARGETS = ["a", "b/c", "nowhere", "./c"]  # relative, never '..': no rename makes them escape the tree
OFFSETS = [0, 1, 100, 4096, 300_000, 3 * MiB - 7]
SIZES = [0, 1, 50, 5000, MiB]
MODES = [0o644, 0o600, 0o755, 0o700]
DATA = st.one_of(st.binary(max_size=100), st.integers(1, 3).map(lambda k: bytes([k]) * 70_000 * k))

_libc = ctypes.CDLL(None, use_errno=True)


def renameat2(src: str, dst: str, flags: int) -> None:
    if _libc.renameat2(-100, os.fsencode(src), -100, os.fsencode(dst), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), src)


def errno_of(fn) -> int | None:
    try:
        fn()
    except OSError as e:
        return e.errno
    return None


def initial_tree(root: Path) -> None:
    """A file of several chunks, small and empty ones, an executable, nested dirs, two symlinks."""
    for d in ("c", "b/b/c"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for rel, data in {"a": random.Random(1).randbytes(5000), "b/c": random.Random(2).randbytes(3 * MiB),
                      "b/b/a": b"small", "b/a": b""}.items():
        (root / rel).write_bytes(data)
    os.symlink("c", root / "b" / "l1")
    os.symlink("nowhere", root / "l2")
    os.chmod(root / "b" / "a", 0o755)


class MountModel(RuleBasedStateMachine):
    mount: Mount
    tmp: Path
    counter = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        n = next(self.counter)
        self.name = f"m{n}"
        art = self.mount.path / self.name
        os.mkdir(art)
        self.st = art / "staging"
        initial_tree(self.st)
        assert artfs.api.seal(str(self.st))["ref"] == f"{self.name}:v0"
        self.model = self.tmp / f"model{n}"
        self.model.mkdir()
        initial_tree(self.model)
        assert tree_of(self.st) == tree_of(self.model)

    def teardown(self) -> None:
        try:
            res = seal(self.st, "-m", "model")
            art = self.mount.path / self.name
            mine = tree_of(self.model)
            if res["unchanged"]:  # the digest covers content and exec bits, not other mode bits
                assert tree_of(art / "v0") == tree_of(self.st)
                assert {p: (k, c) for p, (k, _, c) in tree_of(art / "v0").items()} == \
                       {p: (k, c) for p, (k, _, c) in mine.items()}
            else:
                assert res["ref"] == f"{self.name}:v1"
                assert tree_of(art / "v1") == mine
                assert tree_of(self.st) == mine  # a fresh view of v1
        finally:
            shutil.rmtree(self.model)

    def both(self, op) -> None:
        """`op(root)` in the plain directory and in staging: the same errno (or none) from both."""
        e_real, e_staged = errno_of(lambda: op(str(self.model))), errno_of(lambda: op(str(self.st)))
        assert e_real == e_staged, \
            f"errno {e_real and errno.errorcode[e_real]} in a directory, {e_staged and errno.errorcode[e_staged]} " \
            "in staging"

    def pick(self, d, pool: list[str], new: bool = False, dirs_only: bool = False) -> str:
        """A path from `pool`, biased so that operations meet entries: mostly an existing one, or with
        `new` mostly a free name in an existing directory; sometimes anything (for the errnos)."""
        live, dirs = set(), {""}
        for dirpath, dirnames, filenames in os.walk(self.model):
            rel = os.path.relpath(dirpath, self.model)
            rel = "" if rel == "." else rel + "/"
            live.update(rel + n for n in dirnames + filenames)
            dirs.update(rel + n for n in dirnames)
        how = d.draw(st.integers(0, 5))
        if how == 0:
            choices = pool
        elif new != (how == 1):
            choices = [p for p in pool if p not in live and p.rpartition("/")[0] in dirs]
        else:
            choices = [p for p in pool if p in (dirs if dirs_only else live)]
        return d.draw(st.sampled_from(choices or pool))

    # --- operations ---

    @rule(d=st.data())
    def create(self, d):
        p = self.pick(d, PATHS, new=True)
        self.both(lambda r: os.close(os.open(f"{r}/{p}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)))

    @rule(d=st.data())
    def mkdir(self, d):
        p = self.pick(d, PATHS, new=True)
        self.both(lambda r: os.mkdir(f"{r}/{p}", 0o755))

    @rule(d=st.data(), to=st.sampled_from(TARGETS))
    def symlink(self, d, to):
        p = self.pick(d, LINK_PATHS, new=True)
        self.both(lambda r: os.symlink(to, f"{r}/{p}"))

    @rule(d=st.data(), offset=st.sampled_from(OFFSETS), data=DATA, append=st.booleans())
    def write(self, d, offset, data, append):
        p = self.pick(d, PATHS)

        def op(r: str) -> None:
            fd = os.open(f"{r}/{p}", os.O_WRONLY | (os.O_APPEND if append else 0))
            try:
                if append:
                    os.write(fd, data)
                else:
                    os.pwrite(fd, data, offset)
            finally:
                os.close(fd)

        self.both(op)

    @rule(d=st.data(), offset=st.sampled_from(OFFSETS), size=st.sampled_from([1, 10, 5000, MiB]))
    def read(self, d, offset, size):
        p = self.pick(d, PATHS)
        got = {}

        def op(r: str) -> None:
            fd = os.open(f"{r}/{p}", os.O_RDONLY)
            try:
                got[r] = os.pread(fd, size, offset)
            finally:
                os.close(fd)

        self.both(op)
        assert got.get(str(self.model)) == got.get(str(self.st))

    @rule(d=st.data(), size=st.sampled_from(SIZES), by_fd=st.booleans())
    def truncate(self, d, size, by_fd):
        p = self.pick(d, PATHS)

        def op(r: str) -> None:
            if not by_fd:
                os.truncate(f"{r}/{p}", size)
                return
            fd = os.open(f"{r}/{p}", os.O_RDWR)
            try:
                os.ftruncate(fd, size)
            finally:
                os.close(fd)

        self.both(op)

    @rule(d=st.data())
    def unlink(self, d):
        p = self.pick(d, PATHS + LINK_PATHS)
        self.both(lambda r: os.unlink(f"{r}/{p}"))

    @rule(d=st.data())
    def rmdir(self, d):
        p = self.pick(d, PATHS)
        self.both(lambda r: os.rmdir(f"{r}/{p}"))

    def _rename(self, src: str, dst: str, flags: int) -> None:
        self.both(lambda r: renameat2(f"{r}/{src}", f"{r}/{dst}", flags))

    @rule(d=st.data(), flags=st.sampled_from([0, 0, RENAME_NOREPLACE, RENAME_EXCHANGE]))
    def rename(self, d, flags):
        self._rename(self.pick(d, PATHS), self.pick(d, PATHS, new=d.draw(st.booleans())), flags)

    @rule(d=st.data(), flags=st.sampled_from([0, RENAME_NOREPLACE, RENAME_EXCHANGE]))
    def rename_dir_over_dir(self, d, flags):
        self._rename(self.pick(d, PATHS, dirs_only=True), self.pick(d, PATHS, dirs_only=True), flags)

    @rule(d=st.data(), flags=st.sampled_from([0, RENAME_NOREPLACE]))
    def rename_symlink(self, d, flags):
        self._rename(self.pick(d, LINK_PATHS), self.pick(d, LINK_PATHS, new=d.draw(st.booleans())), flags)

    @rule(d=st.data(), mode=st.sampled_from(MODES))
    def chmod(self, d, mode):
        p = self.pick(d, PATHS)
        self.both(lambda r: os.chmod(f"{r}/{p}", mode))

    @rule(d=st.data(), mtime=st.sampled_from([0, 10**9, 1_700_000_000_123_456_789]))
    def utime(self, d, mtime):
        p = self.pick(d, PATHS)
        self.both(lambda r: os.utime(f"{r}/{p}", ns=(mtime, mtime)))

    @invariant()
    def trees_agree(self):
        assert tree_of(self.st) == tree_of(self.model)


def test_staging_behaves_like_a_directory(mount_artfs, small_store, tmp_path):
    store, _ = small_store
    m = mount_artfs(store)
    MountModel.mount, MountModel.tmp = m, tmp_path
    run_state_machine_as_test(MountModel, settings=settings(
        max_examples=int(os.environ.get("ARTFS_MOUNT_MODEL_EXAMPLES", "100")), stateful_step_count=30,
        deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    ))
    assert any(n.startswith("m") for n in os.listdir(m.path))
