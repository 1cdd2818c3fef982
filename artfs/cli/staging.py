"""`artfs seal`, `artfs status`, `artfs discard`: staging directories of a mount, through its daemon."""

from __future__ import annotations

import click

from artfs.cli.common import examples, json_option, print_json, progress_to, shown
from artfs.core.names import check_alias, check_message, check_name, parse_meta


@click.command(name="seal", epilog=examples(
    'artfs seal ~/art/animals/staging -m "add eagle" --alias best',
    'artfs seal ~/art/resnet/staging --type model --wait 120',
))
@click.argument("path", type=click.Path(path_type=str))
@click.option("-m", "--message", default="", help="What this version is.")
@click.option("--alias", "aliases", multiple=True, help="Point this alias at the new version (repeatable).")
@click.option("--type", "type_", default=None, help="Artifact type, for a new artifact (dataset, model, …).")
@click.option("--meta", "meta", multiple=True, metavar="K=V", help="Metadata key=value (repeatable).")
@click.option("--force", is_flag=True, help="On conflicting paths, take the staging side.")
@click.option("--wait", type=click.FloatRange(0, 86400), default=None, metavar="SECONDS",
              help="Wait this long for files still open for writing to be closed (default 30); then refuse.")
@click.option("--ttl", "ttl_text", default=None, metavar="DURATION",
              help="Delete the version this long after its creation (30d, 12h, 2w; see `artfs ttl`).")
@json_option
def seal_cmd(path, message, aliases, type_, meta, force, wait, ttl_text, as_json) -> None:
    """Publish the staging directory PATH as the next version (prints the new ref)."""
    from artfs import staging_client
    from artfs.core.lifecycle import parse_ttl

    ttl = parse_ttl(ttl_text) if ttl_text is not None else None
    for a in aliases:
        check_alias(a)
    if type_ is not None:
        check_name(type_, "type")
    metadata = parse_meta(meta)
    check_message(message, metadata)
    with progress_to("seal", not as_json) as update:
        result = staging_client.request_seal(path, message, aliases, type_, metadata, force, update, wait, ttl)
    if as_json:
        print_json(result)
    elif result.get("unchanged"):
        click.echo(f"{result.get('artifact', '')}: unchanged, identical to latest; nothing published"
                   + (f"; aliases set on latest: {', '.join(aliases)}" if aliases else ""))
    else:
        click.echo(result["ref"])


@click.command(name="status", epilog=examples('artfs status ~/art/animals/staging'))
@click.argument("path", type=click.Path(path_type=str))
@json_option
def status_cmd(path, as_json) -> None:
    """List what the staging directory PATH changed: added (A), modified (M), deleted (D)."""
    from artfs import staging_client

    result = staging_client.request_status(path)
    if as_json:
        print_json(result)
        return
    marks = {"added": "A", "modified": "M", "deleted": "D"}
    for change in result.get("changes", []):
        click.echo(f"{marks.get(change['change'], '?')} {shown(change['path'])}")
    base = result.get("base") or "nothing (a new artifact)"
    click.echo(f"{len(result.get('changes', []))} changes against {base}", err=True)


@click.command(name="discard", epilog=examples('artfs discard ~/art/animals/staging'))
@click.argument("path", type=click.Path(path_type=str))
def discard_cmd(path) -> None:
    """Drop the changes staged in PATH: it becomes a fresh view of latest again."""
    from artfs import staging_client

    result = staging_client.request_discard(path)
    click.echo(f"discarded; staging is {result.get('base') or 'empty'}")


COMMANDS = [seal_cmd, status_cmd, discard_cmd]
