"""Directory trees for tests: writing them, and one snapshot of what a tree holds, to compare two of them.

`snapshot` is the one walker: a source tree, a mount, a staging directory or an exported version all
compare through it, with only the details a comparison needs switched on.
"""

from __future__ import annotations

import hashlib
import os
import random
import stat
from collections.abc import Iterator
from pathlib import Path

MiB = 1 << 20
BIG = 10 * MiB  # the big file of `write_dataset`: ~10 content-defined chunks, reads cross chunk boundaries
SMALL_FILES = 120


def snapshot(root: str | os.PathLike, *, mtimes: bool = False, digests: bool = False) -> dict[str, tuple]:
    """path → (kind, permission bits, content) of everything below `root`, symlinks not followed.

    Content is a file's bytes (its sha256 with `digests`), a symlink's target (its bits are always 0o777),
    None for a directory. With `mtimes`, a file's tuple also ends with its st_mtime_ns.
    """
    out: dict[str, tuple] = {}
    for rel, full, st in entries(root):
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("symlink", 0o777, os.readlink(full))
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("dir", stat.S_IMODE(st.st_mode), None)
        elif stat.S_ISREG(st.st_mode):
            with open(full, "rb") as f:
                content = hashlib.file_digest(f, "sha256").hexdigest() if digests else f.read()
            out[rel] = ("file", stat.S_IMODE(st.st_mode), content, *((st.st_mtime_ns,) if mtimes else ()))
        else:
            out[rel] = ("special", stat.S_IMODE(st.st_mode), None)
    return out


def entries(root: str | os.PathLike) -> Iterator[tuple[str, str, os.stat_result]]:
    """(relative path, full path, lstat) of everything below `root`, symlinks not followed."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            yield os.path.relpath(full, root), full, os.lstat(full)


def file_digests(root: str | os.PathLike) -> dict[str, str]:
    """path → sha256 of every regular file, `-> target` of every symlink: the bytes a copy must keep,
    whatever its modes and directories."""
    return {rel: v if kind == "file" else f"-> {v}"
            for rel, (kind, _, v, *_) in snapshot(root, digests=True).items() if kind in ("file", "symlink")}


def write_tree(root: str | os.PathLike, files: dict[str, bytes], dirs=(), links=None) -> None:
    """Files (path → bytes), empty directories and symlinks (path → target) below `root`."""
    for d in dirs:
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for rel, data in files.items():
        full = os.path.join(root, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
    for rel, target in (links or {}).items():
        os.symlink(target, os.path.join(root, rel))


def write_dataset(root: Path, seed: int = 1234) -> Path:
    """A tree of big, empty, compressible, tiny, nested, oddly named, executable files and symlinks."""
    import numpy as np

    rng = random.Random(seed)
    files: dict[str, bytes] = {
        "README.md": b"# animals\nA dataset for the mount tests.\n",
        "data/big.bin": rng.randbytes(BIG),
        "data/zeros.bin": bytes(MiB),
        "data/empty.txt": b"",
        "nested/a/b/c/deep.txt": b"deep\n",
        "with space.txt": b"spaces\n",
        "ünïcode-名前.txt": "ünïcode\n".encode(),
        "run.sh": b"#!/bin/sh\necho hi\n",
    }
    for i in range(SMALL_FILES):
        files[f"images/img_{i:03d}.bin"] = rng.randbytes(rng.randint(1, 24 * 1024))
    write_tree(root, files, links={"link-to-big": "data/big.bin", "nested/a/up": "../../README.md"})
    np.save(root / "data/array.npy", np.arange(100_000, dtype=np.float64).reshape(1000, 100))
    os.chmod(root / "run.sh", 0o755)
    for dirpath, _, names in os.walk(root, topdown=False):  # fixed mtimes, children before parents
        for name in names:
            os.utime(os.path.join(dirpath, name), ns=(1_600_000_000 * 10**9,) * 2, follow_symlinks=False)
        os.utime(dirpath, ns=(1_600_000_000 * 10**9,) * 2)
    return root
