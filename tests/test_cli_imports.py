"""What a command loads at its start (issue 13): only what it uses. boto3 (~100 ms of imports with s3transfer)
is for a multipart upload only, botocore for S3 stores only, pyfuse3 and trio for the mount only; `--help`
loads nothing of the core. Each command runs in a fresh interpreter that reports its modules at exit."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.trees import write_tree

WATCHED = ("boto3", "botocore", "s3transfer", "pyfuse3", "trio", "lmdb", "msgspec", "tqdm")
MOUNT_ONLY = {"pyfuse3", "trio"}
S3_ONLY = {"boto3", "botocore", "s3transfer"}

_PROBE = f"""
import sys
sys.argv[0] = "artfs"
from artfs.cli import main
try:
    main()
finally:
    print("MODULES:" + ",".join(m for m in {WATCHED!r} if m in sys.modules), file=sys.stderr)
"""


def loaded(*args: str) -> set[str]:
    """The watched modules that `artfs ARGS` had imported by its end (it must succeed)."""
    res = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=120,
                         env=os.environ.copy())
    assert res.returncode == 0, res.stderr
    line = [ln for ln in res.stderr.splitlines() if ln.startswith("MODULES:")][-1]
    return set(filter(None, line[len("MODULES:"):].split(",")))


@pytest.mark.parametrize("args", [["--help"], ["get", "--help"], ["mount", "--help"], ["cache", "--help"]])
def test_help_loads_neither_the_core_nor_a_store_nor_the_mount(args: list[str]) -> None:
    assert loaded(*args) == set()


def test_ls_and_get_on_a_directory_store_load_no_s3_and_no_mount(tmp_path, local_store_uri: str) -> None:
    src = tmp_path / "src"
    write_tree(src, {"a.txt": b"hello\n", "d/b.bin": os.urandom(100_000)})
    assert not loaded("put", str(src), "animals", "--store", local_store_uri) & (S3_ONLY | MOUNT_ONLY)
    for args in (["ls"], ["ls", "animals"], ["get", "animals", str(tmp_path / "out")]):
        assert not loaded(*args, "--store", local_store_uri) & (S3_ONLY | MOUNT_ONLY), args
    assert (tmp_path / "out" / "d" / "b.bin").read_bytes() == (src / "d" / "b.bin").read_bytes()


def test_get_from_s3_loads_botocore_but_not_boto3(tmp_path, s3_store_uri: str) -> None:
    """Reads need botocore only; boto3 and s3transfer (multipart upload) stay out of `ls` and `get`."""
    src = tmp_path / "src"
    write_tree(src, {"a.txt": b"hello\n", "d/b.bin": os.urandom(100_000)})
    loaded("put", str(src), "animals", "--store", s3_store_uri)
    for args in (["ls"], ["get", "animals", str(tmp_path / "out")]):
        mods = loaded(*args, "--store", s3_store_uri)
        assert "botocore" in mods and not mods & {"boto3", "s3transfer", *MOUNT_ONLY}, (args, mods)
    assert (tmp_path / "out" / "d" / "b.bin").read_bytes() == (src / "d" / "b.bin").read_bytes()
