"""The reference model of staging, shared by the test without FUSE (tests/core/test_staging.py) and the test
through a real mount (tests/fs/test_staging_model.py): a plain directory that every random operation also
runs on, so that staging must agree with it on trees, contents and errnos.

Here: the vocabulary both draw their operations from, the tree both start from, how a path is picked so
operations meet entries, and the errno comparison. Each test keeps its own rules, because it applies an
operation differently (StagingArea calls, or system calls on the mount: renameat2 is in syscalls.py).
"""

from __future__ import annotations

import errno
import itertools
import os
import random
from collections.abc import Callable

from hypothesis import strategies as st

from tests.support.syscalls import errno_of
from tests.support.trees import write_tree

MiB = 1 << 20

NAMES = ["a", "b", "c"]
LINK_NAMES = ["l1", "l2"]  # symlinks only ever live under these names, so no path ever walks through one
PATHS = ["/".join(t) for d in (1, 2, 3) for t in itertools.product(NAMES, repeat=d)]
LINK_PATHS = [f"{p}/{ln}" if p else ln for p in ["", *[p for p in PATHS if p.count("/") < 2]] for ln in LINK_NAMES]
TARGETS = ["a", "b/c", "nowhere", "./c"]  # relative, never '..': no rename makes them escape the tree
OFFSETS = [0, 1, 100, 4096, 300_000, 3 * MiB - 7]
SIZES = [0, 1, 50, 5000, MiB]
READ_SIZES = [1, 10, 5000, MiB]
MODES = [0o644, 0o600, 0o755, 0o700]
MTIMES = [0, 10**9, 1_700_000_000_123_456_789]
DATA = st.one_of(st.binary(max_size=100), st.integers(1, 3).map(lambda k: bytes([k]) * 70_000 * k))


def initial_tree(root: str | os.PathLike) -> None:
    """A file of several chunks, small and empty ones, an executable, nested dirs, two symlinks."""
    write_tree(root, {"a": random.Random(1).randbytes(5000), "b/c": random.Random(2).randbytes(3 * MiB),
                      "b/b/a": b"small", "b/a": b""}, dirs=["c", "b/b/c"], links={"b/l1": "c", "l2": "nowhere"})
    os.chmod(os.path.join(root, "b/a"), 0o755)


def pick_path(d: st.DataObject, model: str | os.PathLike, pool: list[str], new: bool = False,
         dirs_only: bool = False) -> str:
    """A path from `pool`, biased so that operations meet entries of the `model` directory: mostly an
    existing one, or with `new` mostly a free name in an existing directory; sometimes anything (for the
    errnos)."""
    live, dirs = set(), {""}
    for dirpath, dirnames, filenames in os.walk(model):
        rel = os.path.relpath(dirpath, model)
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


def assert_same_errno(real: Callable[[], object], staged: Callable[[], object]) -> None:
    """The operation in the plain directory and in staging: the same errno (or none) from both."""
    e_real, e_staged = errno_of(real), errno_of(staged)
    assert e_real == e_staged, \
        f"errno {e_real and errno.errorcode[e_real]} in a directory, {e_staged and errno.errorcode[e_staged]} " \
        "in staging"
