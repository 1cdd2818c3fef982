"""Model-based test through a real mount: random operations applied both to MOUNT/NAME/staging and to a
plain directory must agree — trees, contents, errnos, hard links and nlink, owners, the atimes and mtimes
that were set — after every step; then `artfs seal`, and the new version equals the plain directory.

Each example gets its own artifact: `mkdir MOUNT/mN`, the initial tree written into its staging and
sealed as v0, so the example starts on a copy-on-write view of v0 (base files, lazy directories) —
the same start every time, which shrinking needs. $ARTFS_MOUNT_MODEL_EXAMPLES sets the budget.
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

import artfs.api
from tests.support import staging_model as ref
from tests.support.cli import seal
from tests.support.mounts import Mount
from tests.support.staging_model import Times, assert_same_errno, disk_posix, forget_posix, initial_tree, pick_path
from tests.support.syscalls import RENAME_EXCHANGE, RENAME_NOREPLACE, renameat2
from tests.support.trees import snapshot


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
        assert snapshot(self.st) == snapshot(self.model)
        self.times = Times()

    def teardown(self) -> None:
        try:
            res = seal(self.st, "-m", "model")
            art = self.mount.path / self.name
            mine = snapshot(self.model)
            if res["unchanged"]:  # the digest covers content and exec bits, not other mode bits
                assert snapshot(art / "v0") == snapshot(self.st)
                assert {p: (k, c) for p, (k, _, c) in snapshot(art / "v0").items()} == \
                       {p: (k, c) for p, (k, _, c) in mine.items()}
            else:
                assert res["ref"] == f"{self.name}:v1"
                assert snapshot(art / "v1") == mine
                assert snapshot(self.st) == mine  # a fresh view of v1
            forget_posix(self.model)  # a version keeps no links and no owners
            assert disk_posix(self.st) == disk_posix(self.model)
        finally:
            shutil.rmtree(self.model)

    def both(self, op) -> None:
        """`op(root)` in the plain directory and in staging: the same errno (or none) from both."""
        assert_same_errno(lambda: op(str(self.model)), lambda: op(str(self.st)))

    def pick(self, d, pool: list[str], new: bool = False, dirs_only: bool = False) -> str:
        return pick_path(d, self.model, pool, new, dirs_only)

    # --- operations ---

    @rule(d=st.data())
    def create(self, d):
        p = self.pick(d, ref.PATHS, new=True)
        self.both(lambda r: os.close(os.open(f"{r}/{p}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)))
        self.times.created(f"{self.model}/{p}")

    @rule(d=st.data())
    def mkdir(self, d):
        p = self.pick(d, ref.PATHS, new=True)
        self.both(lambda r: os.mkdir(f"{r}/{p}", 0o755))
        self.times.created(f"{self.model}/{p}")

    @rule(d=st.data(), to=st.sampled_from(ref.TARGETS))
    def symlink(self, d, to):
        p = self.pick(d, ref.LINK_PATHS, new=True)
        self.both(lambda r: os.symlink(to, f"{r}/{p}"))
        self.times.created(f"{self.model}/{p}")

    @rule(d=st.data(), symlinks=st.booleans())
    def link(self, d, symlinks):
        pool = ref.LINK_PATHS if symlinks else ref.PATHS
        src, dst = self.pick(d, pool), self.pick(d, pool, new=True)
        self.both(lambda r: os.link(f"{r}/{src}", f"{r}/{dst}", follow_symlinks=False))

    @rule(d=st.data(), owner=st.sampled_from(ref.OWNERS), which=st.sampled_from([(0, 1), (0, -1), (-1, 1)]))
    def chown(self, d, owner, which):
        p = self.pick(d, ref.PATHS + ref.LINK_PATHS)
        uid, gid = (owner[i] if i >= 0 else -1 for i in which)
        self.both(lambda r: os.lchown(f"{r}/{p}", uid, gid))

    @rule(d=st.data(), offset=st.sampled_from(ref.OFFSETS), data=ref.DATA, append=st.booleans())
    def write(self, d, offset, data, append):
        p = self.pick(d, ref.PATHS)

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
        self.times.written(f"{self.model}/{p}")

    @rule(d=st.data(), offset=st.sampled_from(ref.OFFSETS), size=st.sampled_from(ref.READ_SIZES))
    def read(self, d, offset, size):
        p = self.pick(d, ref.PATHS)
        got = {}

        def op(r: str) -> None:
            fd = os.open(f"{r}/{p}", os.O_RDONLY)
            try:
                got[r] = os.pread(fd, size, offset)
            finally:
                os.close(fd)

        self.both(op)
        assert got.get(str(self.model)) == got.get(str(self.st))

    @rule(d=st.data(), size=st.sampled_from(ref.SIZES), by_fd=st.booleans())
    def truncate(self, d, size, by_fd):
        p = self.pick(d, ref.PATHS)

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
        self.times.written(f"{self.model}/{p}")

    @rule(d=st.data())
    def unlink(self, d):
        p = self.pick(d, ref.PATHS + ref.LINK_PATHS)
        self.both(lambda r: os.unlink(f"{r}/{p}"))

    @rule(d=st.data())
    def rmdir(self, d):
        p = self.pick(d, ref.PATHS)
        self.both(lambda r: os.rmdir(f"{r}/{p}"))

    def _rename(self, src: str, dst: str, flags: int) -> None:
        self.both(lambda r: renameat2(f"{r}/{src}", f"{r}/{dst}", flags))

    @rule(d=st.data(), flags=st.sampled_from([0, 0, RENAME_NOREPLACE, RENAME_EXCHANGE]))
    def rename(self, d, flags):
        self._rename(self.pick(d, ref.PATHS), self.pick(d, ref.PATHS, new=d.draw(st.booleans())), flags)

    @rule(d=st.data(), flags=st.sampled_from([0, RENAME_NOREPLACE, RENAME_EXCHANGE]))
    def rename_dir_over_dir(self, d, flags):
        self._rename(self.pick(d, ref.PATHS, dirs_only=True), self.pick(d, ref.PATHS, dirs_only=True), flags)

    @rule(d=st.data(), flags=st.sampled_from([0, RENAME_NOREPLACE]))
    def rename_symlink(self, d, flags):
        self._rename(self.pick(d, ref.LINK_PATHS), self.pick(d, ref.LINK_PATHS, new=d.draw(st.booleans())), flags)

    @rule(d=st.data(), mode=st.sampled_from(ref.MODES))
    def chmod(self, d, mode):
        p = self.pick(d, ref.PATHS)
        self.both(lambda r: os.chmod(f"{r}/{p}", mode))

    @rule(d=st.data(), mtime=st.sampled_from(ref.MTIMES))
    def utime(self, d, mtime):
        p = self.pick(d, ref.PATHS)
        self.both(lambda r: os.utime(f"{r}/{p}", ns=(mtime, mtime)))
        if os.path.exists(f"{self.model}/{p}"):
            self.times.set(f"{self.model}/{p}", mtime, mtime)

    @rule(d=st.data(), atime=st.sampled_from(ref.ATIMES), mtime=st.sampled_from([*ref.MTIMES, None]))
    def utime_apart(self, d, atime, mtime):
        """utimensat with atime and mtime apart, or atime alone (`touch -a`)."""
        p = self.pick(d, ref.PATHS)
        if mtime is None:
            self.both(lambda r: ref.set_atime(f"{r}/{p}", atime))
        else:
            self.both(lambda r: os.utime(f"{r}/{p}", ns=(atime, mtime)))
        if os.path.exists(f"{self.model}/{p}"):
            self.times.set(f"{self.model}/{p}", atime, mtime)

    @invariant()
    def trees_agree(self):
        tree = snapshot(self.st)
        assert tree == snapshot(self.model)
        assert disk_posix(self.st, tree) == disk_posix(self.model, tree)  # links, nlink, owners
        for p, (atime, mtime) in self.times.expected(self.model).items():
            st_ = os.lstat(self.st / p)
            got = (st_.st_atime_ns, st_.st_mtime_ns)
            assert (got[0] if atime is None else atime, got[1] if mtime is None else mtime) == got, p


EXAMPLES = "300" if os.environ.get("ARTFS_STRESS") else "40"  # ARTFS_STRESS=1: a longer search


def test_staging_behaves_like_a_directory(mount_artfs, small_store, tmp_path):
    store, _ = small_store
    m = mount_artfs(store)
    MountModel.mount, MountModel.tmp = m, tmp_path
    run_state_machine_as_test(MountModel, settings=settings(
        max_examples=int(os.environ.get("ARTFS_MOUNT_MODEL_EXAMPLES", EXAMPLES)), stateful_step_count=30,
        deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    ))
    assert any(n.startswith("m") for n in os.listdir(m.path))
