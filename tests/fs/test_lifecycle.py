"""Mounting and unmounting: bad mount points, stale mounts, signals, the foreground, readahead."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.cli import artfs_cmd, run_artfs
from tests.support.processes import is_mounted, wait_pid_gone
from tests.support.repos import commit
from tests.support.trees import write_dataset


@pytest.fixture
def local_animals(local_store_uri: str, tmp_path: Path) -> str:
    src = tmp_path / "small-src"
    src.mkdir()
    (src / "hello.txt").write_text("hello\n")
    commit(local_store_uri, src, "animals", tmp_path / "writer-cache")
    return local_store_uri


def _wait_dead(pid: int, timeout: float = 20) -> None:
    assert wait_pid_gone(pid, timeout), f"pid {pid} still alive"


def _mount_fails(tmp_path: Path, mountpoint: Path, store: str, *args: str, env: dict | None = None) -> str:
    res = run_artfs("mount", str(mountpoint), "--store", store, "--daemon", "--log", str(tmp_path / "fail.log"),
                    "--cache-dir", str(tmp_path / "fail-cache"), *args, env=env, check=False)
    assert res.returncode == 1, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("artfs: "), res.stderr
    return lines[0]


def test_bad_mount_points(tmp_path, local_animals):
    assert "does not exist" in _mount_fails(tmp_path, tmp_path / "missing", local_animals)
    (tmp_path / "file").write_text("x")
    assert "not a directory" in _mount_fails(tmp_path, tmp_path / "file", local_animals)
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    assert "not empty" in _mount_fails(tmp_path, full, local_animals)
    assert "is not mounted" in run_artfs("unmount", str(full), check=False).stderr
    bad_store = "s3://nowhere/x"
    empty = tmp_path / "empty"
    empty.mkdir()
    msg = _mount_fails(tmp_path, empty, bad_store, "--endpoint-url", "http://127.0.0.1:9",
                       env={"ARTFS_STORE_DEADLINE": "1", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"})
    assert "cannot read the store" in msg
    assert not is_mounted(str(empty))


def test_already_mounted_and_busy(mount_artfs, local_animals):
    m = mount_artfs(local_animals)
    res = run_artfs("mount", str(m.path), "--store", local_animals, "--daemon", check=False)
    assert "already an artfs mount" in res.stderr
    with open(m.path / "animals" / "v0" / "hello.txt", "rb"):
        res = run_artfs("unmount", str(m.path), check=False)
        assert res.returncode == 1 and "busy" in res.stderr
    run_artfs("unmount", str(m.path))
    assert not is_mounted(str(m.path))
    _wait_dead(m.pid)  # `artfs unmount` waits for the daemon


def test_stale_mount_is_named_and_forced(mount_artfs, local_animals, tmp_path):
    m = mount_artfs(local_animals)
    os.kill(m.pid, signal.SIGKILL)
    _wait_dead(m.pid)
    with pytest.raises(OSError) as info:
        os.statvfs(m.path)  # (a stat may still be answered from the kernel's attribute cache)
    assert info.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)  # the latter if in flight at the death
    msg = _mount_fails(tmp_path, m.path, local_animals)
    assert "stale mount" in msg and "--force" in msg
    for args in (("status", str(m.path / "animals" / "staging")), ("info", str(m.path / "animals" / "v0" / "x"))):
        res = run_artfs(*args, check=False)  # commands on paths inside it say the same, not "does not exist"
        assert res.returncode == 1 and res.stderr.strip().count("\n") == 0, res.stderr
        assert f"{m.path} is a stale mount" in res.stderr, res.stderr
    again = mount_artfs(local_animals, "--force", path=m.path)
    assert (again.path / "animals" / "v0" / "hello.txt").read_text() == "hello\n"


def test_unmount_cleans_a_stale_mount(mount_artfs, local_animals):
    m = mount_artfs(local_animals)
    os.kill(m.pid, signal.SIGKILL)
    _wait_dead(m.pid)
    run_artfs("unmount", str(m.path))
    assert not is_mounted(str(m.path))
    assert os.listdir(m.path) == []


def test_sigterm_unmounts_cleanly(mount_artfs, local_animals):
    m = mount_artfs(local_animals)
    assert (m.path / "animals" / "latest" / "hello.txt").read_text() == "hello\n"
    os.kill(m.pid, signal.SIGTERM)
    _wait_dead(m.pid)
    assert not is_mounted(str(m.path))
    assert "SIGTERM: unmounting" in m.log_text() and "unmounted" in m.log_text()


def test_foreground_until_ctrl_c(local_animals, tmp_path):
    mnt = tmp_path / "fg"
    mnt.mkdir()
    proc = subprocess.Popen(artfs_cmd("mount", str(mnt), "--store", local_animals, "--log", str(tmp_path / "fg.log"),
                                      "--cache-dir", str(tmp_path / "fg-cache")),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (mnt / "animals").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert (mnt / "animals" / "v0" / "hello.txt").read_text() == "hello\n"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "mounted" in err and "SIGINT: unmounting" in err  # the foreground logs to stderr too
        assert not is_mounted(str(mnt))
        assert " ERROR " not in (tmp_path / "fg.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if is_mounted(str(mnt)):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="raising readahead needs root")
def test_readahead_is_raised(mount_artfs, local_animals):
    m = mount_artfs(local_animals)
    dev = os.stat(m.path).st_dev
    knob = Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb")
    assert int(knob.read_text()) >= 1024
    assert "raised the kernel readahead" in m.log_text()


def test_big_tree_mounts_and_lists(mount_artfs, local_store_uri, tmp_path):
    """Two artifacts, several versions: the artifact level lists what the store holds."""
    src = write_dataset(tmp_path / "ds")
    commit(local_store_uri, src, "animals", tmp_path / "w")
    (src / "README.md").write_text("v1\n")
    commit(local_store_uri, src, "animals", tmp_path / "w", aliases=("best",))
    plants = tmp_path / "plants"
    (plants / "a" / "b" / "c").mkdir(parents=True)
    (plants / "a" / "b" / "c" / "deep.txt").write_text("deep\n")
    commit(local_store_uri, plants, "plants", tmp_path / "w")
    m = mount_artfs(local_store_uri)
    assert sorted(os.listdir(m.path)) == ["animals", "plants"]
    assert sorted(os.listdir(m.path / "animals")) == ["best", "latest", "staging", "v0", "v1"]
    assert os.readlink(m.path / "animals" / "best") == "v1"
    assert os.stat(m.path / "animals").st_nlink == 5  # 2 + two version directories + staging
    assert (m.path / "plants" / "latest" / "a" / "b" / "c" / "deep.txt").read_text() == "deep\n"


def _mount_options(path: Path) -> set[str]:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == str(path):
                return set(fields[5].split(",")) | set(line.rpartition(" - ")[2].split()[2].split(","))
    raise AssertionError(f"{path} is not mounted")


def test_mount_options(mount_artfs, local_animals):
    plain = mount_artfs(local_animals)
    options = _mount_options(plain.path)
    assert "default_permissions" in options and "allow_other" not in options
    shared = mount_artfs(local_animals, "-o", "allow_other")
    assert "allow_other" in _mount_options(shared.path)
    res = run_artfs("mount", str(plain.path) + "-x", "--store", local_animals, "-o", "max_read=1", check=False)
    assert res.returncode == 1 and "unsupported mount option" in res.stderr
