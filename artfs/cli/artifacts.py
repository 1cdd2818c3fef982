"""`artfs put`, `get`, `ls`, `files`, `info`, `log`, `diff`, `alias`: artifacts and versions in the store.

They need no mount: open the store, call the core, print.
"""

from __future__ import annotations

import contextlib
import os
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
    progress,
    settings,
    shown,
    store_option,
    table,
    when,
)
from artfs.core.names import check_alias, check_message, parse_meta, parse_ref
from artfs.errors import ArtfsError


@click.command(epilog=examples(
    'artfs put ./data animals -m "first cut" --alias best',
    'artfs put ./model resnet --type model --meta epoch=10',
    'artfs put ./animals-v3 animals --base v3   # my changes to v3, merged onto latest',
    'artfs put ./code animals --ref raw/=s3://other-team/raw/ --ref https://example.org/labels.csv',
    'artfs put animals --ref s3://other-team/raw/   # references only, no directory',
))
@click.argument("src", required=False, type=click.Path(file_okay=False, path_type=str))
@click.argument("name", required=False, shell_complete=complete_refs)
@click.option("--type", "type_", default=None, help="Artifact type (dataset, model, …); default dataset.")
@click.option("-m", "--message", default="", help="What this version is.")
@click.option("--alias", "aliases", multiple=True, help="Point this alias at the new version (repeatable).")
@click.option("--meta", "meta", multiple=True, metavar="K=V", help="Metadata key=value (repeatable).")
@click.option("--base", "base_ref", default=None, metavar="REF",
              help="SRC is version REF plus your changes: merge them onto latest (conflicts are refused).")
@click.option("--force", is_flag=True, help="With --base, on conflicting paths keep SRC's side.")
@click.option("--ttl", "ttl_text", default=None, metavar="DURATION",
              help="Delete the version this long after its creation (30d, 12h, 2w; see `artfs ttl`).")
@click.option("--ref", "ref_args", multiple=True, metavar="[PATH=]URI",
              help="Also add the object (or every object under the prefix) at URI — s3://, https://, http://, "
                   "file:// — as a pinned reference, not copied; at PATH (repeatable).")
@click.option("--no-checksum", is_flag=True,
              help="Do not read referenced objects now: pin them by metadata only (ETag, Last-Modified, mtime).")
@click.option("--copy", "copy_refs", is_flag=True,
              help="Store the --ref objects' bytes as artfs content (for sources about to disappear).")
@click.option("--max-objects", type=click.IntRange(min=1), default=None,
              help="A --ref prefix with more objects than this is an error (default 10000).")
