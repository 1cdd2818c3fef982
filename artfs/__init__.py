"""artfs: versioned ML artifacts (datasets, models) as ordinary directories.

    import artfs
    with artfs.init(job_type="train") as run:
        data = run.use_artifact("animals:latest")
        ...

`import artfs` stays light (no boto3, pyfuse3 or trio): the tracking API (artfs/tracking.py) loads on first
use of one of its names, and `artfs.api` on first use of it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "init": "artfs.tracking",
    "Run": "artfs.tracking",
    "Artifact": "artfs.artifact_files",
    "ArtifactVersion": "artfs.tracking",
    "ArtifactFile": "artfs.tracking",
    "runs": "artfs.tracking",
    "run": "artfs.tracking",
}
_SUBMODULES = ("api",)

__all__ = ["Artifact", "ArtifactFile", "ArtifactVersion", "Run", "__version__", "api", "init", "run", "runs"]

if TYPE_CHECKING:
    from artfs import api
    from artfs.artifact_files import Artifact
    from artfs.tracking import ArtifactFile, ArtifactVersion, Run, init, run, runs


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"artfs.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'artfs' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBMODULES})
