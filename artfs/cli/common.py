"""What every command group shares: the common options, the repo, tables, JSON, progress bars, and the
rule that turns an expected failure into one line.

Every expected failure is an ArtfsError and becomes one line on stderr and exit status 1; click's own
usage errors exit 2. A traceback means a bug.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import click

from artfs.errors import ArtfsError

if TYPE_CHECKING:  # imported where used: `artfs --help` loads neither (nor anything of the core)
    from tqdm import tqdm

    from artfs.settings import Settings

store_option = click.option(
    "--store", "store_uri", default=None, metavar="URI",
    help="s3://bucket/prefix, file:///path or a path (default: $ARTFS_STORE, else ~/.local/share/artfs/store).",
)
endpoint_option = click.option(
    "--endpoint-url", default=None, metavar="URL",
    help="S3-compatible endpoint (default: $AWS_ENDPOINT_URL).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
cache_dir_option = click.option(
    "--cache-dir", default=None, metavar="DIR",
    help="Chunk cache and index (default: $ARTFS_CACHE, else ~/.cache/artfs).",
)
cache_size_option = click.option(
    "--cache-size", default=None, metavar="SIZE",
    help="Bound of the chunk cache, e.g. 20G (default: $ARTFS_CACHE_SIZE, else the bound last given, else 20G).",
)


def settings() -> Settings:
    """The environment's settings, read and checked once per command (artfs/settings.py)."""
    from artfs.settings import Settings

    return Settings.from_env()


def open_repo(store_uri: str | None, endpoint_url: str | None, create: bool = False):
    """The Repo of `--store`/`--endpoint-url` (defaults: the settings'); the caller closes it. A store that
    is not there is an error unless `create`; a store slow to answer is said to be, once, on stderr."""
    return settings().open_repo(store_uri, endpoint_url, create=create, on_retry=_still_trying())


def _still_trying(after: float = 2.0) -> Callable[[str, float], None]:
    said = False

    def note(why: str, elapsed: float) -> None:
        nonlocal said
        if not said and elapsed >= after:
            said = True
            click.echo(f"artfs: {why}; still trying…", err=True)

    return note


_PLAIN = re.compile(r"[^\x00-\x1f\x7f-\x9f]*")
_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "'": "\\'", "\\": "\\\\"}


def shown(text: str) -> str:
    """A name or message as one safe line of text output: control characters (a newline in a file name)
    and bytes that are not UTF-8 are quoted as `ls` and bash do, $'a\\nb'; plain text is left as it is.
    --json output needs none of this."""
    if _PLAIN.fullmatch(text) and text.isprintable():
        return text
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif 0xDC80 <= ord(ch) <= 0xDCFF:  # a byte that was not UTF-8 (surrogate-escaped)
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif not ch.isprintable():
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "$'" + "".join(out) + "'"


def examples(*lines: str) -> str:
    """A command's `--help` epilog: the lines kept as written (click's \\b stops it rewrapping them)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def complete_refs(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of NAME / NAME:REF from the store the command line names (or the default one):
    artifact names, then after `NAME:` its versions and aliases. Silent on any failure (a completion must
    never print an error into the user's prompt)."""
    try:
        store = ctx.params.get("store_uri")
        repo = settings().open_repo(store, ctx.params.get("endpoint_url"))
        try:
            name, sep, _ = incomplete.partition(":")
            if not sep:  # artifacts with a live version: deleted ones are not offered
                return [n for n, v in sorted(repo.views().items()) if v.live and n.startswith(incomplete)]
            view = repo.view(name)
            refs = [f"v{n}" for n in view.live] + ["latest", *sorted(view.aliases)]
            return [f"{name}:{r}" for r in refs if f"{name}:{r}".startswith(incomplete)]
        finally:
            repo.close()
    except Exception:  # noqa: BLE001 - see the docstring
        return []


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def print_json(obj: object) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True))


@contextlib.contextmanager
def _bar(desc: str, total: int | None, enabled: bool) -> Iterator[tqdm | None]:
    """A byte-counting tqdm bar on stderr when it is a terminal; None otherwise (tqdm loads only then)."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False) as bar:
        yield bar


@contextlib.contextmanager
def progress(total: int | None, desc: str, enabled: bool) -> Iterator[Callable[[int], None] | None]:
    """A progress callback told each step's bytes (as commit and export report), or None without a bar."""
    with _bar(desc, total, enabled) as bar:
        yield None if bar is None else bar.update


@contextlib.contextmanager
def progress_to(desc: str, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress callback told (done, total) so far (as a daemon's seal reports), or None without a bar."""
    with _bar(desc, None, enabled) as bar:
        if bar is None:
            yield None
            return

        def update(done: int, total: int) -> None:
            if total and bar.total != total:
                bar.total = total
            bar.n = done
            bar.refresh()

        yield update


def run(group: click.Group) -> None:
    """Run the CLI, turning expected failures into one line and a non-zero exit."""
    try:
        try:
            group.main(standalone_mode=False, prog_name="artfs")
            sys.stdout.flush()  # here, not at exit: a closed pipe is handled below
        except SystemExit as e:
            # click answers a closed stdout (`artfs log NAME | head -1`) by muting the streams and exiting 1;
            # the reader has what it wanted, which is not an error
            if e.code == 1 and "PacifyFlush" in type(sys.stdout).__name__:
                sys.exit(0)
            raise
    except click.exceptions.Abort:
        click.echo("artfs: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except ArtfsError as e:
        click.echo(f"artfs: {e}", err=True)
        if "--json" in sys.argv[1:]:  # a script parsing stdout gets the failure as JSON too
            error: dict[str, object] = {"error": str(e), "kind": type(e).__name__}
            paths = getattr(e, "paths", None)
            if paths is not None:
                error["conflicts"] = list(paths)
            click.echo(json.dumps(error))
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("artfs: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:  # `artfs log NAME | head -1`: the reader has what it wanted; not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not complain
        sys.exit(0)
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        click.echo(f"artfs: {e.strerror or e}{where}", err=True)
        sys.exit(1)