@store_option
@endpoint_option
@json_option
def put(src, name, type_, message, aliases, meta, base_ref, force, ttl_text, ref_args, no_checksum, copy_refs,
        max_objects, store_uri, endpoint_url, as_json) -> None:
    """Commit directory SRC (and any --ref references) as the next version of artifact NAME.

    The version is exactly SRC (a snapshot), whatever others published since you got it; with --base REF,
    SRC's changes since REF are merged onto latest instead, as a seal does. With --ref, SRC may be left
    out: a version of references only."""
    from artfs.core.commit import commit_tree, scan_size
    from artfs.core.lifecycle import parse_ttl
    from artfs.core.names import check_name

    if name is None:
        if src is None or not ref_args:
            raise click.UsageError("Missing argument 'NAME' (give SRC NAME, or NAME with --ref)")
        src, name = None, src
    check_name(name)
    ttl = parse_ttl(ttl_text) if ttl_text is not None else None
    for a in aliases:
        check_alias(a)
    metadata = parse_meta(meta)
    check_message(message, metadata)
    if force and base_ref is None:
        raise ArtfsError("--force only applies with --base")
    if (copy_refs or no_checksum or max_objects is not None) and not ref_args:
        raise ArtfsError("--copy, --no-checksum and --max-objects only apply with --ref")
    if copy_refs and no_checksum:
        raise ArtfsError("--copy reads the objects: it cannot be combined with --no-checksum")
    base_spec = None
    if base_ref is not None:  # `v3`, `best` or `animals:v3`
        base_spec = parse_ref(base_ref if ":" in base_ref else f"{name}:{base_ref}")
        if base_spec.name != name:
            raise ArtfsError(f"--base must be a version of {name}, not of {base_spec.name}")
    if src is not None and not os.path.isdir(src):
        raise ArtfsError(f"{src} is not a directory")
    spec = _reference_spec(src, ref_args, not no_checksum, max_objects) if ref_args else None
    repo = open_repo(store_uri, endpoint_url, create=True)
    try:
        base = repo.resolve(base_spec).version if base_spec is not None else None
        run = _enclosing_run(repo)
        show = not as_json and sys.stderr.isatty()
        if spec is not None:
            from artfs.artifact_files import commit_spec

            total = sum(s.external.pin.size for s in spec.paths.values() if s.external is not None) + (
                scan_size(src) if src is not None else 0)
            with progress(total if show else None, f"put {name}", show) as bar:
                result = commit_spec(repo, spec, name, type_, message, metadata, aliases, run, ttl, bar,
                                     base=base, force=force, copy_references=copy_refs)
        else:
            assert src is not None
            with progress(scan_size(src) if show else None, f"put {name}", show) as bar:
                result = commit_tree(repo, src, name, type_, message, metadata, aliases, bar, base=base,
                                     force=force, run=run, ttl=ttl)
    finally:
        repo.close()
    if as_json:
        print_json(result.as_json())
        return
    if result.record is None:
        click.echo(f"{name}: unchanged, identical to latest; no new version ({result.files} files, "
                   f"{human(result.bytes)})" + (f"; aliases set on latest: {', '.join(aliases)}" if aliases else ""))
        return
    click.echo(result.ref)
    click.echo(f"  {result.files} files, {human(result.bytes)}; uploaded {human(result.uploaded_bytes)}, "
               f"{result.reused_chunks} chunks already stored, {result.new_chunks} new")
    if ref_args and copy_refs:
        click.echo(f"  {len(ref_args)} --ref given: copied into the store as artfs content (--copy)")
    elif ref_args:
        click.echo(f"  {len(ref_args)} --ref given: referenced objects stay where they are, pinned "
                   f"({'metadata only' if no_checksum else 'chunk digests recorded'}; see `artfs files`)")
    if src is None:
        return
    click.echo(f"  {src}'s changes since {name}:v{base}, merged onto latest" if base is not None
               else f"  exactly the tree of {src} (--base REF would merge its changes onto latest instead)")


def _reference_spec(src: str | None, ref_args: tuple[str, ...], checksum: bool, max_objects: int | None):
    """The tree of `artfs put` with references: SRC's files, then each --ref, listed and pinned now, so
    an unknown scheme, a bad PATH= or an unreachable source fails before anything is uploaded."""
    from artfs.artifact_files import TreeSpec
    from artfs.core.references import split_ref_arg

    spec = TreeSpec()
    if src is not None:
        spec.add_dir(src)
    for arg in ref_args:
        path, uri = split_ref_arg(arg)
        spec.add_reference(uri, path, checksum, max_objects)
    return spec


def _enclosing_run(repo) -> str | None:
    """Inside `artfs run` ($ARTFS_RUN_ID), the run the new version is an output of — if the run is in this
    store; a put into another store is not attributed to a run it cannot name."""
    from artfs.core.runs import run_exists

    run_id = settings().run_id
    if run_id is None or run_exists(repo, run_id):
        return run_id
    click.echo(f"artfs: run {run_id} is not in store {repo.store.uri}; the version is not recorded as its "
               "output", err=True)
    return None


@click.command(epilog=examples(
    'artfs get animals            # latest, into ./animals-vN',
    'artfs get animals:best /data/animals',
))
@click.argument("ref", shell_complete=complete_refs)
@click.argument("dest", required=False)
@click.option("--skip-references", is_flag=True, help="Do not export referenced files (external objects).")
@click.option("--allow-missing-references", is_flag=True,
              help="Export the rest when referenced objects changed or vanished (listed; exit 0).")
@store_option
@endpoint_option
@json_option
def get(ref, dest, skip_references, allow_missing_references, store_uri, endpoint_url, as_json) -> None:
    """Export version REF (NAME[:vN|latest|ALIAS]) to DEST (default ./NAME-vN)."""
    from artfs.core.export import export_version

    parsed = parse_ref(ref)
    repo = open_repo(store_uri, endpoint_url)
    try:
        rec = repo.resolve(parsed)
        dest = dest or f"{rec.artifact}-v{rec.version}"
        show = not as_json
        with progress(rec.bytes, f"get {rec.ref}", show) as bar:
            how = "skip" if skip_references else "allow-missing" if allow_missing_references else "fetch"
            result = export_version(repo, rec, dest, bar, references=how)
    finally:
        repo.close()
    if as_json:
        print_json({"ref": rec.ref, "dest": result.dest, "files": result.files, "bytes": result.bytes,
                     "fetched_bytes": result.fetched_bytes, "requests": result.requests,
                     "missing_references": result.missing, "skipped_references": result.skipped})
    else:
        click.echo(f"{rec.ref} -> {result.dest} ({result.files} files, {human(result.bytes)})"
                   + (f"; {result.skipped} referenced files skipped" if result.skipped else ""))
        for problem in result.missing.values():
            click.echo(f"artfs: left out: {problem}", err=True)


