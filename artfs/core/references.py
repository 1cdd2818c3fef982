"""References: files of a version whose bytes live in an external object (s3://, https://, http://, file://).

A reference is an ordinary file entry whose chunks point into a **source** instead of a pack. A source is
the object's URI and its pin (storage/sources/: VersionId/ETag, ETag or Last-Modified, size + mtime),
written into the manifest's location table beside the pack ids as a token (`ext:` + its JSON), and a
chunk ref with FLAG_SOURCE names it there; its offset is the offset in the object, its stored length its
raw length (no compression). So FileLayout, the chunk cache, plan_spans, single flight, prefetch, merges,
seals and carried-over entries all work on references unchanged, and old manifests stay as they were.
Why a token in the existing table rather than a second table: every place that copies entries between
manifests (commit, merge, rebase, gc_guard) resolves refs through that one table, so a reference survives
them with no new plumbing; the few that treat the table as pack ids skip tokens (`pack_ids`).

- **checksum** (the default): the object is read once at add time and cut exactly like stored content, so
  its chunk digests are the ones the same bytes would get as content: the version digest covers the
  bytes, the cache and dedup are shared with packs, and every read — a 4 KiB one too — is verified chunk
  by chunk. A changed object can never be served: the pinned read refuses it, and if a source lied about
  its pin, the digest does.
- **no checksum**: nothing is read at add time; the object is cut into MAX_CHUNK pieces whose "digest" is
  a hash of the pin and the range (FLAG_UNVERIFIED): the cache is keyed by the pinned identity (a drifted
  source never hits old entries), but the bytes are only as certain as the pin (Pin.strength).
- A zero-byte object has one zero-length ref, so it is still a reference (listed, verified).
- **copy** (`artfs put --ref … --copy`): the object is read once and stored as ordinary content, for
  sources about to disappear (`read_source_chunks` feeds the Committer as a local file would).
"""

from __future__ import annotations

import functools
import posixpath
import struct
import urllib.parse
from collections.abc import Callable, Iterable, Iterator

import msgspec
import xxhash
from pyfastcdc import FastCDC

from artfs.core.chunker import AVG_CHUNK, MAX_CHUNK, MIN_CHUNK, digest
from artfs.core.manifest import FILE, Entry, pack_refs
from artfs.core.names import check_path
from artfs.core.packs import FLAG_SOURCE, FLAG_UNVERIFIED, REF, ChunkRef
from artfs.errors import ArtfsError, IntegrityError, InvalidName
from artfs.storage.sources import (
    Listed,
    Pin,
    SourceChanged,
    Stream,
    changed,
    has_scheme,
    objects_for,
    scheme_of,
)

TOKEN = "ext:"
MAX_OBJECTS = 10_000  # a prefix expands to at most this many entries unless the caller says more
EMPTY = digest(b"")


class Source(msgspec.Struct, frozen=True, omit_defaults=True):
    """An external object as a version pins it, and whether its chunk digests were recorded."""

    pin: Pin
    checksum: bool = True

    @property
    def uri(self) -> str:
        return self.pin.uri

    def token(self) -> str:
        return TOKEN + msgspec.json.encode(self).decode()

    def describe(self) -> str:
        """`URI (pinned: …; checksum)` for listings and errors."""
        how = "chunk digests verified on every read" if self.checksum else \
            f"no checksum: as strong as its {self.pin.strength()}"
        return f"{self.uri} (pinned: {self.pin.describe()}; {how})"


def is_token(name: str) -> bool:
    return name.startswith(TOKEN)


def pack_ids(locations: list[str]) -> list[str]:
    """The pack ids of a manifest's location table (sources left out)."""
    return [p for p in locations if not p.startswith(TOKEN)]


