"""Block-at-a-time manifest validation: the column-wise checks agree with the one-entry-at-a-time rules, and a
bad block is refused when it is reached — by a lookup, a listing, an index build — and never feeds dedup."""

from __future__ import annotations

import random
from bisect import bisect_right
from itertools import islice

import pytest

import artfs.core.manifest as manifest
from artfs.core.chunker import MAX_CHUNK
from artfs.core.index import StoreIndex
from artfs.core.manifest import DIR, FILE, LINK, Entry, ManifestWriter, path_key
from artfs.core.manifest_file import ManifestFile, _validate, _validate_block
from artfs.core.packs import FLAG_SOURCE, FLAG_ZSTD, PACK_MAX, REF, plain_raw_lengths, ref_problem
from artfs.core.references import Source
from artfs.errors import IntegrityError
from artfs.storage.sources.common import Pin
from tests.support.manifests import read_parts, write_parts

SOURCE = Source(Pin("file:///data/raw.bin", 1 << 20, mtime_ns=1))
LOCATIONS: list[Source | None] = [None, None, SOURCE]  # two packs, then an external source
EXTERNAL = frozenset({2})


def _ref(pack: int = 0, offset: int = 0, stored: int = 100, raw: int = 100, flags: int = 0) -> bytes:
    return REF.pack(b"\x07" * 16, pack, offset, stored, raw, flags)


def _file(path: str, *refs: bytes, size: int | None = None) -> Entry:
    total = sum(REF.unpack(r)[4] for r in refs)
    return Entry(path, FILE, 0o644, 1, total if size is None else size, b"".join(refs), b"\x01" * 16)


def _mutations(rng: random.Random) -> list[Entry]:
    """Entries artfs writes, and each way a crafted manifest could differ from them."""
    good = [
        Entry("d", DIR, 0o755, 1, 0), _file("d/a", _ref()), _file("d/empty"),
        _file("d/big", _ref(1, 0, 50, 100, FLAG_ZSTD), _ref(0, 200, 7, 7)),
        _file("d/src", _ref(2, 10, 5, 5, FLAG_SOURCE)), Entry("d/l", LINK, 0o777, 1, 1, b"a"),
        _file("d/naïve", _ref()), _file("d/" + "x" * 255, _ref()), _file("/".join(["y" * 200] * 3), _ref()),
        # at the edges of packs.plain_raw_lengths' byte tests (offset < 2**25, raw < MAX_CHUNK), both sides
        _file("e", _ref(offset=(1 << 25) - 1)), _file("e", _ref(offset=1 << 25)), _file("e", _ref(1, 1 << 24)),
        _file("e", _ref(raw=MAX_CHUNK, stored=MAX_CHUNK)), _file("e", _ref(raw=MAX_CHUNK - 1, stored=MAX_CHUNK - 1)),
        _file("e", _ref(raw=1, stored=1)), _file("e", _ref(raw=256, stored=256)),
        _file("e", _ref(raw=1 << 16, stored=1 << 16)), _file("e", _ref(offset=PACK_MAX - 100)),
    ]
    bad = [
        Entry("", DIR, 0o755, 1, 0), Entry("a//b", DIR, 0o755, 1, 0), Entry("/abs", DIR, 0o755, 1, 0),
        Entry("a/./b", DIR, 0o755, 1, 0), Entry("a/..", DIR, 0o755, 1, 0), Entry("..", DIR, 0o755, 1, 0),
        Entry("a/", DIR, 0o755, 1, 0), Entry("a\x00b", DIR, 0o755, 1, 0), Entry("d/" + "x" * 256, DIR, 0o755, 1, 0),
        Entry("/".join(["y" * 250] * 17), DIR, 0o755, 1, 0), Entry("k", 7, 0o644, 1, 0),
        Entry("l", LINK, 0o777, 1, 5, b"../.."), _file("f", _ref(pack=3)), _file("f", _ref(flags=2)),
        _file("f", _ref(flags=FLAG_SOURCE)), _file("f", _ref(raw=0, stored=0)),
        _file("f", _ref(raw=MAX_CHUNK + 1, stored=MAX_CHUNK + 1)), _file("f", _ref(stored=99)),
        _file("f", _ref(stored=101, raw=100, flags=FLAG_ZSTD)), _file("f", _ref(offset=PACK_MAX - 99)),
        _file("f", _ref(offset=1 << 32)), _file("f", _ref(), size=101), _file("f", _ref(), _ref(), size=100),
        _file("f", _ref(2, 10, 5, 5, 0)), _file("f", _ref(2, 0, 5, 5, FLAG_SOURCE), _ref()),
        Entry("f", FILE, 0o644, 1, 100, _ref()[:-1]), Entry("f", FILE, 0o644, 1, 0, b"\x00" * 40 + b"\x01"),
        _file("f", size=-1), _file("f", _ref(flags=1 << 8)), _file("f", _ref(pack=1 << 8)),
        _file("f", _ref(raw=1 << 24, stored=1 << 24)), _file("f", _ref(offset=PACK_MAX - 99)),
        _file("f", _ref(), size=1 << 32),
    ]
    # wrong together, right in sum: two chunks of one file would give the other its size
    pair = [_file("f1", _ref(), _ref(), size=100), _file("f2", size=100)]
    picked = [rng.choice(good) for _ in range(rng.randrange(0, 6))]
    if rng.random() < 0.5:
        picked.insert(rng.randrange(len(picked) + 1), rng.choice(bad))
    elif rng.random() < 0.1:
        picked += pair
    return picked