def _version_json(rec, aliases: list[str]) -> dict:
    return {"ref": rec.ref, "artifact": rec.artifact, "version": rec.version, "type": rec.type,
            "digest": rec.digest, "files": rec.files, "bytes": rec.bytes, "created": rec.created,
            "creator": rec.creator, "message": rec.message, "metadata": rec.metadata, "aliases": aliases,
            "parent": rec.parent}


def _aliases_by_version(repo, name: str, latest: int) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {latest: ["latest"]}
    for alias, v in sorted(repo.aliases(name).items()):
        out.setdefault(v, []).append(alias)
    return out


@click.command(name="ls", epilog=examples('artfs ls', 'artfs ls animals', 'artfs ls animals:v3 --json',
                                         'artfs ls animals --deleted'))
@click.argument("name", required=False, shell_complete=complete_refs)
@click.option("--deleted", is_flag=True, help="List deleted versions instead (restorable, and until when).")
@store_option
@endpoint_option
@json_option
def ls_cmd(name, deleted, store_uri, endpoint_url, as_json) -> None:
    """List artifacts, or the versions of artifact NAME (--deleted: the deleted ones)."""
    from artfs.cli.lifecycle import deleted_listing

    parsed = parse_ref(name) if name is not None else None
    if deleted and parsed is not None and parsed.ref is not None:
        raise ArtfsError(f"--deleted lists a whole artifact: give {parsed.name}, not {name}")
    repo = open_repo(store_uri, endpoint_url)
    try:
        if deleted:
            deleted_listing(repo, parsed.name if parsed else None, as_json)
            return
        if parsed is None:
            rows = []
            for art, view in repo.views().items():
                if view.latest is None:  # every version deleted (`artfs ls --deleted` shows them)
                    continue
                recs, problems = repo.readable_versions(art, view.live)
                for problem in problems:
                    click.echo(f"warning: {problem}", err=True)
                if not recs:
                    continue
                rows.append({"name": art, "type": recs[-1].type, "versions": len(recs),
                             "latest": recs[-1].ref, "bytes": recs[-1].bytes, "updated": recs[-1].created})
            if as_json:
                print_json(rows)
            elif rows:
                table([[r["name"], r["type"], str(r["versions"]), r["latest"], human(r["bytes"]),
                         when(r["updated"])] for r in rows],
                       ["NAME", "TYPE", "VERSIONS", "LATEST", "SIZE", "UPDATED"])
            return
        numbers = repo.require_artifact(parsed.name)
        by_version = _aliases_by_version(repo, parsed.name, numbers[-1])
        if parsed.ref is not None:  # NAME:REF lists that one version
            recs, problems = [repo.resolve(parsed)], []
        else:
            recs, problems = repo.readable_versions(parsed.name, numbers)
        for problem in problems:
            click.echo(f"warning: {problem}", err=True)
        if as_json:
            print_json([_version_json(r, by_version.get(r.version, [])) for r in recs])
            return
        table([[f"v{r.version}", ",".join(by_version.get(r.version, [])), str(r.files), human(r.bytes),
                 when(r.created), shown(r.message)] for r in reversed(recs)],
               ["VERSION", "ALIASES", "FILES", "SIZE", "CREATED", "MESSAGE"])
    finally:
        repo.close()


