"""Ordinary tools on a real mount, for both stores: ls, find, du, stat, cat, sha256sum, cp, tar, rsync,
readlink, getfattr, `artfs info`."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from tests.support.cli import run_artfs
from tests.support.trees import entries, snapshot


def sh(*args: str | Path, cwd: Path | None = None) -> str:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, check=True, cwd=cwd).stdout


def tree(root: Path) -> dict[str, os.stat_result]:
    """Every path under root (not following symlinks) → lstat."""
    return {rel: st for rel, _, st in entries(root)}


def assert_same_tree(a: Path, b: Path, mtimes: bool = True) -> None:
    """Kinds, link targets, modes, contents and (with `mtimes`) file mtimes."""
    assert snapshot(a, mtimes=mtimes) == snapshot(b, mtimes=mtimes)


def test_listing_and_attributes(mount_artfs, animals):
    store, src = animals
    m = mount_artfs(store)
    art = m.path / "animals"
    assert os.listdir(m.path) == ["animals"]
    assert sorted(os.listdir(art)) == ["latest", "staging", "v0"]
    assert os.readlink(art / "latest") == "v0"
    assert sh("readlink", art / "latest").strip() == "v0"
    listing = sh("ls", "-l", art)
    assert "latest -> v0" in listing
    version = art / "v0"
    ls = sh("ls", "-l", version)
    assert "-rwxr-xr-x" in next(line for line in ls.splitlines() if line.endswith("run.sh"))
    assert "link-to-big -> data/big.bin" in ls
    # find sees the same names as in the source, and stat the same sizes, modes and mtimes
    assert sorted(sh("find", ".", cwd=version).split("\n")) == sorted(sh("find", ".", cwd=src).split("\n"))
    assert_same_tree(src, version)
    for rel, st in tree(version).items():
        if stat.S_ISREG(st.st_mode):
            assert st.st_nlink == 1
            assert st.st_blocks * 512 >= st.st_size, rel
    # inode numbers are stable, and distinct
    first = {rel: st.st_ino for rel, st in tree(version).items()}
    assert first == {rel: st.st_ino for rel, st in tree(version).items()}
    assert len(set(first.values())) == len(first)
    total = sum(st.st_size for st in tree(src).values() if stat.S_ISREG(st.st_mode))
    assert int(sh("du", "-sb", "--apparent-size", version).split()[0]) >= total
    assert int(sh("du", "-sk", version).split()[0]) * 1024 >= total
    assert os.statvfs(m.path).f_namemax == 255


def test_reading_with_tools(mount_artfs, animals, tmp_path):
    store, src = animals
    m = mount_artfs(store)
    assert sh("cat", m.path / "animals" / "latest" / "README.md") == (src / "README.md").read_text()
    version = m.path / "animals" / "v0"
    # sha256sum of every file equals the source's
    listing = "find . -type f -print0 | sort -z | xargs -0 sha256sum"
    assert sh("sh", "-c", listing, cwd=version) == sh("sh", "-c", listing, cwd=src)
    # cp -r, tar, rsync -a
    sh("cp", "-r", version, tmp_path / "copy")
    assert_same_tree(src, tmp_path / "copy", mtimes=False)
    (tmp_path / "untarred").mkdir()
    sh("sh", "-c", f"tar cf - -C '{version}' . | tar xf - -C '{tmp_path / 'untarred'}'")
    assert_same_tree(src, tmp_path / "untarred")
    sh("rsync", "-a", f"{version}/", f"{tmp_path / 'synced'}/")
    assert_same_tree(src, tmp_path / "synced")


def test_small_files_in_order_cost_few_requests(mount_artfs, animals):
    """Dataset loaders open files in name order: one ranged GET brings many neighbours."""
    store, src = animals
    m = mount_artfs(store)
    images = m.path / "animals" / "v0" / "images"
    names = sorted(os.listdir(images))
    before = m.stats()["store_requests"]
    for name in names:
        assert (images / name).read_bytes() == (src / "images" / name).read_bytes()
    assert m.stats()["store_requests"] - before <= 3, m.stats()


def test_xattrs_and_info(mount_artfs, animals):
    store, _ = animals
    m = mount_artfs(store)
    version = m.path / "animals" / "v0"
    dump = sh("getfattr", "-d", version)
    assert 'user.artfs.ref="animals:v0"' in dump
    assert 'user.artfs.message="first cut"' in dump
    assert 'user.artfs.type="dataset"' in dump
    assert "user.artfs.digest=" in dump and "user.artfs.created=" in dump
    assert set(os.listxattr(version / "README.md")) >= {"user.artfs.ref", "user.artfs.digest", "user.artfs.store"}
    assert os.getxattr(version / "data" / "big.bin", "user.artfs.ref") == b"animals:v0"
    info = run_artfs("info", str(m.path / "animals" / "latest" / "README.md"), env={"ARTFS_STORE": ""})
    assert info.stdout.splitlines()[0] == "animals:v0"
    assert "first cut" in info.stdout
