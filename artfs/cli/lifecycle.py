"""`artfs rm`, `restore`, `ttl`, `retain`, `retention`: deleting versions, bringing them back, expiring them.

Deletes are soft (core/lifecycle.py): a version disappears from `ls`, `get` and mounts (at their next poll)
and `artfs restore NAME:vN` brings it back until the store's retention window ends; its space returns
when garbage collection runs after that.
"""

from __future__ import annotations

import sys

import click

from artfs.cli.common import (
    complete_refs,
    endpoint_option,
    examples,
    human,
    json_option,
    open_repo,
    print_json,
    store_option,
    table,
    when,
)
from artfs.core.names import check_name, parse_ref
from artfs.errors import ArtfsError


@click.command(epilog=examples(
    'artfs rm animals:v3',
    'artfs rm animals:v2 --delete-aliases   # v2 is `best`: delete that alias too',
    'artfs rm animals --yes                  # every version of animals',
))
@click.argument("target", shell_complete=complete_refs)
@click.option("--delete-aliases", is_flag=True, help="Also delete the aliases that point at the version.")
@click.option("--yes", "-y", is_flag=True, help="Delete a whole artifact without asking.")
@store_option
@endpoint_option
@json_option
def rm(target, delete_aliases, yes, store_uri, endpoint_url, as_json) -> None:
    """Delete version NAME:REF, or with NAME alone the whole artifact (asks on a terminal, else --yes).

    A soft delete: `artfs restore NAME:vN` brings a version back until the store's retention window
    (default 7 days) ends. Refused while an alias other than latest points at the version, unless
    --delete-aliases."""
    from artfs.core import lifecycle

    parsed = parse_ref(target)
    check_name(parsed.name)
    whole = parsed.ref is None
    if whole and delete_aliases:
        raise ArtfsError("--delete-aliases applies to one version (NAME:REF); a whole artifact keeps its aliases")
    repo = open_repo(store_uri, endpoint_url)
    try:
        if whole:
            live = repo.require_artifact(parsed.name)
            if not yes:
                if not sys.stdin.isatty():
                    raise ArtfsError(f"deleting all {len(live)} version(s) of {parsed.name} needs --yes "
                                     f"(stdin is not a terminal to ask on); nothing was deleted")
                if not click.confirm(f"Delete artifact {parsed.name} ({len(live)} version(s))?", err=True):
                    raise ArtfsError("nothing was deleted")
            result = lifecycle.delete_artifact(repo, parsed.name)
        else:
            result = lifecycle.delete(repo, parsed, delete_aliases=delete_aliases)
    finally:
        repo.close()
    if as_json:
        print_json(result.as_json())
        return
    refs = ", ".join(f"v{n}" for n in result.versions)
    click.echo(f"{result.name}: deleted {refs}" + (f"; aliases deleted: {', '.join(result.aliases_deleted)}"
                                                   if result.aliases_deleted else ""))
    if not whole:
        click.echo(f"  latest is now {'v' + str(result.latest) if result.latest is not None else 'none'}")
    click.echo(f"  restorable until {when(result.restorable_until)}: artfs restore {result.name}:vN")


@click.command(epilog=examples('artfs ls animals --deleted', 'artfs restore animals:v3'))
@click.argument("ref", shell_complete=complete_refs)
@store_option
@endpoint_option
@json_option
def restore(ref, store_uri, endpoint_url, as_json) -> None:
    """Bring back deleted version NAME:vN (within the store's retention window); its TTL is dropped."""
    from artfs.core import lifecycle

    parsed = parse_ref(ref)
    repo = open_repo(store_uri, endpoint_url)
    try:
        rec = lifecycle.restore(repo, parsed)
        latest = repo.heads(rec.artifact)[0]
    finally:
        repo.close()
    if as_json:
        print_json({"ref": rec.ref, "restored": True, "latest": f"{rec.artifact}:v{latest}"})
        return
    click.echo(f"{rec.ref} restored" + (" (it is latest again)" if latest == rec.version else ""))