@click.command(epilog=examples('artfs files animals:v3', 'artfs files animals --json | jq -r ".[].path"'))
@click.argument("ref", shell_complete=complete_refs)
@store_option
@endpoint_option
@json_option
def files(ref, store_uri, endpoint_url, as_json) -> None:
    """List the files of version REF."""
    from artfs.core.manifest import KIND_NAMES
    from artfs.core.references import entry_source

    repo = open_repo(store_uri, endpoint_url)
    try:
        rec = repo.resolve(parse_ref(ref))
        header, entries = repo.entries(rec)
        if as_json:
            out = []
            for e in entries:
                item = {"path": e.path, "type": KIND_NAMES[e.kind], "size": e.size, "mode": oct(e.mode),
                        "mtime": e.mtime_ns / 1e9, **({"target": e.target} if e.kind == 2 else {})}
                source = entry_source(e, header.packs)
                if source is not None:
                    item["reference"] = _reference_json(source)
                out.append(item)
            print_json(out)
            return
        for e in entries:
            source = entry_source(e, header.packs) if e.kind == 0 else None
            if source is not None:  # a reference: where its bytes are, and how firmly they are pinned
                click.echo(f"{e.size:>14}  {shown(e.path)}  @ {source.describe()}")
            elif e.kind == 0:
                click.echo(f"{e.size:>14}  {shown(e.path)}")
            elif e.kind == 1:
                click.echo(f"{'-':>14}  {shown(e.path)}/")
            else:
                click.echo(f"{'-':>14}  {shown(e.path)} -> {shown(e.target)}")
    finally:
        repo.close()


def _staging_root(path: str) -> str | None:
    """The staging directory `path` is in (or is), found by the control xattr its root carries; or None."""
    p = os.path.abspath(path)
    while True:
        try:
            os.getxattr(p, "user.artfs.control")
            return p
        except OSError:
            pass
        parent = os.path.dirname(p)
        if parent == p:
            return None
        p = parent


def _staging_info(path: str, staging: str, as_json: bool) -> None:
    """`artfs info` of a staging path: which artifact, from which base, and how much is staged."""
    from artfs.staging_client import request_status

    name = os.getxattr(staging, "user.artfs.artifact").decode()
    result = request_status(staging)
    rel = os.path.relpath(os.path.abspath(path), staging)
    rel = "" if rel == "." else rel
    base, changes = result.get("base"), len(result.get("changes", []))
    if as_json:
        print_json({"staging": name, "base": base, "path": rel, "changes": changes})
        return
    click.echo(f"{name} staging (unsealed), based on {base or 'nothing yet (a new artifact)'}")
    if rel:
        click.echo(f"  path     {shown(rel)}")
    click.echo(f"  changes  {changes} (artfs status {shown(staging)})")


def _mounted_source(path: str) -> dict | None:
    """A mounted referenced file's source, as its xattrs say (`{"uri", "pin"}`), or None for any other path."""
    try:
        return {"uri": os.getxattr(path, "user.artfs.source").decode(),
                "pin": os.getxattr(path, "user.artfs.pin").decode()}
    except OSError:
        return None


def _mounted_ref(path: str) -> str | None:
    """`artfs info PATH` inside a mount: the ref the filesystem reports for that path."""
    try:
        return os.getxattr(path, "user.artfs.ref").decode()
    except OSError:
        return None


