"""Ordinary tools write into staging/ (cp -r, rsync -a, tar x, git clone, numpy.save, SQLite); after a
seal the version reads back byte-exact, through the mount and exported with `artfs get`."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import numpy as np

from tests.support.cli import run_artfs, seal
from tests.support.trees import file_digests, write_dataset


def _run(*cmd: str, cwd: Path | None = None) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, check=False, timeout=300)
    assert res.returncode == 0, f"{' '.join(cmd)}: {res.stderr.strip()}"


def _git_repo(root: Path) -> Path:
    root.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for i in range(3):
        (root / f"file{i}.txt").write_text(f"revision {i}\n" * 100)
        (root / "src").mkdir(exist_ok=True)
        (root / "src" / "main.py").write_text(f"print({i})\n")
        for cmd in (["git", "init", "-q", "-b", "main"] if i == 0 else [], ["git", "add", "-A"],
                    ["git", "commit", "-q", "-m", f"commit {i}"]):
            if cmd:
                subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    return root


def test_ordinary_tools_write_into_staging(mount_artfs, small_store, tmp_path):
    store, _ = small_store
    m = mount_artfs(store)
    st = m.path / "animals" / "staging"
    src = write_dataset(tmp_path / "ds")
    _run("cp", "-r", str(src), str(st / "cp"))
    _run("rsync", "-a", f"{src}/", str(st / "rsync"))
    archive = tmp_path / "ds.tar"
    _run("tar", "cf", str(archive), "-C", str(src), ".")
    (st / "tar").mkdir()
    _run("tar", "xf", str(archive), "-C", str(st / "tar"))
    repo = _git_repo(tmp_path / "repo")
    _run("git", "clone", "-q", f"file://{repo}", str(st / "git"))
    _run("git", "-C", str(st / "git"), "fsck", "--no-progress")
    arr = np.random.default_rng(3).standard_normal((300, 200))
    np.save(st / "arr.npy", arr)
    mm = np.lib.format.open_memmap(st / "mm.npy", mode="w+", dtype=np.float32, shape=(500, 500))  # shared mmap
    mm[:] = 1.5
    mm[7, 7] = 0
    mm.flush()
    del mm
    db = sqlite3.connect(st / "data.sqlite")
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    for i in range(20):
        with db:
            db.executemany("INSERT INTO t(v) VALUES (?)", [(f"row {i}-{j}" * 10,) for j in range(100)])
    with db:
        db.execute("DELETE FROM t WHERE k % 3 = 0")
        db.execute("CREATE INDEX tv ON t(v)")
    db.execute("VACUUM")
    db.close()

    for copy in ("cp", "rsync", "tar"):
        assert file_digests(st / copy) == file_digests(src), copy
    for rel in ("README.md", "data/big.bin", "run.sh"):  # rsync -a and tar keep mtimes and modes
        for copy in ("rsync", "tar"):
            assert os.lstat(st / copy / rel).st_mtime_ns == os.lstat(src / rel).st_mtime_ns, (copy, rel)
            assert os.lstat(st / copy / rel).st_mode == os.lstat(src / rel).st_mode, (copy, rel)
    staged = file_digests(st)
    res = seal(st, "-m", "tools")
    assert res["ref"] == "animals:v1"
    v1 = m.path / "animals" / "v1"
    assert file_digests(v1) == staged
    assert os.lstat(v1 / "rsync" / "data" / "big.bin").st_mtime_ns == os.lstat(src / "data" / "big.bin").st_mtime_ns
    assert np.array_equal(np.load(v1 / "arr.npy"), arr)
    assert np.load(v1 / "mm.npy").sum() == 1.5 * (500 * 500 - 1)
    ro = sqlite3.connect(f"file:{v1 / 'data.sqlite'}?mode=ro&immutable=1", uri=True)
    assert ro.execute("SELECT count(*) FROM t").fetchone()[0] == 2000 - 666
    assert ro.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    ro.close()
    log = subprocess.run(["git", "--git-dir", str(v1 / "git" / ".git"), "log", "--format=%s"], capture_output=True,
                         text=True, check=True).stdout.split()
    assert log[:2] == ["commit", "2"]
    out = tmp_path / "export"
    run_artfs("get", "animals:v1", str(out), "--store", store)
    assert file_digests(out) == staged