def _refused_one_by_one(entries: list[Entry]) -> bool:
    try:
        for e in entries:
            _validate(e, LOCATIONS, "t")
    except IntegrityError:
        return True
    return False


def test_block_checks_agree_with_entry_checks():
    """Whatever a block holds, it is refused exactly when one of its entries would be, one by one."""
    rng = random.Random(13)
    refused = 0
    for _ in range(3000):
        entries = _mutations(rng)
        expect = _refused_one_by_one(entries)
        try:
            _validate_block(entries, LOCATIONS, EXTERNAL, "t")
            got = False
        except IntegrityError as e:
            assert "rejected" in str(e)
            got = True
        assert got == expect, entries
        refused += got
    assert 1000 < refused < 2000  # both sides exercised


def _huge_with_a_bad_block(tmp_path, monkeypatch):
    """A manifest of many blocks whose block `bad` holds one crafted chunk location (stored ≠ raw, raw)."""
    monkeypatch.setattr(manifest, "BLOCK_BYTES", 300)
    w = ManifestWriter(tmp_dir=str(tmp_path))
    w.pack_index["ab" * 16] = 0
    names = [f"f{i:03d}" for i in range(120)]
    for i, name in enumerate(names):
        digest = bytes([i]) * 16
        ref = REF.pack(digest, 0, i * 100, 99 if name == "f100" else 100, 100, 0)
        w.add(Entry(name, FILE, 0o644, 1, 100, ref, digest))
    path, header = w.finish()
    with ManifestFile(path) as mf:
        bad = next(i for i, (first, _, _) in enumerate(header.blocks) if first > path_key("f100")) - 1
        assert 2 < bad < len(header.blocks) - 1
        neighbours = [n for n in names if mf._first_keys[bad] <= path_key(n) < mf._first_keys[bad + 1]]
    return path, names, neighbours


def test_a_bad_block_is_refused_when_reached(tmp_path, monkeypatch):
    path, names, neighbours = _huge_with_a_bad_block(tmp_path, monkeypatch)
    assert len(neighbours) > 1
    with ManifestFile(path, "m") as mf:
        assert mf.lookup("f000") is not None and mf.lookup("f119") is not None  # other blocks serve
        for name in neighbours:  # good entries of the bad block are not served either
            with pytest.raises(IntegrityError, match="rejected"):
                mf.lookup(name)
        with pytest.raises(IntegrityError, match="stored length"):
            list(mf.children(""))
        assert [e.name for e in islice(mf.children(""), 3)] == names[:3]  # a listing serves up to the bad block
        with pytest.raises(IntegrityError):
            list(mf.frames())


