"""The store's format: `format.json` at its root records the format version and the features in use.

Why: an old client committing into a store that a newer gc collects could lose data (it would dedup against
chunks gc is about to delete, and would not know tombstones hide versions). So every write path of a Repo
calls `check_writable` first: a client that does not know the store's format version, or one of its
features, refuses to write, naming the version it needs. Reading stays allowed: nothing a reader does can
lose data, and a reader that ignores tombstones only shows too much.

`format.json` is written with create-if-absent by the first write that needs a feature (so a store only
ever used by plain `put` stays format 1 and every client can still write it). A feature added to an
existing record, or a changed retention window, rewrites it; two clients enabling two *different* new
features at the same instant could drop one marker, so `require` reads back and retries until its own
features are there. Stores written by clients older than this module have no `format.json` and are
format 1: those clients never read it, which is why new features are recorded before their first use.
"""

from __future__ import annotations

import time

from artfs.core.records import FormatRecord, creator, decode_format, encode
from artfs.core.store_keys import FORMAT
from artfs.errors import ArtfsError, StoreNotFound
from artfs.storage.store import Store

FORMAT_VERSION = 2  # 1: versions and aliases only (no format.json); 2: + features below
TOMBSTONES = "tombstones"  # soft delete, restore, TTLs (core/lifecycle.py)
GC = "gc"  # garbage collection deletes packs (core/gc.py)
KNOWN_FEATURES = frozenset({TOMBSTONES, GC})
DEFAULT_RETENTION = 7 * 86400.0  # how long a soft-deleted version stays restorable


class UnsupportedFormat(ArtfsError):
    """The store uses a format or feature this client does not know: writing could lose data."""


def read(store: Store) -> FormatRecord | None:
    """The store's format record; None for a format-1 store (no record)."""
    try:
        data = store.get(FORMAT)
    except StoreNotFound:
        return None
    return decode_format(data, FORMAT)


def check_writable(store_uri: str, rec: FormatRecord | None) -> None:
    """Raise UnsupportedFormat unless this client knows the store's format version and every feature."""
    if rec is None:
        return
    unknown = sorted(set(rec.features) - KNOWN_FEATURES)
    if rec.format > FORMAT_VERSION or unknown:
        what = f"format {rec.format}" + (f" with features {', '.join(unknown)}" if unknown else "")
        raise UnsupportedFormat(
            f"store {store_uri} uses {what}; this artfs writes format {FORMAT_VERSION} "
            f"(features {', '.join(sorted(KNOWN_FEATURES))}): upgrade artfs to one that knows store format "
            f"{max(rec.format, FORMAT_VERSION + (1 if unknown else 0))} to write to it (reading is allowed)"
        )


def retention(rec: FormatRecord | None) -> float:
    """Seconds a soft-deleted version stays restorable in this store."""
    return DEFAULT_RETENTION if rec is None or rec.retention is None else rec.retention


def _new(features: set[str], retention_s: float | None, base: FormatRecord | None) -> FormatRecord:
    return FormatRecord(
        format=max(FORMAT_VERSION, base.format if base else 0),
        features=sorted(features | set(base.features if base else ())),
        retention=retention_s if retention_s is not None else (base.retention if base else None),
        time=time.time(),
        creator=creator(),
    )


def require(store: Store, features: set[str] | frozenset[str]) -> FormatRecord | None:
    """Make `format.json` record `features` before they are first used; returns the record now.
    Raises UnsupportedFormat if the store's format is one this client may not write."""
    rec = read(store)
    check_writable(store.uri, rec)
    if not features:
        return rec
    for _ in range(10):
        if rec is not None and features <= set(rec.features):
            return rec
        if rec is None:
            if not store.create_if_absent(FORMAT, encode(_new(set(features), None, None))):
                rec = read(store)
                check_writable(store.uri, rec)
                continue
        else:
            store.put(FORMAT, encode(_new(set(features), None, rec)))
        rec = read(store)
        check_writable(store.uri, rec)
    raise ArtfsError(f"store {store.uri}: could not record features {', '.join(sorted(features))} in {FORMAT}")


def set_retention(store: Store, seconds: float) -> FormatRecord:
    """Change the store's retention window (rewrites `format.json`, which records TOMBSTONES too)."""
    if seconds < 0:
        raise ArtfsError("the retention window cannot be negative")
    rec = require(store, {TOMBSTONES})
    new = _new({TOMBSTONES}, seconds, rec)
    store.put(FORMAT, encode(new))
    return new
