"""kill -9 of the mount daemon right after bursts of small-file creates (`cp -r`, `tar x`) and name
changes in staging: after a remount every file whose close() returned is there with its bytes, and every
name change that returned is kept. Creates are served on the event loop: in a directory made in staging
(cp/, tar/) they are the local filesystem's own, in the root each one SQLite commit into the WAL (never
batched past its reply, checkpoints left to a thread: a kill finds many commits only in the WAL); the
rename and the hard link across (cp/d1 to the root, tar/first into it) turn those trees into rows first."""

from __future__ import annotations

import os
import random
import signal
import subprocess

from tests.support.cli import run_artfs, seal
from tests.support.processes import wait_pid_gone
from tests.support.trees import snapshot

FILES = 600  # more than layout.CHECKPOINT_EVERY commits: checkpoints run during the burst


def _many_files(root) -> None:
    rng = random.Random(13)
    for i in range(FILES):
        d = root / f"d{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"f{i:04d}.bin"
        p.write_bytes(rng.randbytes(rng.randint(0, 9000)))
        os.chmod(p, 0o600 if i % 7 == 0 else 0o644)
    os.symlink("d0/f0000.bin", root / "first")


def test_kill_9_after_cp_r_tar_x_and_renames_keeps_every_file(mount_artfs, small_store, tmp_path):
    store, _ = small_store
    cache = tmp_path / "cache"
    src, tarball = tmp_path / "many", tmp_path / "many.tar"
    _many_files(src)
    subprocess.run(["tar", "cf", str(tarball), "-C", str(src), "."], check=True)
    m = mount_artfs(store, cache_dir=cache)
    st = m.path / "animals" / "staging"
    subprocess.run(["cp", "-r", str(src), str(st / "cp")], check=True)
    (st / "tar").mkdir()
    subprocess.run(["tar", "xf", str(tarball), "-C", str(st / "tar")], check=True)
    os.rename(st / "cp" / "d1", st / "moved")  # name changes, the last ones before the kill
    os.unlink(st / "tar" / "d2" / "f0005.bin")
    os.symlink("moved", st / "to-moved")
    os.link(st / "tar" / "first", st / "hard-first")
    (st / "last.txt").write_text("the last file closed before the kill\n")
    expected = snapshot(st)
    os.kill(m.pid, signal.SIGKILL)
    wait_pid_gone(m.pid, 20)
    m.closed = True
    m2 = mount_artfs(store, "--force", cache_dir=cache, path=m.path)
    st = m2.path / "animals" / "staging"
    assert snapshot(st) == expected
    assert snapshot(st / "cp") == {k: v for k, v in snapshot(src).items() if not k.startswith("d1")}
    assert os.stat(st / "tar" / "d0" / "f0000.bin").st_mode & 0o777 == 0o600  # tar's chmod kept
    status = run_artfs("status", str(st)).stdout.splitlines()
    assert "A last.txt" in status and "A moved/f0001.bin" in status
    assert seal(st)["ref"] == "animals:v1"
    assert snapshot(m2.path / "animals" / "v1") == expected
