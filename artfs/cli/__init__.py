"""The `artfs` command: one module per command group, each on the core, beside the Python API.

    common.py     what the groups share: --store, --endpoint-url, --json, the cache options, the repo,
                  tables, JSON, progress bars, and the rule that turns a failure into one line
    artifacts.py  put, get, ls, files, info, log, diff, alias: the store, no mount needed
    mount.py      mount, unmount: hand over to artfs.fs, imported only when they run
    staging.py    seal, status, discard: requests to a mount's daemon (artfs/staging_client.py)
    maintenance.py  verify (is the store still sound), completion (shell scripts); room for gc, cache
    runs.py       run (a command as a recorded run), runs, runs show
    lifecycle.py  rm, restore, ttl, retain, retention: soft delete and expiry of versions
    lineage.py    lineage: the graph of runs and versions (text, JSON, DOT, Mermaid, SVG: lineage_render.py)
    cache.py      cache info, prune, clear: this machine's chunk cache, store indexes, downloaded manifests

A new group is one more module with its COMMANDS, added to the list below. Every group is imported at each
start, so a module's top imports only click, cli/common.py and light core modules (names, errors); what a
command needs (the repo, a store, LMDB, the mount) it imports when it runs: `artfs --help` loads none of the
core, and only an S3 store loads botocore (tests/test_cli_imports.py).
"""

from __future__ import annotations

import click

from artfs.cli import artifacts, lifecycle, lineage, maintenance, mount, refs, runs, staging
from artfs.cli import cache as cache_commands  # artfs cache info|prune|clear
from artfs.cli import gc as gc_commands  # artfs gc (garbage collection)
from artfs.cli.common import run


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="artfs")
def cli() -> None:
    """artfs: versioned ML artifacts (datasets, models) as ordinary directories."""


for _group in (artifacts, mount, staging, refs, runs, lineage, maintenance, gc_commands, lifecycle, cache_commands):
    for _command in _group.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    """Entry point: run the CLI, turning expected failures into one line and a non-zero exit."""
    run(cli)