@click.command(epilog=examples(
    'artfs info animals:best',
    'artfs info ~/art/animals/latest/labels.csv',
    'artfs info ~/art/animals/staging',
))
@click.argument("ref", shell_complete=complete_refs)
@store_option
@endpoint_option
@json_option
def info(ref, store_uri, endpoint_url, as_json) -> None:
    """Show version REF (or the version a path in a mount belongs to)."""
    from artfs.core.references import is_token

    if "/" in ref and not os.path.exists(ref):
        from artfs.fs.mountpoint import stale_message, stale_mount_above  # no FUSE in there: stays light

        stale = stale_mount_above(ref)
        raise ArtfsError(stale_message(stale) if stale else f"{ref} does not exist")
    looks_like_a_path = "/" in ref or ref in (".", "..")
    mounted = _mounted_ref(ref) if os.path.exists(ref) else None
    if mounted is None and os.path.exists(ref):
        staging = _staging_root(ref)
        if staging is not None:
            _staging_info(ref, staging, as_json)
            return
        if looks_like_a_path:
            raise ArtfsError(f"{ref} is not inside an artfs mount")
    ref_path = ref if mounted is not None else None
    if mounted is not None:  # a path in a mount, even one without '/' (`cd MNT/animals; artfs info v0`)
        if store_uri is None:
            with contextlib.suppress(OSError):
                store_uri = os.getxattr(ref, "user.artfs.store").decode()
        ref = mounted
    repo = open_repo(store_uri, endpoint_url)
    refs: dict = {}
    try:
        parsed = parse_ref(ref)
        rec = repo.resolve(parsed)
        numbers = repo.require_artifact(parsed.name)  # the live ones: the last is latest
        aliases = _aliases_by_version(repo, parsed.name, numbers[-1]).get(rec.version, [])
        header, entries = repo.entries(rec)
        if any(is_token(p) for p in header.packs):  # only a version with references is read through
            for _ in _noting_references(entries, header.packs, refs):
                pass
    finally:
        repo.close()
    data = _version_json(rec, aliases)
    here = _mounted_source(ref_path) if ref_path is not None else None
    if refs:  # where the referenced bytes are, and how they are pinned (`artfs files` lists every one)
        data["references"] = [{"path": p, **(_reference_json(s) or {})} for p, s in refs.items()]
    if here is not None:
        data["reference"] = here
    if as_json:
        print_json(data)
        return
    click.echo(rec.ref)
    for key in ("type", "digest", "files", "bytes", "created", "creator", "message", "aliases", "parent"):
        value = data[key]
        if key == "message":
            value = shown(value)
        elif key == "created":
            value = when(value)
        elif key == "bytes":
            value = f"{value} ({human(value)})"
        elif key == "aliases":
            value = ", ".join(value)
        if value in (None, ""):
            continue
        click.echo(f"  {key:8} {value}")
    for k, v in sorted(rec.metadata.items()):
        click.echo(f"  meta     {shown(k)}={shown(v)}")
    if refs:
        click.echo(f"  refs     {len(refs)} referenced file(s), bytes kept at their URIs, pinned:")
        for p, source in list(refs.items())[:10]:
            click.echo(f"           {shown(p)}  @ {source.describe()}")
        if len(refs) > 10:
            click.echo(f"           … and {len(refs) - 10} more (artfs files {rec.ref})")
    if here is not None:
        click.echo(f"  this     {shown(ref_path or '')} is a reference to {here['uri']} (pinned: {here['pin']})")


@click.command(epilog=examples('artfs log animals', 'artfs log animals | head -5'))
@click.argument("name", shell_complete=complete_refs)
@store_option
@endpoint_option
@json_option
def log(name, store_uri, endpoint_url, as_json) -> None:
    """Versions and alias moves of artifact NAME, newest first."""
    parsed = parse_ref(name)
    if parsed.ref is not None:
        raise ArtfsError(f"log shows a whole artifact: give {parsed.name}, not {name} (see `artfs info {name}`)")
    repo = open_repo(store_uri, endpoint_url)
    try:
        repo.require_artifact(parsed.name)
        events = [{"time": r.created, "event": "version", "ref": r.ref, "creator": r.creator,
                   "message": r.message, "files": r.files, "bytes": r.bytes} for r in repo.versions(parsed.name)]
        events += [{"time": e.time, "event": "alias" if e.version is not None else "alias-deleted",
                    "alias": e.alias, "ref": f"{parsed.name}:v{e.version}" if e.version is not None else None,
                    "creator": e.creator} for e in repo.alias_log(parsed.name)]
        events += [{"time": e.time, "event": e.kind, "refs": [f"{parsed.name}:v{n}" for n in e.versions],
                    "ttl": e.ttl, "creator": e.creator} for e in repo.lifecycle_log(parsed.name)]
    finally:
        repo.close()
    # newest first, but an alias set with a version (`put --alias`, `seal --alias`) comes right below it
    created = {e["ref"]: (e["time"], e["creator"]) for e in events if e["event"] == "version"}

    def order(e: dict) -> tuple[float, int]:
        made = created.get(e["ref"]) if e["event"] == "alias" else None
        if made is not None and made[1] == e["creator"] and 0 <= e["time"] - made[0] < 60:
            return made[0], 0
        return e["time"], 1

    events.sort(key=order, reverse=True)
    if as_json:
        print_json(events)
        return
    for e in events:
        at = when(e["time"])
        if e["event"] == "version":
            msg = f"  {shown(e['message'])}" if e["message"] else ""
            click.echo(f"{at}  {e['ref']:<20} {e['files']} files, {human(e['bytes'])}  by {e['creator']}{msg}")
        elif e["event"] == "alias":
            click.echo(f"{at}  alias {e['alias']} -> {e['ref']}  by {e['creator']}")
        elif e["event"] in ("delete", "restore", "ttl"):  # core/lifecycle.py
            refs = ", ".join(e["refs"])
            what = {"delete": "deleted", "restore": "restored"}.get(e["event"], "")
            if e["event"] == "ttl":
                what = f"TTL {e['ttl'] / 86400:g}d" if e["ttl"] is not None else "TTL removed"
            click.echo(f"{at}  {refs} {what}  by {e['creator']}")
        else:
            click.echo(f"{at}  alias {e['alias']} deleted  by {e['creator']}")


