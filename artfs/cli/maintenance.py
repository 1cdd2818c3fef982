"""Keeping a store sound: `artfs verify` (and, later, gc and cache commands)."""

from __future__ import annotations

import sys

import click

from artfs.cli.common import (
    complete_refs,
    endpoint_option,
    examples,
    json_option,
    open_repo,
    print_json,
    progress,
    store_option,
)
from artfs.core.names import parse_ref
from artfs.errors import ArtfsError


@click.command(epilog=examples(
    'artfs verify animals',
    'artfs verify --all --deep',
    'artfs verify animals:v3 --deep --repair',
))
@click.argument("refs", nargs=-1, metavar="[NAME[:REF]]...", shell_complete=complete_refs)
@click.option("--all", "all_", is_flag=True, help="Every version of every artifact.")
@click.option("--deep", is_flag=True, help="Read every chunk back and check it against its digest.")
@click.option("--repair", is_flag=True, help="Point bad copies at good ones where the store or this machine's "
                                            "cache has the content (relocation records).")
@store_option
@endpoint_option
@json_option
def verify(refs, all_, deep, repair, store_uri, endpoint_url, as_json) -> None:
    """Check that every chunk the versions need is in the store (and right, with --deep).

    NAME checks all its versions, NAME:REF one. Lists broken versions and paths and exits 1 if any."""
    from artfs.core.verify import verify as run_verify

    if bool(refs) == all_:
        raise ArtfsError("name what to verify (NAME or NAME:REF), or --all")
    parsed = [parse_ref(r) for r in refs]
    repo = open_repo(store_uri, endpoint_url)
    try:
        records = []
        for name in repo.artifacts() if all_ else []:
            records += repo.readable_versions(name)[0]
        for p in parsed:
            if p.ref is not None:
                records.append(repo.resolve(p))
            else:
                repo.require_artifact(p.name)
                records += repo.readable_versions(p.name)[0]
        show = deep and not as_json and sys.stderr.isatty()
        with progress(None, "verify", show) as bar:
            report = run_verify(repo, records, deep=deep, repair=repair, progress=bar)
    finally:
        repo.close()
    if as_json:
        print_json(report.as_json())
    else:
        what = f"{report.versions} versions, {report.chunks} chunks" + (
            f", {report.checked_bytes / (1 << 20):.1f} MiB read back" if deep else "")
        click.echo(f"checked {what}: {report.bad_locations} bad or missing copies"
                   + (f", {report.repaired} repaired" if repair else ""))
        if report.references:
            click.echo(f"checked {report.references} referenced objects against their pins: "
                       f"{len(report.drifted)} changed or gone")
        for uri, problem in sorted(report.drifted.items()):
            click.echo(f"DRIFTED {uri}: {problem}")
        for d in report.broken:
            if d.problem:
                click.echo(f"BROKEN {d.ref}: {d.problem}")
                continue
            more = f" (and {d.broken_files - len(d.paths)} more)" if d.broken_files > len(d.paths) else ""
            click.echo(f"BROKEN {d.ref}: {d.broken_files} files: {', '.join(d.paths)}{more}")
    if report.broken:
        sys.exit(1)


@click.command(epilog=examples(
    'eval "$(artfs completion bash)"          # in ~/.bashrc',
    'artfs completion fish > ~/.config/fish/completions/artfs.fish',
))
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script for SHELL: commands, options, and artifact names and versions."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None  # click knows the three shells the Choice allows
    root = ctx.find_root().command
    click.echo(cls(root, {}, "artfs", "_ARTFS_COMPLETE").source())


COMMANDS = [verify, completion]
