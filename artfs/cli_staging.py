"""`artfs seal`, `artfs status`, `artfs discard`: staging directories of a mount, through its daemon."""

from __future__ import annotations

import json

import click

from artfs import control
from artfs.core.names import check_alias, check_name, parse_meta


def _progress_bar(as_json: bool):
    import sys

    if as_json or not sys.stderr.isatty():
        return None, None
    from tqdm import tqdm

    bar = tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc="seal", leave=False)

    def update(done: int, total: int) -> None:
        if total and bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    return bar, update


@click.command()
@click.argument("path", type=click.Path(path_type=str))
@click.option("-m", "--message", default="", help="What this version is.")
@click.option("--alias", "aliases", multiple=True, help="Point this alias at the new version (repeatable).")
@click.option("--type", "type_", default=None, help="Artifact type, for a new artifact (dataset, model, …).")
@click.option("--meta", "meta", multiple=True, metavar="K=V", help="Metadata key=value (repeatable).")
@click.option("--force", is_flag=True, help="On conflicting paths, take the staging side.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def seal(path, message, aliases, type_, meta, force, as_json) -> None:
    """Publish the staging directory PATH as the next version (prints the new ref)."""
    for a in aliases:
        check_alias(a)
    if type_ is not None:
        check_name(type_, "type")
    metadata = parse_meta(meta)
    bar, update = _progress_bar(as_json)
    try:
        result = control.seal(path, message, aliases, type_, metadata, force, update)
    finally:
        if bar is not None:
            bar.close()
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
    elif result.get("unchanged"):
        click.echo(f"{result.get('artifact', '')}: unchanged, identical to latest; nothing published")
    else:
        click.echo(result["ref"])


@click.command()
@click.argument("path", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(path, as_json) -> None:
    """List what the staging directory PATH changed: added (A), modified (M), deleted (D)."""
    result = control.status(path)
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    marks = {"added": "A", "modified": "M", "deleted": "D"}
    for change in result.get("changes", []):
        click.echo(f"{marks.get(change['change'], '?')} {change['path']}")
    base = result.get("base") or "nothing (a new artifact)"
    click.echo(f"{len(result.get('changes', []))} changes against {base}", err=True)


@click.command()
@click.argument("path", type=click.Path(path_type=str))
def discard(path) -> None:
    """Drop the changes staged in PATH: it becomes a fresh view of latest again."""
    result = control.discard(path)
    click.echo(f"discarded; staging is {result.get('base') or 'empty'}")


def commands() -> list[click.Command]:
    return [seal, status, discard]
