"""`artfs lineage`: the graph of runs and versions around a version or a run, drawn for a terminal, a
program (JSON), graphviz (DOT, SVG) or a Markdown page (Mermaid). The walk is core/lineage.py; the
drawings are lineage_render.py."""

from __future__ import annotations

import json
import os
import sys

import click

from artfs.cli.common import complete_refs, endpoint_option, examples, json_option, open_repo, store_option
from artfs.errors import ArtfsError

FORMATS = ("text", "json", "dot", "mermaid", "svg")  # lineage_render.py draws them (imported when run)


def _depth(text: str | None) -> int | None:
    """--depth N: a whole number of steps, 1 or more; None (no bound) when not given."""
    if text is None:
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise ArtfsError(f"invalid --depth {text!r}: give a whole number of steps, 1 or more")
    return int(text)


@click.command(epilog=examples(
    "artfs lineage resnet:latest --up                   # what the model was made from",
    "artfs lineage animals:v3 --down                    # the runs that read it, and what they made",
    "artfs lineage 20261201-025424.123-3fa9c1b2 --depth 1   # one run: its inputs and outputs",
    "artfs lineage resnet --format svg -o lineage.svg   # a picture (graphviz)",
    "artfs lineage resnet --format mermaid >> README.md",
))
@click.argument("target", metavar="REF|RUN_ID", shell_complete=complete_refs)
@click.option("--up", is_flag=True, help="Only what it came from: the runs that made it, what they read, …")
@click.option("--down", is_flag=True, help="Only what came of it: the runs that read it, what they made, …")
@click.option("--depth", "depth_text", default=None, metavar="N",
              help="At most N steps away (a step: one run, or one derived-from hop). Default: all.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="A tree (the default), JSON (nodes, edges), graphviz DOT, a Mermaid flowchart, SVG.")
@click.option("-o", "--output", default=None, metavar="FILE", type=click.Path(dir_okay=False, path_type=str),
              help="Write it to FILE instead of stdout.")
@store_option
@endpoint_option
@json_option
def lineage(target, up, down, depth_text, fmt, output, store_uri, endpoint_url, as_json) -> None:
    """The runs and versions around version REF (NAME, NAME:vN, NAME:ALIAS) or run RUN_ID.

    Edges follow the data: a version is read by a run, a run makes versions; a version sealed from
    another with no run known is drawn as derived from it. Both directions by default. Deleted and
    missing versions and runs are drawn as such."""
    from artfs.cli import lineage_render as render
    from artfs.core.lineage import lineage as walk

    if as_json and fmt not in (None, "json"):
        raise ArtfsError(f"--json is --format json: give one of --json and --format {fmt}")
    fmt = "json" if as_json else fmt or "text"
    depth = _depth(depth_text)
    both = up == down
    repo = open_repo(store_uri, endpoint_url)
    try:
        graph = walk(repo, target, up=up or both, down=down or both, depth=depth)
    finally:
        repo.close()
    data: bytes
    if fmt == "text":
        data = render.render_text(graph).encode()
    elif fmt == "json":
        data = (json.dumps(graph.as_json(), indent=2, sort_keys=True) + "\n").encode()
    elif fmt == "dot":
        data = render.render_dot(graph).encode()
    elif fmt == "mermaid":
        data = render.render_mermaid(graph).encode()
    else:
        data = render.render_svg(graph)
    if output is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        return
    _write(output, data)


def _write(path: str, data: bytes) -> None:
    """Write FILE whole or not at all (a temp file beside it, renamed over it)."""
    import tempfile

    where = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=where, prefix=".artfs-lineage-")
    except OSError as e:
        raise ArtfsError(f"cannot write {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


COMMANDS = [lineage]