@functools.lru_cache(maxsize=4096)
def parse_token(token: str) -> Source:
    """The Source a location-table token names; IntegrityError for one artfs could not have written."""
    try:
        source = msgspec.json.decode(token[len(TOKEN):], type=Source)
        scheme_of(source.uri)
    except (msgspec.DecodeError, msgspec.ValidationError, InvalidName) as e:
        raise IntegrityError(f"bad external source {token[:80]!r}: {e}") from None
    if source.pin.size < 0:
        raise IntegrityError(f"bad external source {source.uri!r}: negative size")
    return source


def source_ref_problem(source: Source, offset: int, stored_len: int, raw_len: int, flags: int) -> str | None:
    """Why a chunk ref into `source` cannot have been written by artfs (manifest validation), or None."""
    want = FLAG_SOURCE if source.checksum else FLAG_SOURCE | FLAG_UNVERIFIED
    if flags != want:
        return f"chunk flags {flags} for source {source.uri}"
    if stored_len != raw_len or not 0 <= raw_len <= MAX_CHUNK:
        return f"a chunk of {raw_len} bytes in source {source.uri}"
    if offset < 0 or offset + raw_len > source.pin.size:
        return f"a chunk at offset {offset} of source {source.uri} ({source.pin.size} bytes)"
    return None


def entry_source(entry: Entry, locations: list[str]) -> Source | None:
    """The source a file entry refers to, or None for stored content (or a non-file)."""
    if entry.kind != FILE or len(entry.data) < REF.size:
        return None
    _, p, _, _, _, flags = REF.unpack_from(entry.data)
    return parse_token(locations[p]) if flags & FLAG_SOURCE else None


# --- adding ---------------------------------------------------------------------------------------


def split_ref_arg(text: str) -> tuple[str | None, str]:
    """`[PATH=]URI` → (PATH or None, URI). PATH= counts only when what follows the first '=' is a URI, so
    keys with '=' in them (Hive-style `year=2024/`) are URIs as they are."""
    path, eq, rest = text.partition("=")
    if eq and has_scheme(rest) and not has_scheme(path):
        return path, rest
    return None, text


def expand(uri: str, name: str | None = None, checksum: bool = True,
           max_objects: int | None = None) -> list[tuple[str, Source, int]]:
    """(path in the version, Source, mtime_ns) per object `uri` names: one object, or every object under a
    prefix (whole path segments, paginated, more than `max_objects` an error with the count). A single
    object goes to `name` (default its own name); a prefix's objects to `name/` + their relative paths
    (default: at the top of the version)."""
    scheme_of(uri)
    limit = MAX_OBJECTS if max_objects is None else max_objects
    if limit < 1:
        raise ArtfsError(f"max_objects must be at least 1, not {limit}")
    listed: list[Listed] = objects_for(uri).find(uri, limit)
    out = []
    for item in listed:
        if item.rel == "":
            default = urllib.parse.unquote(posixpath.basename(urllib.parse.urlsplit(uri).path.rstrip("/")))
            path = name if name is not None else default
        else:
            path = f"{name}/{item.rel}" if name else item.rel
        try:
            path = check_path(path)
        except InvalidName as e:
            raise InvalidName(f"cannot refer to {item.pin.uri} as {path!r}: {e}") from None
        out.append((path, Source(item.pin, checksum), item.mtime_ns))
    return out


def _piece_digest(token: str, offset: int, length: int) -> bytes:
    """The cache key of an unverified piece: the pinned identity and the range, never the content."""
    return xxhash.xxh3_128_digest(token.encode() + struct.pack("<QQ", offset, length))