def test_a_bad_block_fails_the_index_and_feeds_no_dedup(tmp_path, monkeypatch):
    path, _, _ = _huge_with_a_bad_block(tmp_path, monkeypatch)
    index = StoreIndex(str(tmp_path / "index"), "file:///store")
    try:
        mid = "cd" * 16
        with pytest.raises(IntegrityError):
            index.build(mid, path)
        assert index.header(mid) is None  # not marked built: nothing answers from a partial index
        with pytest.raises(IntegrityError):
            index.build_chunks(mid, path)
        assert index.known_chunk(bytes([0]) * 16) is None  # an early, good entry: still no dedup source
    finally:
        index.close()


def _tree_with_a_bad_entry(tmp_path, monkeypatch, bad: str) -> str:
    """Directories a, b, c of 40 files each and a file z, over many small blocks; the entry at `bad` has a
    crafted chunk location."""
    monkeypatch.setattr(manifest, "BLOCK_BYTES", 300)
    w = ManifestWriter(tmp_dir=str(tmp_path))
    w.pack_index["ab" * 16] = 0
    paths = [p for d in "abc" for p in [d, *(f"{d}/f{i:02d}" for i in range(40))]] + ["z"]
    for i, path in enumerate(paths):
        if len(path) == 1 and path != "z":
            w.add(Entry(path, DIR, 0o755, 1, 0))
            continue
        ref = REF.pack(bytes([i]) * 16, 0, i * 100, 99 if path == bad else 100, 100, 0)
        w.add(Entry(path, FILE, 0o644, 1, 100, ref, bytes([i]) * 16))
    return w.finish()[0]


def test_listing_a_root_peeks_at_blocks_and_serves_only_what_it_validated(tmp_path, monkeypatch):
    """A root listing skips subtrees, decoding only the paths of the blocks it lands in and validating the
    entries it hands out alone: an entry it passes over is not served (nor judged) until a listing or
    lookup decodes its block whole — and then the whole block is refused."""
    path = _tree_with_a_bad_entry(tmp_path, monkeypatch, "b/f00")
    with ManifestFile(path, "m") as mf:
        block_of_b = bisect_right(mf._first_keys, path_key("b")) - 1
        assert block_of_b == bisect_right(mf._first_keys, path_key("b/f00")) - 1 > 0  # b and b/f00 together
        mf.last_used = 0.0
        assert [e.name for e in mf.children("")] == ["a", "b", "c", "z"]  # b validated alone, b/f00 unused
        assert block_of_b not in mf._decoded  # a block peeked at is not kept as if validated
        assert mf.last_used > 0  # peeking is use: a background index build waits for it to stop
        with pytest.raises(IntegrityError, match="stored length"):
            list(mf.children("b"))
        with pytest.raises(IntegrityError, match="stored length"):
            mf.lookup("b")  # its block decoded whole now: refused whole
        assert [e.name for e in islice(mf.children("a"), 2)] == ["f00", "f01"]


def test_a_bad_entry_a_root_listing_hands_out_is_refused(tmp_path, monkeypatch):
    path = _tree_with_a_bad_entry(tmp_path, monkeypatch, "z")
    with ManifestFile(path, "m") as mf, pytest.raises(IntegrityError, match="stored length"):
        list(mf.children(""))