@click.command(epilog=examples('artfs ttl ckpt:v12 30d', 'artfs ttl ckpt:best 90d', 'artfs ttl ckpt:v12 none'))
@click.argument("ref", shell_complete=complete_refs)
@click.argument("ttl", metavar="DURATION|none")
@store_option
@endpoint_option
@json_option
def ttl(ref, ttl, store_uri, endpoint_url, as_json) -> None:
    """Delete version REF when DURATION (30d, 12h, 2w) has passed since its creation; `none` removes it.

    A version a user alias points at is kept until the alias moves."""
    from artfs.core import lifecycle

    seconds = lifecycle.parse_ttl(ttl)
    parsed = parse_ref(ref)
    repo = open_repo(store_uri, endpoint_url)
    try:
        rec, expires = lifecycle.set_ttl(repo, parsed, seconds)
    finally:
        repo.close()
    if as_json:
        print_json({"ref": rec.ref, "ttl": seconds, "expires": expires})
        return
    click.echo(f"{rec.ref}: " + (f"deleted at {when(expires)} (unless an alias points at it then)"
                                 if expires is not None else "no TTL"))


@click.command(epilog=examples('artfs retain ckpt --keep-last 5 --dry-run', 'artfs retain ckpt --keep-last 5'))
@click.argument("name", shell_complete=complete_refs)
@click.option("--keep-last", type=int, required=True, metavar="N", help="Keep the newest N versions.")
@click.option("--keep-aliased", is_flag=True,
              help="Keep versions an alias points at (without it, such versions make retain refuse).")
@click.option("--dry-run", is_flag=True, help="Show what would be deleted and the bytes freed; change nothing.")
@store_option
@endpoint_option
@json_option
def retain(name, keep_last, keep_aliased, dry_run, store_uri, endpoint_url, as_json) -> None:
    """Delete every version of NAME but the newest N (with --keep-aliased, also keep those an alias
    points at; without it, an old version with an alias is refused, as `rm` refuses it).

    The bytes freed are the stored bytes of chunks only the deleted versions reference within NAME (from
    their manifests; chunks shared with other artifacts count as freed, so it is an upper bound). The space
    returns when gc runs after the retention window."""
    from artfs.core import lifecycle

    check_name(name)
    repo = open_repo(store_uri, endpoint_url)
    try:
        plan = lifecycle.retain_plan(repo, name, keep_last, keep_aliased)
        result = None if dry_run else lifecycle.apply_retain(repo, plan)
    finally:
        repo.close()
    if as_json:
        print_json({**plan.as_json(), "dry_run": dry_run, "deleted": result.as_json()["deleted"] if result else []})
        return
    verb = "would delete" if dry_run else "deleted"
    if plan.blocked:  # only in a dry run: applying it raised above
        which = ", ".join(f"v{n} ({', '.join(a)})" for n, a in sorted(plan.blocked.items()))
        click.echo(f"  aliases point at {which}: retain refuses to run unless --keep-aliased keeps them")
    if not plan.drop:
        click.echo(f"{name}: nothing to delete ({len(plan.keep)} version(s) kept)")
        return
    table([[r.ref, str(r.files), human(r.bytes), when(r.created)] for r in plan.drop],
          ["VERSION", "FILES", "SIZE", "CREATED"])
    click.echo(f"{name}: {verb} {len(plan.drop)} version(s), {human(plan.freed_bytes)} freed by gc once "
               f"they are past the retention window")


@click.command(epilog=examples('artfs retention', 'artfs retention 14d'))
@click.argument("window", required=False, metavar="[DURATION]")
@store_option
@endpoint_option
@json_option
def retention(window, store_uri, endpoint_url, as_json) -> None:
    """Show, or set, how long a deleted version of this store stays restorable (default 7d)."""
    from artfs.core import lifecycle, store_format

    repo = open_repo(store_uri, endpoint_url)
    try:
        if window is not None:
            seconds = lifecycle.parse_ttl(window)
            if seconds is None:
                raise ArtfsError("the retention window must be a duration like 7d or 12h")
            repo.check_write(store_format.TOMBSTONES)
            store_format.set_retention(repo.store, seconds)
            repo._format = None
        seconds = lifecycle.retention_window(repo)
    finally:
        repo.close()
    if as_json:
        print_json({"retention": seconds})
    else:
        click.echo(f"deleted versions stay restorable for {seconds / 86400:g} day(s)")


def deleted_listing(repo, name: str | None, as_json: bool) -> None:
    """`artfs ls [NAME] --deleted`: soft-deleted versions, when, and until when they can be restored."""
    from artfs.core import lifecycle

    gone = lifecycle.deleted_versions(repo, name)
    if as_json:
        print_json([d.as_json() for d in gone])
        return
    if gone:
        table([[d.record.ref, human(d.record.bytes), when(d.state.deleted_at or 0.0),
                when(d.state.restorable_until or 0.0) if d.restorable else "no (window over)"] for d in gone],
              ["VERSION", "SIZE", "DELETED", "RESTORABLE UNTIL"])


COMMANDS = [rm, restore, ttl, retain, retention]