def source_refs(source: Source, progress: Callable[[int], None] | None = None) -> list[ChunkRef]:
    """The chunk refs of a reference entry: read and cut like stored content (checksum), or pinned
    MAX_CHUNK pieces (no checksum, nothing read). A read that meets a changed object fails (SourceChanged)."""
    token = source.token()
    size = source.pin.size
    if not source.checksum:
        if size == 0:
            return [ChunkRef(EMPTY, token, 0, 0, 0, FLAG_SOURCE | FLAG_UNVERIFIED)]
        return [ChunkRef(_piece_digest(token, off, min(MAX_CHUNK, size - off)), token, off,
                         min(MAX_CHUNK, size - off), min(MAX_CHUNK, size - off), FLAG_SOURCE | FLAG_UNVERIFIED)
                for off in range(0, size, MAX_CHUNK)]
    if size == 0:
        return [ChunkRef(EMPTY, token, 0, 0, 0, FLAG_SOURCE)]
    refs: list[ChunkRef] = []
    offset = 0
    for data in read_source_chunks(source.pin):
        refs.append(ChunkRef(digest(data), token, offset, len(data), len(data), FLAG_SOURCE))
        offset += len(data)
        if progress:
            progress(len(data))
    return refs


def read_source_chunks(pin: Pin) -> Iterator[memoryview]:
    """The pinned object's content-defined chunks (the cuts chunker.cut makes of its bytes), read once,
    front to back; each is valid until the next is asked for. A changed object fails (SourceChanged)."""
    if pin.size == 0:
        return
    stream = objects_for(pin.uri).open(pin)
    got = 0
    try:
        for data in _cut_stream(stream):
            got += len(data)
            yield data
    finally:
        stream.close()
    if got != pin.size:
        raise changed(pin, f"changed while it was being read ({got:,} of {pin.size:,} bytes)")


class _Prepended:
    """A stream with its first bytes already read (to see whether it is one small chunk)."""

    def __init__(self, head: bytes, rest: Stream) -> None:
        self.head, self.rest = head, rest

    def read(self, n: int = -1) -> bytes:
        if self.head:
            out, self.head = (self.head, b"") if n < 0 or n >= len(self.head) else (self.head[:n], self.head[n:])
            return out
        return self.rest.read(n)


def _cut_stream(stream: Stream) -> Iterable[memoryview]:
    """The same cuts chunker.cut makes of the whole object, from a stream that cannot seek."""
    head = stream.read(MIN_CHUNK + 1)
    if len(head) <= MIN_CHUNK:
        return [memoryview(head)] if head else []
    cdc = FastCDC(avg_size=AVG_CHUNK, min_size=MIN_CHUNK, max_size=MAX_CHUNK)
    return (c.data for c in cdc.cut_stream(_Prepended(head, stream)))


# --- reading --------------------------------------------------------------------------------------


def fetch_source_span(span: list[ChunkRef]) -> tuple[int, dict[bytes, bytes | memoryview]]:
    """(bytes fetched, digest → data) for chunks of one source by offset: one pinned ranged read, every
    chunk verified against its digest (unless recorded without checksum). Never bytes of another state."""
    source = parse_token(span[0].pack)
    start, end = span[0].offset, max(r.end for r in span)
    blob = objects_for(source.uri).read(source.pin, start, end - start) if end > start else b""
    view = memoryview(blob).toreadonly()
    out: dict[bytes, bytes | memoryview] = {}
    for r in span:
        data = view[r.offset - start : r.end - start]
        if not r.flags & FLAG_UNVERIFIED and (len(data) != r.raw_len or digest(data) != r.digest):
            raise SourceChanged(f"referenced object {source.uri} does not hold the pinned bytes at "
                                f"{r.offset:,}+{r.raw_len:,} (pinned: {source.pin.describe()})")
        out[r.digest] = data
    return len(blob), out


def check_source(source: Source) -> str | None:
    """Why `source` no longer matches its pin (one HEAD or stat), or None."""
    try:
        return objects_for(source.uri).check(source.pin)
    except ArtfsError as e:
        return str(e)


# --- staging (`artfs ref add`) ----------------------------------------------------------------------


def staged_reference(source: Source) -> tuple[str, bytes]:
    """(token, chunk refs packed against the one-entry table [token]) of a reference about to be staged:
    what a staging area keeps per referenced file (read now when checksumming, as `put --ref` does)."""
    token = source.token()
    return token, pack_refs(source_refs(source), {token: 0})
