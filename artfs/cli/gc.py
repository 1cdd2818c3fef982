"""`artfs gc`: reclaim the space of packs no kept version needs (core/gc.py holds the safety argument)."""

from __future__ import annotations

import sys

import click

from artfs.cli.common import endpoint_option, examples, human, json_option, open_repo, print_json, store_option, table
from artfs.errors import ArtfsError

_ACTIONS = {"delete": "freed now", "condemn": "condemned now", "wait": "condemned earlier", "young": "too recent"}


def _duration(text: str | None, what: str) -> float | None:
    from artfs.core.lifecycle import parse_ttl

    if text is None:
        return None
    seconds = parse_ttl(text)
    if seconds is None:
        raise ArtfsError(f"{what} must be a duration like 6h, 90m, 30s")
    return seconds


@click.command(epilog=examples(
    'artfs gc --dry-run                 # what would go, per artifact version',
    'artfs gc                           # one cycle: delete what was condemned a margin ago, condemn the rest',
    'artfs gc --compact --wait 10m --json',
))
@click.option("--dry-run", is_flag=True, help="Change nothing: show the bytes each artifact version would free.")
@click.option("--wait", "wait", default=None, metavar="DURATION",
              help="If another gc is running, wait up to this long for it (default: fail at once).")
@click.option("--compact", is_flag=True,
              help="Also rewrite packs that are mostly dead (their live chunks move; reads follow them). "
                   "Reads every kept version's chunk list.")
@click.option("--margin", default=None, metavar="DURATION",
              help="Change the store's safety margin (default 6h): longer than any commit takes from its first "
                   "upload to its publication. A pack is freed two margins after it stopped being used.")
@store_option
@endpoint_option
@json_option
def gc(dry_run, wait, compact, margin, store_uri, endpoint_url, as_json) -> None:
    """Reclaim the space of packs that no live or restorable version, and no staging area, uses.

    Safe with writers on other machines (they take no lock): an unreferenced pack is first condemned and
    deleted only by a gc at least a margin later, if still unreferenced; a commit that finds a pack it
    reuses condemned uploads that content again. Run it periodically; each run finishes the last one."""
    from artfs.core.gc import collect

    wait_s = _duration(wait, "--wait") or 0.0
    margin_s = _duration(margin, "--margin")
    repo = open_repo(store_uri, endpoint_url)
    try:
        report = collect(repo, dry_run=dry_run, margin=margin_s, wait=wait_s, compact=compact)
    finally:
        repo.close()
    if as_json:
        print_json(report.as_json())
        return
    if dry_run:
        rows = []
        for label, by_action in report.by_version().items():
            for action, nbytes in sorted(by_action.items()):
                rows.append([label, human(nbytes), _ACTIONS.get(action, action)])
        if rows:
            table(rows, ["VERSIONS", "BYTES", "IN THIS RUN"])
        click.echo(f"dry run: would free {report.deleted_packs} packs ({human(report.freed_bytes)}) now and "
                   f"condemn {report.condemned_packs} ({human(report.condemned_bytes)}), freed by a gc "
                   f"{_human_time(report.margin)} later; {report.referenced_packs} of {report.packs} packs in use"
                   + _compacted(report, "would rewrite"))
        return
    click.echo(f"freed {report.deleted_packs} packs ({human(report.freed_bytes)}); condemned "
               f"{report.condemned_packs} ({human(report.condemned_bytes)}), freed by a gc "
               f"{_human_time(report.margin)} from now if still unused; {report.referenced_packs} of "
               f"{report.packs} packs in use" + (f"; {report.records_removed} stale records removed"
                                                 if report.records_removed else "") + _compacted(report, "rewrote"))
    sys.stdout.flush()


def _compacted(report, verb: str) -> str:  # noqa: ANN001 - a GcReport
    if not report.compacted_packs:
        return ""
    return (f"; {verb} {report.compacted_packs} mostly dead packs ({human(report.compacted_bytes)} live copied "
            f"out, the rest freed by later runs)")


def _human_time(seconds: float) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= n:
            return f"{seconds / n:g}{unit}"
    return f"{seconds:g}s"


COMMANDS = [gc]
