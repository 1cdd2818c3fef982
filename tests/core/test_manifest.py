import os
import struct

import msgspec
import pytest

from artfs.core.manifest import DIR, FILE, LINK, Entry, ManifestWriter, diff_entries, path_key
from artfs.core.manifest_file import MAX_BLOCK_ENTRIES, ManifestFile, read_manifest
from artfs.core.packs import REF, ChunkRef
from artfs.errors import IntegrityError
from tests.support.manifests import read_parts, write_parts


def _ref(i: int, size: int) -> ChunkRef:
    return ChunkRef(bytes([i]) * 16, f"{i % 3:032x}", i * 100, size, size, 0)


def _write(tmp_path, entries):
    w = ManifestWriter(tmp_dir=str(tmp_path))
    for e in entries:
        if e[1] == FILE:
            w.add_file(e[0], 0o644, 1, sum(r.raw_len for r in e[2]), e[2])
        elif e[1] == DIR:
            w.add(Entry(e[0], DIR, 0o755, 1, 0))
        else:
            w.add(Entry(e[0], LINK, 0o777, 1, len(e[2]), e[2].encode()))
    return w.finish()


def test_roundtrip_and_order(tmp_path):
    entries = [("a", DIR), ("a/b", FILE, [_ref(1, 10), _ref(2, 5)]), ("a/c", LINK, "b"),
               ("a-c", FILE, []), ("z", FILE, [_ref(3, 7)])]
    path, header = _write(tmp_path, entries)
    assert header.entries == 5 and header.files == 3 and header.bytes == 22
    h2, it = read_manifest(path)
    got = list(it)
    assert [e.path for e in got] == ["a", "a/b", "a/c", "a-c", "z"]
    assert h2 == header
    refs = got[1].refs(h2.packs)
    assert refs == [_ref(1, 10), _ref(2, 5)]
    assert got[2].target == "b"


def test_digest_is_deterministic_and_content_based(tmp_path):
    a = [("d", DIR), ("d/f", FILE, [_ref(1, 10)])]
    _, h1 = _write(tmp_path, a)
    # Same content elsewhere in packs: same digest.
    moved = ChunkRef(bytes([1]) * 16, "f" * 32, 999, 4, 10, 1)
    _, h2 = _write(tmp_path, [("d", DIR), ("d/f", FILE, [moved])])
    _, h3 = _write(tmp_path, [("d", DIR), ("d/g", FILE, [_ref(1, 10)])])
    assert h1.digest == h2.digest != h3.digest


def test_out_of_order_rejected_by_writer(tmp_path):
    w = ManifestWriter(tmp_dir=str(tmp_path))
    w.add(Entry("b", DIR, 0o755, 0, 0))
    with pytest.raises(ValueError):
        w.add(Entry("a", DIR, 0o755, 0, 0))


def _frame(o) -> bytes:
    """An entry as format 1 framed it: its length, then its msgpack."""
    b = msgspec.msgpack.encode(o)
    return struct.pack("<I", len(b)) + b


def _raw_manifest(tmp_path, header, entries, block: bytes | None = None):
    """A manifest written by hand, the way a hostile bucket could hold one: one block in the header's
    format (1: framed entries, 2: one array), or the bytes `block` decompresses to."""
    if block is None:
        block = (b"".join(_frame(e) for e in entries) if header["format"] == 1
                 else msgspec.msgpack.encode(entries))
    header = {**header, "blocks": [[path_key(entries[0][0]), 0, 0]]}
    return write_parts(os.path.join(tmp_path, "evil"), header, [block])


@pytest.mark.parametrize("fmt", [1, 2])
@pytest.mark.parametrize("bad_path", ["../etc/passwd", "/abs", "a//b", "a\x00"])
def test_hostile_manifest_rejected(tmp_path, bad_path, fmt):
    header = {"format": fmt, "packs": [], "entries": 1, "files": 0, "bytes": 0, "digest": "0" * 32}
    path = _raw_manifest(tmp_path, header, [[bad_path, DIR, 0o755, 0, 0, b"", b""]])
    _, it = read_manifest(path)
    with pytest.raises(IntegrityError, match="rejected"):
        list(it)