def test_quick_ref_checks_never_accept_what_the_exact_ones_refuse():
    """packs.plain_raw_lengths' byte-column shortcut, over refs near every edge it tests, with many packs
    and few: a run is accepted exactly when `ref_problem` finds nothing in any ref and each names a pack."""
    rng = random.Random(7)
    edges = {
        "pack": [0, 1, 2, 255, 256, 299, 1 << 24],
        "offset": [0, 1, (1 << 24) - 1, (1 << 25) - 1, 1 << 25, PACK_MAX - MAX_CHUNK, PACK_MAX - 1, 1 << 32],
        "raw": [0, 1, 255, 256, 1 << 16, (1 << 22) - 1, MAX_CHUNK, MAX_CHUNK + 1, 1 << 24, 1 << 31],
        "flags": [0, 0, 0, FLAG_ZSTD, 2, 1 << 8, 1 << 24],
    }
    accepted = 0
    for _ in range(4000):
        npacks = rng.choice([1, 3, 256, 300])
        external = frozenset({1}) if npacks > 1 and rng.random() < 0.3 else frozenset()
        refs = []
        for _ in range(rng.randrange(1, 4)):
            if rng.random() < 0.6:  # what small files make, to draw the edge cases beside
                size = rng.randrange(1, 1 << 20)
                refs.append((0, rng.randrange(1 << 25), size, size, 0))
                continue
            raw = rng.choice(edges["raw"])
            flags = rng.choice(edges["flags"])
            stored = raw if rng.random() < 0.8 else rng.choice([raw - 1, raw + 1, 1, 0])
            refs.append((rng.choice(edges["pack"]), rng.choice(edges["offset"]), max(stored, 0), raw, flags))
        expect = all(p < npacks and p not in external and ref_problem(o, st, r, f) is None
                     for p, o, st, r, f in refs)
        got = plain_raw_lengths(b"".join(_ref(*r) for r in refs), npacks, external)
        assert (got is not None) == expect, (refs, npacks, external)
        if got is not None:
            assert list(got) == [r[3] for r in refs]
            accepted += 1
    assert 300 < accepted < 3700  # both sides exercised


def _rebuilt(path: str, out: str, mutate) -> None:
    """The manifest at `path` with its first block's decompressed bytes passed through `mutate`."""
    header, blocks = read_parts(path)
    write_parts(out, header, [mutate(blocks[0]), *blocks[1:]])


def test_garbled_blocks_are_refused_or_read_whole(tmp_path, monkeypatch):
    """Bytes of a block changed, cut or added (as a crafted manifest could hold them): reading it, listing
    it or looking a path up in it either refuses the manifest (IntegrityError) or gives entries that pass
    the one-by-one checks — never another error, never an unchecked entry."""
    monkeypatch.setattr(manifest, "BLOCK_BYTES", 400)
    w = ManifestWriter(tmp_dir=str(tmp_path))
    w.pack_index["ab" * 16] = 0
    w.add(Entry("d", DIR, 0o755, 1, 0))
    for i in range(40):
        w.add(Entry(f"d/f{i:02d}", FILE, 0o644, 1, 100, _ref(offset=i * 100), bytes([i]) * 16))
    path, header = w.finish()
    assert header.format == 2 and len(header.blocks) > 3
    rng = random.Random(5)
    refused = 0
    for n in range(300):
        def mutate(raw: bytes) -> bytes:
            b = bytearray(raw)
            how = rng.randrange(3)
            k = rng.randrange(len(b))
            if how == 0:
                b[k] ^= 1 << rng.randrange(8)
            elif how == 1:
                del b[k:]
            else:
                b[k:k] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
            return bytes(b)

        bad = str(tmp_path / f"bad{n}")
        _rebuilt(path, bad, mutate)
        try:
            with ManifestFile(bad, "t") as mf:
                entries = [e for _, e, _ in mf.coded_frames()]
                listed = list(mf.children("d")) + list(mf.children(""))
                mf.lookup("d/f00")
            for e in entries + listed:
                _validate(e, [None], "t")
        except IntegrityError:
            refused += 1
    assert refused > 150  # most garbling is caught; what is not is a block that still holds valid entries
