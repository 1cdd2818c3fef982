"""`artfs cache info|prune|clear`: what artfs keeps on this machine, what bounds it, and dropping it.

All of it is in the cache directory (core/places.py) and disposable; staged data lives in the data directory
and is never touched here. Each part, and how it is kept in check:

- The chunk cache (storage/cache.py): bounded by the recorded bound, on disk too. `prune --to SIZE` and
  `clear` evict through the same cache code a running mount uses: the mount refetches what it reads next, and
  LMDB reuses the freed pages (its file does not shrink). `clear` deletes the files outright when no process
  has them open (lmdb_env.remove_unused), keeping the bound.
- Per store, the index (core/index.py): `clear` deletes an index no process has open; one that a mount has
  open keeps the lookup tables the mount reads, and loses its records and chunk locations (fetched again,
  rebuilt on the next commit).
- Per store, downloaded manifests: `prune` and `clear` delete them (immutable; fetched again, verified, when
  needed). Versions copied out by the Python API only go with `clear --copies`: a program may be reading
  them, and artfs cannot tell.
- Temporary files of a commit that crashed (a day old or more): both delete them.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import TYPE_CHECKING, Any

import click

from artfs.cli.common import cache_dir_option, examples, human, print_json, settings, shown, table

if TYPE_CHECKING:  # the rest is imported by the command that runs: `artfs --help` loads none of it
    from artfs.core.places import Places, StoreCache

_STALE_SECONDS = 24 * 3600  # a temporary file this old belongs to no commit still running


def _places(cache_dir: str | None) -> tuple[Places, int | None]:
    env = settings()
    places = env.places
    if cache_dir:
        places = dataclasses.replace(places, cache=os.path.abspath(os.path.expanduser(cache_dir)))
    return places, env.cache_size


def _chunks_path(places: Places) -> str:
    return os.path.join(places.cache, "chunks.lmdb")


def _du(path: str) -> int:
    """Bytes allocated on disk under `path` (a file or a directory)."""
    total = 0
    try:
        st = os.lstat(path)
    except OSError:
        return 0
    total += st.st_blocks * 512
    if os.path.isdir(path) and not os.path.islink(path):
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    total += os.lstat(os.path.join(root, name)).st_blocks * 512
                except OSError:
                    pass
    return total


def _manifest_files(sc: StoreCache) -> list[str]:
    """Downloaded manifests (named by their id; `.tmp-` files are downloads or commits in progress)."""
    try:
        names = os.listdir(sc.manifests)
    except OSError:
        return []
    return [os.path.join(sc.manifests, n) for n in sorted(names) if not n.startswith(".")]


def _copies(sc: StoreCache) -> list[str]:
    try:
        return [os.path.join(sc.copies, a, v) for a in sorted(os.listdir(sc.copies))
                for v in sorted(os.listdir(os.path.join(sc.copies, a)))]
    except OSError:
        return []


def _temporary(places: Places, stale_only: bool) -> list[str]:
    """Temporary files of commits and downloads (`manifest-*` in the cache root, `.tmp-*` among manifests);
    with `stale_only`, those a day old or more."""
    found = []
    dirs = [(places.cache, "manifest-")] + [(sc.manifests, ".tmp-") for sc in places.store_caches()]
    now = time.time()
    for d, prefix in dirs:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for n in names:
            path = os.path.join(d, n)
            try:
                old = now - os.lstat(path).st_mtime >= _STALE_SECONDS
            except OSError:
                continue
            if n.startswith(prefix) and (old or not stale_only):
                found.append(path)
    return found


def _remove(paths: list[str]) -> tuple[int, int]:
    """Delete files or directories: (how many, bytes on disk)."""
    import shutil

    count = freed = 0
    for p in paths:
        size = _du(p)
        try:
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.unlink(p)
        except FileNotFoundError:
            continue
        count += 1
        freed += size
    return count, freed


# --- info ----------------------------------------------------------------------------------------------


def _chunk_info(places: Places, env_bound: int | None) -> dict[str, Any]:
    from artfs.storage.cache import DEFAULT_MAX_BYTES, ChunkCache

    path = _chunks_path(places)
    if not os.path.isdir(path):
        bound = DEFAULT_MAX_BYTES if env_bound is None else env_bound
        return {"path": path, "bound": bound, "bytes": 0, "chunks": 0, "used_bytes": 0, "file_bytes": 0,
                "disk_bytes": 0, "in_use": False}
    from artfs.storage import lmdb_env

    in_use = lmdb_env.in_use(path)  # before this process opens it
    with ChunkCache(places.cache) as c:  # no bound given: nothing is recorded by looking
        st = c.stats()
        bound = st["max_bytes"] if c.bound_recorded or env_bound is None else env_bound
    return {"path": path, "bound": bound, "bytes": st["bytes"], "chunks": st["entries"],
            "used_bytes": st["used_bytes"], "file_bytes": st["file_bytes"], "disk_bytes": _du(path),
            "in_use": in_use}


def _store_info(sc: StoreCache) -> dict[str, Any]:
    from artfs.storage import lmdb_env

    manifests = _manifest_files(sc)
    copies = _copies(sc)
    has_index = os.path.isdir(sc.index)
    return {
        "store": sc.uri, "path": sc.path,
        "index_bytes": _du(sc.index), "index_in_use": has_index and lmdb_env.in_use(sc.index),
        "manifests": len(manifests), "manifest_bytes": sum(_du(m) for m in manifests),
        "copies": len(copies), "copy_bytes": sum(_du(c) for c in copies),
    }


def _by_artifact(places: Places) -> list[dict[str, Any]]:
    """Cached bytes per artifact, from the local indexes: the chunks of every version indexed here that
    are in the chunk cache (a chunk two artifacts share counts in both). A pass over the entries of every
    indexed version, so only on demand."""
    import msgspec

    from artfs.core.index import StoreIndex
    from artfs.core.records import VersionRecord
    from artfs.core.store_keys import ARTIFACTS, VERSIONS, parse_record_key
    from artfs.storage.cache import ChunkCache

    if not os.path.isdir(_chunks_path(places)):
        return []
    with ChunkCache(places.cache) as c:
        cached = c.chunk_sizes()
    rows = []
    for sc in places.store_caches():
        if not sc.uri or not os.path.isdir(sc.index):
            continue
        index = StoreIndex(sc.index, sc.uri)
        try:
            manifests: dict[str, set[str]] = {}
            versions: dict[str, int] = {}
            for key, data in index.records_under(ARTIFACTS):
                parsed = parse_record_key(key)
                if parsed is None or parsed.kind != VERSIONS:
                    continue
                try:
                    rec = msgspec.json.decode(data, type=VersionRecord)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue  # a damaged copy: the commands that read it say so
                manifests.setdefault(parsed.artifact, set()).add(rec.manifest)
                versions[parsed.artifact] = versions.get(parsed.artifact, 0) + 1
            for name, mids in sorted(manifests.items()):
                digests: set[bytes] = set()
                indexed = 0
                for mid in mids:
                    found = index.manifest_chunks(mid, cached)
                    if found is not None:
                        indexed += 1
                        digests |= found
                rows.append({"store": sc.uri, "artifact": name, "versions": versions[name],
                             "indexed_manifests": indexed, "chunks": len(digests),
                             "bytes": sum(cached[d] for d in digests)})
        finally:
            index.close()
    return sorted(rows, key=lambda r: (-r["bytes"], r["store"], r["artifact"]))


def _info(places: Places, env_bound: int | None, by_artifact: bool) -> dict[str, Any]:
    chunks = _chunk_info(places, env_bound)
    stores = [_store_info(sc) for sc in places.store_caches()]
    temporary = _temporary(places, stale_only=False)
    report: dict[str, Any] = {
        "location": places.cache,
        "bound": chunks.pop("bound"),
        "chunks": chunks,
        "stores": stores,
        "temporary": {"files": len(temporary), "bytes": sum(_du(t) for t in temporary)},
        "total_bytes": _du(places.cache),
    }
    if by_artifact:
        report["artifacts"] = _by_artifact(places)
    return report


@click.group(epilog=examples("artfs cache info", "artfs cache prune --to 5G", "artfs cache clear"))
def cache() -> None:
    """This machine's cache: chunks, store indexes, downloaded manifests (all disposable; staged data is
    kept elsewhere and never touched)."""


@cache.command(epilog=examples("artfs cache info", "artfs cache info --by-artifact --json"))
@click.option("--by-artifact", is_flag=True,
              help="Cached bytes per artifact, from the local indexes (reads every indexed version's entries).")
@cache_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(by_artifact: bool, cache_dir: str | None, as_json: bool) -> None:
    """Where the cache is, its bound, and what it holds: chunks (counted and on disk), each store's index
    and downloaded manifests, temporary files."""
    places, env_bound = _places(cache_dir)
    report = _info(places, env_bound, by_artifact)
    if as_json:
        print_json(report)
        return
    ch = report["chunks"]
    click.echo(f"cache      {shown(report['location'])}")
    click.echo(f"bound      {human(report['bound'])}")
    busy = ", in use" if ch["in_use"] else ""
    click.echo(f"chunks     {human(ch['bytes'])} in {ch['chunks']} chunks (pages in use {human(ch['used_bytes'])}, "
               f"file {human(ch['file_bytes'])}{busy})")
    for st in report["stores"]:
        click.echo(f"store      {shown(st['store'] or st['path'])}")
        busy = ", in use" if st["index_in_use"] else ""
        click.echo(f"  index      {human(st['index_bytes'])}{busy}")
        click.echo(f"  manifests  {st['manifests']} ({human(st['manifest_bytes'])})")
        if st["copies"]:
            click.echo(f"  copies     {st['copies']} ({human(st['copy_bytes'])})")
    if report["temporary"]["files"]:
        click.echo(f"temporary  {report['temporary']['files']} files ({human(report['temporary']['bytes'])})")
    click.echo(f"total      {human(report['total_bytes'])} on disk")
    if by_artifact:
        rows = [[shown(r["artifact"]), shown(r["store"]), str(r["versions"]), str(r["chunks"]), human(r["bytes"])]
                for r in report["artifacts"]]
        click.echo("")
        table(rows, ["ARTIFACT", "STORE", "VERSIONS", "CHUNKS", "CACHED"])
        click.echo("(a chunk that artifacts share counts in each)")


# --- prune and clear -----------------------------------------------------------------------------------


def _drop_manifests(places: Places) -> dict[str, int]:
    files = [f for sc in places.store_caches() for f in _manifest_files(sc)]
    n, freed = _remove(files)
    return {"removed": n, "bytes": freed}


def _drop_temporary(places: Places) -> dict[str, int]:
    n, freed = _remove(_temporary(places, stale_only=True))
    return {"removed": n, "bytes": freed}


def _prune_chunks(places: Places, to: int) -> dict[str, Any]:
    from artfs.storage.cache import ChunkCache

    if not os.path.isdir(_chunks_path(places)):
        return {"evicted": 0, "bytes": 0, "left": 0, "chunks_left": 0}
    with ChunkCache(places.cache) as c:
        freed, n = c.prune(to)
        st = c.stats()
    return {"evicted": n, "bytes": freed, "left": st["bytes"], "chunks_left": st["entries"],
            "file_bytes": st["file_bytes"]}


def _clear_chunks(places: Places) -> dict[str, Any]:
    """Delete the chunk cache's files if no process has them open (keeping the bound), else drop every
    chunk through the cache code."""
    from artfs.storage import lmdb_env
    from artfs.storage.cache import ChunkCache

    path = _chunks_path(places)
    if not os.path.isdir(path):
        return {"evicted": 0, "bytes": 0, "removed_files": False}
    with ChunkCache(places.cache) as c:
        bound = c.max_bytes if c.bound_recorded else None
        before = c.stats()
    disk = _du(path)
    if lmdb_env.remove_unused(path):
        if bound is not None:
            ChunkCache(places.cache, bound).close()  # the bound is a setting, not a cache entry
        return {"evicted": before["entries"], "bytes": before["bytes"], "removed_files": True, "disk_bytes": disk}
    with ChunkCache(places.cache) as c:
        freed, n = c.clear()
    return {"evicted": n, "bytes": freed, "removed_files": False}


def _clear_index(sc: StoreCache) -> dict[str, Any]:
    from artfs.core.index import StoreIndex
    from artfs.storage import lmdb_env

    out: dict[str, Any] = {"store": sc.uri, "path": sc.index}
    if not os.path.isdir(sc.index):
        return {**out, "removed": False, "in_use": False, "dropped": 0, "bytes": 0}
    size = _du(sc.index)
    if lmdb_env.remove_unused(sc.index):
        return {**out, "removed": True, "in_use": False, "dropped": 0, "bytes": size}
    index = StoreIndex(sc.index, sc.uri)
    try:
        dropped = index.drop_rebuildable()
    finally:
        index.close()
    return {**out, "removed": False, "in_use": True, "dropped": dropped, "bytes": 0}


@cache.command(epilog=examples("artfs cache prune --to 5G", "artfs cache prune --to 0 --json"))
@click.option("--to", "to", required=True, metavar="SIZE", help="Chunk bytes to keep, e.g. 5G (0: none).")
@cache_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def prune(to: str, cache_dir: str | None, as_json: bool) -> None:
    """Evict the least recently used chunks down to SIZE, and delete downloaded manifests and stale
    temporary files. Safe while a mount runs (it fetches again what it needs); store indexes are kept
    (`artfs cache clear` drops them)."""
    from artfs.settings import parse_size

    target = parse_size(to)
    places, _ = _places(cache_dir)
    report = {"chunks": _prune_chunks(places, target), "manifests": _drop_manifests(places),
              "temporary": _drop_temporary(places)}
    if as_json:
        print_json(report)
        return
    ch = report["chunks"]
    click.echo(f"chunks     evicted {ch['evicted']} ({human(ch['bytes'])}); {human(ch['left'])} left in "
               f"{ch['chunks_left']} (the file keeps its size; its space is reused)")
    _say_removed(report)


def _say_removed(report: dict[str, Any]) -> None:
    m, t = report["manifests"], report["temporary"]
    click.echo(f"manifests  removed {m['removed']} ({human(m['bytes'])}); fetched again when needed")
    if t["removed"]:
        click.echo(f"temporary  removed {t['removed']} stale files ({human(t['bytes'])})")


@cache.command(epilog=examples("artfs cache clear", "artfs cache clear --copies --json"))
@click.option("--copies", is_flag=True, help="Also delete versions the Python API copied into the cache "
                                             "(a program may still be reading them).")
@cache_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def clear(copies: bool, cache_dir: str | None, as_json: bool) -> None:
    """Drop the whole cache: chunks, store indexes, downloaded manifests, stale temporary files. Safe
    while a mount runs: what it has open is emptied through the code it uses, not deleted under it."""
    places, _ = _places(cache_dir)
    report: dict[str, Any] = {
        "chunks": _clear_chunks(places),
        "indexes": [_clear_index(sc) for sc in places.store_caches()],
        "manifests": _drop_manifests(places),
        "temporary": _drop_temporary(places),
    }
    if copies:
        n, freed = _remove([c for sc in places.store_caches() for c in _copies(sc)])
        report["copies"] = {"removed": n, "bytes": freed}
    if as_json:
        print_json(report)
        return
    ch = report["chunks"]
    if ch["removed_files"]:
        click.echo(f"chunks     removed {ch['evicted']} ({human(ch['bytes'])}): the cache files are gone "
                   f"({human(ch['disk_bytes'])} on disk)")
    else:
        click.echo(f"chunks     evicted {ch['evicted']} ({human(ch['bytes'])}); the cache is in use, so its file "
                   "keeps its size and its space is reused")
    for ix in report["indexes"]:
        what = shown(ix["store"] or ix["path"])
        if ix["removed"]:
            click.echo(f"index      {what}: removed ({human(ix['bytes'])})")
        elif ix["in_use"]:
            click.echo(f"index      {what}: in use by another process (a mount?): dropped {ix['dropped']} records "
                       "and chunk locations; the lookup tables it reads stay (clear again after unmounting)")
    _say_removed(report)
    if copies:
        click.echo(f"copies     removed {report['copies']['removed']} ({human(report['copies']['bytes'])})")


COMMANDS = [cache]