def test_escaping_symlink_rejected(tmp_path):
    header = {"format": 1, "packs": [], "entries": 1, "files": 0, "bytes": 0, "digest": "0" * 32}
    path = _raw_manifest(tmp_path, header, [["l", LINK, 0o777, 0, 6, b"../../x", b""]])
    with pytest.raises(IntegrityError):
        list(read_manifest(path)[1])


def test_truncated_manifest_rejected(tmp_path):
    path, _ = _write(tmp_path, [("a", DIR), ("b", DIR)])
    with open(path, "rb") as f:
        data = f.read()
    for cut in (data[:-3], data[1:], data[: len(data) // 2]):
        with open(path, "wb") as f:
            f.write(cut)
        with pytest.raises(IntegrityError):
            list(read_manifest(path)[1])


def test_lookup_and_children_without_an_index(tmp_path, monkeypatch):
    import artfs.core.manifest as manifest
    from artfs.core.manifest_file import ManifestFile

    monkeypatch.setattr(manifest, "BLOCK_BYTES", 200)  # many blocks
    entries = [("d", DIR)] + [(f"d/{i:03d}", FILE, [_ref(i % 200, 10)]) for i in range(100)]
    entries += [("d/sub", DIR), ("d/sub/x", FILE, []), ("d-e", DIR), ("z", FILE, [])]
    entries.sort(key=lambda e: path_key(e[0]))
    path, header = _write(tmp_path, entries)
    assert len(header.blocks) > 10
    with ManifestFile(path) as mf:
        assert mf.lookup("d/042").size == 10
        assert mf.lookup("d/sub/x").kind == FILE
        assert mf.lookup("d/nope") is None and mf.lookup("0") is None and mf.lookup("zz") is None
        assert [e.name for e in mf.children("")] == ["d", "d-e", "z"]
        names = [e.name for e in mf.children("d")]
        assert names == [f"{i:03d}" for i in range(100)] + ["sub"]
        assert [e.name for e in mf.children("d/sub")] == ["x"]
        assert [e.name for e in mf.children("d", after="097")] == ["098", "099", "sub"]
        assert [e.name for e in mf.children("", after="d")] == ["d-e", "z"]
        assert list(mf.children("d-e")) == []
        assert [e.path for e, _ in mf.frames()] == [e[0] for e in entries]


def test_path_key_orders_like_a_walk():
    paths = ["a-c", "a/b", "a", "a/b/c", "b"]
    assert sorted(paths, key=path_key) == ["a", "a/b", "a/b/c", "a-c", "b"]


def test_diff_entries():
    def f(p, d):
        return Entry(p, FILE, 0o644, 0, 1, b"", d)

    old = [f("a", b"1"), f("b", b"2"), f("c", b"3")]
    new = [f("b", b"2"), f("c", b"4"), f("d", b"5")]
    assert list(diff_entries(iter(old), iter(new))) == [
        ("removed", "a"), ("modified", "c"), ("added", "d")]


@pytest.mark.parametrize("fmt", [1, 2])
@pytest.mark.parametrize(("offset", "stored", "raw", "flags", "why"), [
    (0, 2**32 - 1, 2**32 - 1, 0, "a chunk of"),  # a 4 GiB chunk (4,096 of them: 16 TiB): no chunker makes that
    (0, 0, 0, 0, "a chunk of 0 bytes"),
    (1 << 40, 100, 100, 0, "offset"),  # far past the end of any pack
    (0, 200, 100, 0, "stored length"),  # stored raw, yet a different length
    (0, 100, 100, 7, "flags"),
])
def test_crafted_chunk_locations_rejected(tmp_path, offset, stored, raw, flags, why, fmt):
    """Chunk tables that add up but could not have been written by artfs are rejected at decode, before any
    reader, export or dedup sees them."""
    ref = REF.pack(b"\x01" * 16, 0, offset, stored, raw, flags)
    header = {"format": fmt, "packs": ["ab" * 16], "entries": 1, "files": 1, "bytes": raw, "digest": "0" * 32}
    path = _raw_manifest(tmp_path, header, [["f", FILE, 0o644, 0, raw, ref, b""]])
    with pytest.raises(IntegrityError, match=why):
        list(read_manifest(path)[1])


def test_a_dedup_source_is_validated_whole(tmp_path):
    """One bad entry late in a manifest: none of its chunk locations become dedup sources."""
    from artfs.core.index import StoreIndex

    good = REF.pack(b"\x02" * 16, 0, 0, 100, 100, 0)
    header = {"format": 1, "packs": ["ab" * 16], "entries": 2, "files": 1, "bytes": 100, "digest": "0" * 32}
    path = _raw_manifest(tmp_path, header, [["a", FILE, 0o644, 0, 100, good, b""],
                                            ["b/../../x", DIR, 0o755, 0, 0, b"", b""]])
    index = StoreIndex(str(tmp_path / "index"), "file:///store")
    try:
        with pytest.raises(IntegrityError):
            index.build_chunks("cd" * 16, path)
        assert index.known_chunk(b"\x02" * 16) is None
    finally:
        index.close()


def _as_format_1(path: str, out: str) -> None:
    """The manifest at `path` (format 2) as format 1 wrote it: each block's entries framed, not one array."""
    header, blocks = read_parts(path)
    framed = [b"".join(struct.pack("<I", len(bytes(r))) + bytes(r)
                       for r in msgspec.msgpack.decode(block, type=list[msgspec.Raw])) for block in blocks]
    write_parts(out, {**header, "format": 1}, framed)


def test_format_1_manifests_read_as_before(tmp_path, monkeypatch):
    """Manifests written before blocks were one array (format 1: each entry framed) read the same: entries,
    lookups, listings, and the encoded forms an index stores."""
    import artfs.core.manifest as manifest

    monkeypatch.setattr(manifest, "BLOCK_BYTES", 300)
    entries = [("d", DIR)] + [(f"d/{i:03d}", FILE, [_ref(i % 200, 10)]) for i in range(60)] + [("z", LINK, "d")]
    path, header = _write(tmp_path, entries)
    assert header.format == 2 and len(header.blocks) > 5
    old = str(tmp_path / "old")
    _as_format_1(path, old)
    with ManifestFile(path) as new_mf, ManifestFile(old) as old_mf:
        assert old_mf.header.format == 1
        assert [(c, e, bytes(r)) for c, e, r in old_mf.coded_frames()] == [
            (c, e, bytes(r)) for c, e, r in new_mf.coded_frames()]
        assert old_mf.lookup("d/042") == new_mf.lookup("d/042") is not None
        assert list(old_mf.children("")) == list(new_mf.children("")) and len(list(old_mf.children("d"))) == 60
    assert list(read_manifest(old)[1]) == list(read_manifest(path)[1])


def test_a_block_announcing_too_many_entries_is_refused_unread(tmp_path):
    """A format-2 block is one array: one whose header claims more entries than a block may hold is refused
    before any is decoded (a crafted 64 MiB block of tiny entries would otherwise make millions)."""
    header = {"format": 2, "packs": [], "entries": 1, "files": 0, "bytes": 0, "digest": "0" * 32}
    entry = ["a", DIR, 0o755, 0, 0, b"", b""]
    block = b"\xdd" + struct.pack(">I", MAX_BLOCK_ENTRIES + 1) + msgspec.msgpack.encode(entry)
    path = _raw_manifest(tmp_path, header, [entry], block)
    with pytest.raises(IntegrityError, match="more than"):
        list(read_manifest(path)[1])


@pytest.mark.parametrize("tail", [b"\x00", msgspec.msgpack.encode(["b", DIR, 0o755, 0, 0, b"", b""])])
def test_bytes_after_a_block_array_are_refused(tmp_path, tail):
    header = {"format": 2, "packs": [], "entries": 1, "files": 0, "bytes": 0, "digest": "0" * 32}
    entry = ["a", DIR, 0o755, 0, 0, b"", b""]
    path = _raw_manifest(tmp_path, header, [entry], msgspec.msgpack.encode([entry]) + tail)
    with pytest.raises(IntegrityError, match="undecodable"):
        list(read_manifest(path)[1])


def _rows_one_by_one(mf, path, after=None, limit=None):
    """What children_rows must give: the rows of children_coded's entries."""
    cut = len(path) + 1 if path else 0
    rows = [(e.path[cut:].encode("utf-8", "surrogateescape"), c, e.kind, e.mode, e.size, e.mtime_ns)
            for c, e in mf.children_coded(path, after)]
    return rows if limit is None else rows[:limit]


def test_listing_rows_match_the_entries(tmp_path, monkeypatch):
    """children_rows (runs of children made into rows at once) gives what the entries say, in every
    directory, resumed anywhere, cut at any limit — with subtrees spanning blocks and non-ASCII names."""
    import artfs.core.manifest as manifest

    monkeypatch.setattr(manifest, "BLOCK_BYTES", 250)  # many blocks: subtrees and runs cross them
    entries = [("a", DIR), ("a/b", DIR)] + [(f"a/b/{i:02d}", FILE, [_ref(i, 5)]) for i in range(30)]
    entries += [("a/c", FILE, [_ref(1, 3)]), ("a/d", DIR), ("a/d/e", DIR), ("a/d/e/f", FILE, []),
                ("a/é", LINK, "c"), ("a-z", DIR), ("b", FILE, [])]
    entries += [(f"b{i:02d}", FILE, [_ref(i, 2)]) for i in range(25)]
    entries.sort(key=lambda e: path_key(e[0]))
    path, header = _write(tmp_path, entries)
    assert len(header.blocks) > 8
    dirs = [""] + [e[0] for e in entries if e[1] == DIR]
    with ManifestFile(path) as mf:
        for d in dirs:
            whole = _rows_one_by_one(mf, d)
            assert mf.children_rows(d) == whole
            names = [r[0].decode() for r in whole]
            for k, after in enumerate([None, *names]):
                for limit in (1, 2, 7, None):
                    assert mf.children_rows(d, after, limit) == whole[k:][:limit], (d, after, limit)
        assert [r[0] for r in mf.children_rows("a")] == [b"b", b"c", b"d", "é".encode()]


def test_a_listing_skips_entries_without_their_directory(tmp_path):
    """A crafted manifest may hold `d/x/y` with no `d/x`: listing `d` shows neither `x` nor a name with
    a slash in it, as entry-by-entry listing never did; the rest of `d` is listed."""
    w = ManifestWriter(tmp_dir=str(tmp_path))
    for p in ["d", "d/a", "d/x/y", "d/x/y2", "d/z"]:
        w.add(Entry(p, DIR if p == "d" else FILE, 0o755 if p == "d" else 0o644, 1, 0))
    path, _ = w.finish()
    with ManifestFile(path) as mf:
        assert [r[0] for r in mf.children_rows("d")] == [b"a", b"z"]
        assert [e.path for e in mf.children("d")] == ["d/a", "d/z"]


def test_the_next_directory_of_a_walk(tmp_path, monkeypatch):
    """next_directory(D): the directory a walk that lists D and then enters its subdirectories in name order
    visits after D — found in the blocks D's listing decoded (and the one after), else None."""
    import artfs.core.manifest as manifest

    monkeypatch.setattr(manifest, "BLOCK_BYTES", 250)
    entries = [("a", DIR)] + [(f"a/f{i:02d}", FILE, [_ref(i, 2)]) for i in range(12)]
    entries += [("a/s", DIR), ("a/s/t", DIR), ("a/s/t/x", FILE, []), ("a/z", FILE, []), ("b", DIR), ("c", FILE, [])]
    entries += [("d", DIR)] + [(f"d/g{i:03d}", FILE, [_ref(i, 2)]) for i in range(60)] + [("e", DIR)]
    entries.sort(key=lambda e: path_key(e[0]))
    path, header = _write(tmp_path, entries)
    assert len(header.blocks) > 6
    walk = ["", "a", "a/s", "a/s/t", "b", "d", "e"]  # pre-order: a directory, then its subdirectories
    with ManifestFile(path) as mf:
        for here, after in zip(walk, walk[1:] + [None], strict=True):
            mf.children_rows(here)  # its listing decodes its blocks
            found = mf.next_directory(here)
            assert (found[1].path if found else None) == after, here
            if found:
                assert mf.entry_at(found[0]) == found[1]
    with ManifestFile(path) as cold:
        assert cold.next_directory("d") is None  # nothing of d decoded here: no guess
