"""`artfs ref add`: stage an external object (or a prefix of them) as a reference in a mount's staging tree,
through the mount's daemon (artfs/staging_client.py), like `artfs seal`. `artfs put --ref` is the same
thing without a mount (cli/artifacts.py)."""

from __future__ import annotations

import click

from artfs.cli.common import examples, json_option, print_json, shown


@click.group(name="ref", epilog=examples("artfs ref add ~/art/animals/staging/raw s3://other-team/raw/"))
def ref_group() -> None:
    """References: files whose bytes stay at an external URI (s3://, https://, http://, file://), pinned."""


@ref_group.command(name="add", epilog=examples(
    "artfs ref add ~/art/animals/staging/raw/cat.jpg s3://other-team/raw/cat.jpg",
    "artfs ref add ~/art/animals/staging/raw s3://other-team/raw/ --max-objects 50000",
    "artfs ref add ~/art/animals/staging/big.bin https://mirror.example.org/big.bin --no-checksum",
))
@click.argument("staging_path", type=click.Path(path_type=str))
@click.argument("uri")
@click.option("--no-checksum", is_flag=True,
              help="Do not read the object now: pin it by metadata only (ETag, Last-Modified, size + mtime).")
@click.option("--max-objects", type=click.IntRange(min=1), default=None, metavar="N",
              help="A prefix may expand to at most N objects (default 10,000); more is an error with the count.")
@json_option
def add_cmd(staging_path, uri, no_checksum, max_objects, as_json) -> None:
    """Stage the object at URI as the file STAGING_PATH in a mount's staging directory (a prefix URI: one
    file per object under STAGING_PATH as a directory). It shows at once as a regular file of the object's
    size, reads return the pinned bytes, a write turns it into ordinary staged content, and `artfs seal`
    writes it as a reference. With checksumming (the default) the object is read once now."""
    from artfs import staging_client

    result = staging_client.request_ref_add(staging_path, uri, not no_checksum, max_objects)
    if as_json:
        print_json(result)
        return
    files = result.get("files", [])
    for f in files[:20]:
        click.echo(f"R {shown(f['path'])}  ({f['size']:,} bytes)")
    if len(files) > 20:
        click.echo(f"… and {len(files) - 20} more")
    click.echo(f"{len(files)} reference(s) to {uri} staged in {result.get('artifact')} "
               f"({result.get('bytes', 0):,} bytes, not copied)", err=True)


COMMANDS = [ref_group]
