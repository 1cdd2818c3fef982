"""The `artfs` command of this checkout, run as a user runs it: in a subprocess, output captured."""

from __future__ import annotations

import json
import os
import subprocess
import sys

_ARTFS_MAIN = "import sys; sys.argv[0] = 'artfs'; from artfs.cli import main; main()"


def artfs_cmd(*args: str) -> list[str]:
    """argv that runs the `artfs` CLI of this checkout with this interpreter."""
    return [sys.executable, "-c", _ARTFS_MAIN, *args]


def run_artfs(*args: str, env: dict[str, str] | None = None, check: bool = True,
              timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`artfs ARGS` with os.environ plus `env`; with `check`, a non-zero exit fails with its stderr."""
    full_env = {**os.environ, **(env or {})}
    res = subprocess.run(artfs_cmd(*args), capture_output=True, text=True, env=full_env, timeout=timeout,
                         check=False)
    if check and res.returncode != 0:
        raise AssertionError(f"artfs {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def seal(staging: str | os.PathLike, *args: str, check: bool = True, env: dict[str, str] | None = None) -> dict:
    """`artfs seal STAGING --json ARGS`: the commit result (or, with check=False, the process)."""
    res = run_artfs("seal", str(staging), "--json", *args, check=check, env=env)
    return json.loads(res.stdout) if check else {"returncode": res.returncode, "stderr": res.stderr}