@click.command(epilog=examples('artfs diff animals:v2 animals:latest'))
@click.argument("a", shell_complete=complete_refs)
@click.argument("b", shell_complete=complete_refs)
@store_option
@endpoint_option
@json_option
def diff(a, b, store_uri, endpoint_url, as_json) -> None:
    """Paths added, removed or modified from version A to version B (NAME:REF each)."""
    from artfs.core.manifest import diff_entries

    ra, rb = parse_ref(a), parse_ref(b)
    repo = open_repo(store_uri, endpoint_url)
    old_refs: dict = {}
    new_refs: dict = {}
    try:
        va, vb = repo.resolve(ra), repo.resolve(rb)
        ha, ea = repo.entries(va)
        hb, eb = repo.entries(vb)
        changes = list(diff_entries(_noting_references(ea, ha.packs, old_refs),
                                    _noting_references(eb, hb.packs, new_refs)))
    finally:
        repo.close()

    def side(kind: str, path: str):  # the reference a change shows: the new one, or the removed one
        return old_refs.get(path) if kind == "removed" else new_refs.get(path)

    if as_json:
        out: dict[str, list[str]] = {"added": [], "removed": [], "modified": []}
        refs: dict[str, dict] = {}
        for kind, path in changes:
            out[kind].append(path)
            if path in old_refs or path in new_refs:
                refs[path] = {k: _reference_json(v.get(path)) for k, v in (("from", old_refs), ("to", new_refs))}
        print_json({"from": va.ref, "to": vb.ref, **out, **({"references": refs} if refs else {})})
        return
    marks = {"added": "+", "removed": "-", "modified": "M"}
    for kind, path in changes:
        source = side(kind, path)
        click.echo(f"{marks[kind]} {shown(path)}" + (f"  @ {source.describe()}" if source is not None else ""))
    counts = {k: sum(1 for c, _ in changes if c == k) for k in marks}
    click.echo(f"{va.ref} -> {vb.ref}: {counts['added']} added, {counts['removed']} removed, "
               f"{counts['modified']} modified", err=True)


def _noting_references(entries, packs: list[str], into: dict):
    """`entries` as they are, remembering each reference's Source by path in `into` (diff shows them)."""
    from artfs.core.references import entry_source, pack_ids

    if pack_ids(packs) == packs:  # no source in the location table: no reference in the version
        yield from entries
        return
    for e in entries:
        source = entry_source(e, packs)
        if source is not None:
            into[e.path] = source
        yield e


def _reference_json(source) -> dict | None:
    """A reference as --json shows it (files, info, diff)."""
    if source is None:
        return None
    return {"uri": source.uri, "pin": source.pin.describe(), "checksum": source.checksum,
            **({} if source.checksum else {"pinned_by": source.pin.strength()})}


@click.command(epilog=examples('artfs alias animals:v3 best', 'artfs alias --delete animals best'))
@click.argument("target", shell_complete=complete_refs)
@click.argument("alias")
@click.option("--delete", is_flag=True, help="Delete ALIAS from artifact TARGET (give NAME, not NAME:REF).")
@store_option
@endpoint_option
@json_option
def alias(target, alias, delete, store_uri, endpoint_url, as_json) -> None:
    """Point ALIAS at version TARGET (NAME:REF), or delete it with --delete NAME ALIAS."""
    check_alias(alias)
    parsed = parse_ref(target)
    repo = open_repo(store_uri, endpoint_url)
    try:
        if delete:
            if parsed.ref is not None:
                raise ArtfsError("--delete takes the artifact NAME, not NAME:REF")
            repo.delete_alias(parsed.name, alias)
            result = {"artifact": parsed.name, "alias": alias, "deleted": True}
            text = f"{parsed.name}: alias {alias} deleted"
        else:
            rec = repo.resolve(parsed)
            repo.set_alias(rec.artifact, alias, rec.version)
            result = {"artifact": rec.artifact, "alias": alias, "ref": rec.ref}
            text = f"{rec.artifact}:{alias} -> {rec.ref}"
    finally:
        repo.close()
    print_json(result) if as_json else click.echo(text)


COMMANDS = [put, get, ls_cmd, files, info, log, diff, alias]
