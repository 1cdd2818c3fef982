"""Table 2 (issue 3): reading through `artfs mount` beside local disk, boto3, rclone mount and s3fs.

The same bytes are in the store twice: as artfs packs (`artfs put`, untimed) and as one S3 object per
file (boto3, untimed) for boto3, rclone and s3fs. Each kind of measurement gets a fresh mount with an
empty cache dir, and the page cache is dropped before every cold read, so no figure is flattered by an
earlier one. File-system reads run in a child process (bench/probe.py) that can be killed if a mount hangs.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from bench.common import (
    MB,
    CommandFailed,
    ProbeFailed,
    Sample,
    drop_caches,
    fmt,
    fmt_num,
    fmt_ratio,
    fresh_dir,
    log,
    md_table,
    probe,
    ratio,
    remove_tree,
    timed,
    verdict,
)
from bench.data import Dataset, Scale, make_many_files
from bench.mounts import Artfs, ArtfsMount, Mount, MountUnavailable, NullS3Mount, RcloneMount, S3fsMount
from bench.probe import percentile_ms, pread_offsets
from bench.s3peer import POOL, S3

NULL_S3, NULL_S3_COPY = "null fs over S3", "null fs over S3 + local copy"
NULL_S3_LMDB = "null fs over S3 + LMDB copy, digests"
NULL_S3_KEEP = {NULL_S3: None, NULL_S3_COPY: "file", NULL_S3_LMDB: "lmdb"}
SYSTEMS = ("local disk", "boto3", "artfs", "rclone", "s3fs", NULL_S3, NULL_S3_COPY, NULL_S3_LMDB, "S3 ceiling")
LABELS = {"local disk": "local disk", "boto3": "boto3 download / get_object", "artfs": "**artfs mount**",
          "rclone": "rclone mount, vfs-cache full", "s3fs": "s3fs",
          NULL_S3: "null pyfuse3 fs over S3 (the floor)",
          NULL_S3_COPY: "the same, keeping a local copy (the floor of a caching fs)",
          NULL_S3_LMDB: "the same, the copy in LMDB under checked digests (the floor of artfs's design)",
          "S3 ceiling": "the S3 server's ceiling"}
CEILING_PART = 8 << 20  # the server's ceiling: ranged GETs of this size, CEILING_THREADS at once, into memory
CEILING_THREADS = 8
METRICS = {  # key: (column, unit)
    "cold": ("cold seq read", "MB/s"),
    "warm": ("cache-warm read, page cache dropped", "MB/s"),
    "hot": ("page-cache-hot re-read", "MB/s"),
    "small": ("small files, cold, dir order", "files/s"),
    "find": ("`find` over them", "s"),
    "preads": ("random 4 KiB preads", "ops/s"),
    "preads_p99": ("their p99 latency", "ms"),
    "ttfb": ("first byte, {many}-file version", "ms"),
    "rss": ("daemon peak RSS", "MiB"),
}
RAW = "mount/raw"  # one object per file, for boto3, rclone, s3fs
ART = "mount/artfs"  # the artfs store
SEED = 7
TIMEOUT = {"seq": 600, "small": 1200, "find": 600, "preads": 900, "ttfb": 120}

Opener = Callable[[], contextlib.AbstractContextManager]


class MountBench:
    def __init__(self, artfs: Artfs, s3: S3, data: Dataset, work: str, reps: int, scale: Scale) -> None:
        self.artfs, self.s3, self.data, self.work, self.reps, self.scale = artfs, s3, data, work, reps, scale
        self.res = {s: {m: Sample(unit=u) for m, (_, u) in METRICS.items()} for s in SYSTEMS}
        self.broken: dict[str, str] = {}  # system → why it cannot be measured at all
        self.readahead: dict[str, str] = {}
        self.many_files = 0
        self.many_path = ""
        self.notes: list[str] = []

    # --- setup ---

    def setup(self) -> None:
        d = self.data
        log(f"Table 2 setup: {d.small_count:,} + 1 objects for the peers (boto3, {POOL} threads)")
        self.s3.upload_file(d.big, f"{RAW}/big/big.bin")
        self.s3.put_files(d.small_dir, d.small_names, f"{RAW}/small/", threads=POOL)
        why = self.artfs.has_command("mount")
        if why:
            self.broken["artfs"] = why
            return
        cache = fresh_dir(self.work, "cache-setup")
        many_root = fresh_dir(self.work, "many")
        try:
            log("Table 2 setup: artfs put of the data")
            self.artfs.put(d.root, "bench", self.s3.uri(ART), cache)
            self.many_files = self.scale.many_files
            log(f"Table 2 setup: {self.many_files:,} tiny files, artfs put")
            self.many_path = make_many_files(many_root, self.many_files)
            t, _ = self.artfs.put(many_root, "many", self.s3.uri(ART), cache)
            log(f"  put of {self.many_files:,} files: {t:.1f}s")
        except (CommandFailed, subprocess.TimeoutExpired, ValueError) as e:
            self.broken["artfs"] = f"`artfs put` failed: {getattr(e, 'reason', e)}"
            log(f"  artfs: n/a ({self.broken['artfs']})")
        finally:
            remove_tree(many_root)
            remove_tree(cache)

    # --- openers: a context that yields the directory holding big/ and small/ (and for artfs, many/) ---

    def _opener(self, system: str) -> Opener:
        if system == "artfs":
            def artfs_mount() -> Iterator[str]:
                m = ArtfsMount(self.artfs, fresh_dir(self.work, "mnt-artfs"), self.s3.uri(ART),
                               fresh_dir(self.work, "cache-artfs"))
                with self._mounted("artfs", m):
                    yield m.path
            return contextlib.contextmanager(artfs_mount)
        if system == "rclone":
            def rclone_mount() -> Iterator[str]:
                m = RcloneMount(fresh_dir(self.work, "mnt-rclone"), self.s3, RAW,
                                fresh_dir(self.work, "cache-rclone"), "full")
                with self._mounted("rclone", m):
                    yield m.path
            return contextlib.contextmanager(rclone_mount)
        if system == "s3fs":
            def s3fs_mount() -> Iterator[str]:
                m = S3fsMount(fresh_dir(self.work, "mnt-s3fs"), self.s3, RAW, fresh_dir(self.work, "s3fs-work"))
                with self._mounted("s3fs", m):
                    yield m.path
            return contextlib.contextmanager(s3fs_mount)
        if system in NULL_S3_KEEP:
            def null_s3_mount() -> Iterator[str]:
                m = NullS3Mount(fresh_dir(self.work, "mnt-null-s3"), self.s3, f"{RAW}/big/big.bin",
                                fresh_dir(self.work, "null-s3-work"), keep=NULL_S3_KEEP[system])
                with self._mounted(system, m):
                    yield m.path
            return contextlib.contextmanager(null_s3_mount)
        raise ValueError(f"no mount for {system}")

    @contextlib.contextmanager
    def _mounted(self, system: str, m: Mount) -> Iterator[None]:
        with m:
            self._note_readahead(system, m.path)
            try:
                yield
            finally:
                rss = m.peak_rss_mib()
                if rss is not None:
                    self.res[system]["rss"].values.append(rss)

    def _note_readahead(self, system: str, path: str) -> None:
        if system in self.readahead:
            return
        with contextlib.suppress(Exception):
            dev = subprocess.run(["mountpoint", "-d", path], capture_output=True, text=True).stdout.strip()
            with open(f"/sys/class/bdi/{dev}/read_ahead_kb") as f:
                self.readahead[system] = f"{f.read().strip()} KiB"

    # --- measuring ---

    def add(self, system: str, metric: str, value: float) -> None:
        self.res[system][metric].values.append(value)

    def _session(self, system: str, metrics: list[str], body: Callable[[str], None]) -> None:
        """A fresh mount (or the local directory) for `body(root)`; failures become n/a with the reason."""
        if system in self.broken:
            return
        try:
            if system == "local disk":
                body(self.data.root)
            else:
                with self._opener(system)() as root:
                    body(root)
        except MountUnavailable as e:
            self.broken[system] = str(e)
            log(f"  {system}: n/a ({e})")
        except Exception as e:  # one failed figure is an n/a, never the end of the run
            for m in metrics:
                self.res[system][m].error = str(e)[:160]
            log(f"  {system}: {', '.join(metrics)} failed: {e}")

    def run_fs(self, system: str, rep: int) -> None:
        d = self.data
        small_rel = os.path.relpath(d.small_dir, d.root)
        big_rel = os.path.relpath(d.big, d.root)

        def base(root: str) -> str:
            return os.path.join(root, "bench", "v0") if system == "artfs" else root

        def big(root: str) -> None:
            path = os.path.join(base(root), big_rel)
            for metric, drop in (("cold", True), ("warm", True), ("hot", False)):
                if drop:
                    drop_caches()
                r = probe("seq", path, timeout=TIMEOUT["seq"])
                if r["bytes"] != d.big_bytes:
                    raise ProbeFailed(f"read {r['bytes']} bytes of {d.big_bytes}")
                self.add(system, metric, r["bytes"] / MB / r["seconds"])
            log(f"  r{rep} {system}: big file cold/warm/hot " + " / ".join(
                fmt_num(self.res[system][m].values[-1]) for m in ("cold", "warm", "hot")) + " MB/s")

        def small(root: str) -> None:
            drop_caches()
            r = probe("small", os.path.join(base(root), small_rel), timeout=TIMEOUT["small"])
            if r["files"] != d.small_count:
                raise ProbeFailed(f"listed {r['files']} files, expected {d.small_count}")
            self.add(system, "small", r["files"] / r["seconds"])
            log(f"  r{rep} {system}: small files {fmt_num(r['files'] / r['seconds'])} files/s")

        def find(root: str) -> None:
            drop_caches()
            r = probe("find", os.path.join(base(root), small_rel), timeout=TIMEOUT["find"])
            if r["files"] != d.small_count:
                raise ProbeFailed(f"find listed {r['files']} files, expected {d.small_count}")
            self.add(system, "find", r["seconds"])
            log(f"  r{rep} {system}: find {r['seconds']:.2f}s")

        def preads(root: str) -> None:
            drop_caches()
            r = probe("preads", os.path.join(base(root), big_rel), self.scale.preads, SEED + rep,
                      timeout=TIMEOUT["preads"])
            self.add(system, "preads", r["ops"] / r["seconds"])
            self.add(system, "preads_p99", r["p99_ms"])
            log(f"  r{rep} {system}: preads {fmt_num(r['ops'] / r['seconds'])} ops/s, first "
                f"{r.get('first_ms', 0):.1f} ms, p50 {r.get('p50_ms', 0):.2f} ms, p99 {r.get('p99_ms', 0):.1f} ms")

        def ttfb(root: str) -> None:
            drop_caches()
            r = probe("ttfb", os.path.join(root, "many", "v0", self.many_path), timeout=TIMEOUT["ttfb"])
            self.add(system, "ttfb", r["seconds"] * 1000)
            log(f"  r{rep} {system}: first byte in a {self.many_files:,}-file version {r['seconds'] * 1000:.0f} ms")

        self._session(system, ["cold", "warm", "hot"], big)
        self._session(system, ["small"], small)
        self._session(system, ["find"], find)
        self._session(system, ["preads"], preads)
        if system == "artfs":
            self._session(system, ["ttfb"], ttfb)

    def run_boto3(self, rep: int) -> None:
        d, s3 = self.data, self.s3
        dest = fresh_dir(self.work, "boto3-dl")
        drop_caches()
        t = timed(lambda: s3.download_file(f"{RAW}/big/big.bin", os.path.join(dest, "big.bin")))
        self.add("boto3", "cold", d.big_bytes / MB / t)
        remove_tree(dest)
        os.makedirs(dest)
        names: list[str] = []

        def list_and_get() -> None:
            keys = s3.list_keys(f"{RAW}/small/")
            names.extend(k.rsplit("/", 1)[1] for k in keys)
            s3.get_files(f"{RAW}/small/", names, dest)

        drop_caches()
        t = timed(list_and_get)
        self.add("boto3", "small", len(names) / t)
        drop_caches()
        t = timed(lambda: s3.list_keys(f"{RAW}/small/"))
        self.add("boto3", "find", t)
        offsets = pread_offsets(d.big_bytes, self.scale.preads, SEED + rep)
        drop_caches()
        lat = []

        def one(off: int) -> None:
            t0 = time.perf_counter()
            s3.ranged_get(f"{RAW}/big/big.bin", off, 4096)
            lat.append(time.perf_counter() - t0)

        t = timed(lambda: [one(off) for off in offsets])
        self.add("boto3", "preads", len(offsets) / t)
        self.add("boto3", "preads_p99", percentile_ms(lat, 99))
        remove_tree(dest)
        log(f"  r{rep} boto3: " + ", ".join(f"{m} {fmt(self._last('boto3', m))}"
                                            for m in ("cold", "small", "find", "preads")))

    def run_ceiling(self, rep: int) -> None:
        """What the server gives a client that does nothing with the bytes: the big object in parallel
        ranged GETs into memory (boto3's client), the page cache dropped first."""
        size = self.data.big_bytes
        key = f"{RAW}/big/big.bin"
        drop_caches()

        def fetch_all() -> None:
            with ThreadPoolExecutor(CEILING_THREADS) as pool:
                got = sum(pool.map(lambda off: len(self.s3.ranged_get(key, off, min(CEILING_PART, size - off))),
                                   range(0, size, CEILING_PART)))
            if got != size:
                raise ProbeFailed(f"the ranged GETs brought {got} bytes of {size}")

        t = timed(fetch_all)
        self.add("S3 ceiling", "cold", size / MB / t)
        # Random preads spread over the whole file need nearly all of it (2,000 reads touch every 16 MiB
        # part): a reader that lands the file at this rate answers them no sooner than `t`.
        self.add("S3 ceiling", "preads", self.scale.preads / t)
        log(f"  r{rep} S3 ceiling: {fmt_num(size / MB / t)} MB/s ({CEILING_THREADS} × "
            f"{CEILING_PART >> 20} MiB ranged GETs into memory)")

    def run_null_s3(self, system: str, rep: int) -> None:
        """The floor for a cold stream through FUSE (bench/null_s3fs.py, with or without the local copy a
        caching filesystem keeps): one cold sequential read."""

        def cold(root: str) -> None:
            drop_caches()
            r = probe("seq", os.path.join(root, "big.bin"), timeout=TIMEOUT["seq"])
            if r["bytes"] != self.data.big_bytes:
                raise ProbeFailed(f"read {r['bytes']} bytes of {self.data.big_bytes}")
            self.add(system, "cold", r["bytes"] / MB / r["seconds"])
            log(f"  r{rep} {system}: cold {fmt_num(r['bytes'] / MB / r['seconds'])} MB/s")

        self._session(system, ["cold"], cold)

    def _last(self, system: str, metric: str) -> Sample:
        s = self.res[system][metric]
        return Sample(values=s.values[-1:], unit=s.unit)

    def run(self) -> None:
        self.setup()
        for rep in range(self.reps):
            log(f"Table 2 (mount), repetition {rep + 1}/{self.reps}")
            k = rep % len(SYSTEMS)  # the systems take turns: no one always runs right after another's writes
            for system in SYSTEMS[k:] + SYSTEMS[:k]:
                if system == "boto3":
                    self.run_boto3(rep)
                elif system == "S3 ceiling":
                    self.run_ceiling(rep)
                elif system in NULL_S3_KEEP:
                    self.run_null_s3(system, rep)
                else:
                    self.run_fs(system, rep)
        self.s3.delete_prefix("mount/")

    # --- output ---

    def cell(self, system: str, metric: str) -> str:
        if system in self.broken:
            return f"n/a ({self.broken[system]})" if metric == "cold" else "n/a"
        s = self.res[system][metric]
        if s.error is None and not s.values:
            return "—"
        if metric == "rss" and s.error is None:  # the peak over the table's mounts, as the notes say
            return f"{fmt_num(max(s.values))} {s.unit}"
        return fmt(s)

    def med(self, system: str, metric: str) -> float | None:
        return None if system in self.broken else self.res[system][metric].value

    def tables(self) -> str:
        many = f"{self.many_files:,}" if self.many_files else f"{self.scale.many_files:,}"
        header = ["", *(f"{col.format(many=many)} ({unit})" for col, unit in METRICS.values())]
        rows = [[LABELS[s], *(self.cell(s, m).removesuffix(f" {METRICS[m][1]}") for m in METRICS)] for s in SYSTEMS]
        a = self.med
        targets = [
            ("cold sequential ≥ 1.2× boto3 download", a("artfs", "cold"), a("boto3", "cold"), 1.2, "MB/s"),
            ("cold sequential ≥ 2× s3fs", a("artfs", "cold"), a("s3fs", "cold"), 2.0, "MB/s"),
            ("cold sequential vs rclone (no target)", a("artfs", "cold"), a("rclone", "cold"), None, "MB/s"),
            ("cold sequential vs the null fs over S3 (no target)", a("artfs", "cold"), a(NULL_S3, "cold"),
             None, "MB/s"),
            ("cold sequential vs the null fs over S3 keeping a copy (no target)", a("artfs", "cold"),
             a(NULL_S3_COPY, "cold"), None, "MB/s"),
            ("cold sequential vs the null fs over S3 keeping a checked copy in LMDB (no target)",
             a("artfs", "cold"), a(NULL_S3_LMDB, "cold"), None, "MB/s"),
            ("cold sequential vs the server's ceiling (no target)", a("artfs", "cold"), a("S3 ceiling", "cold"),
             None, "MB/s"),
            ("cache-warm ≥ 1 GB/s", a("artfs", "warm"), 1000.0, 1.0, "MB/s"),
            ("page-cache-hot ≥ 0.8× local disk", a("artfs", "hot"), a("local disk", "hot"), 0.8, "MB/s"),
            ("small files ≥ 10× s3fs", a("artfs", "small"), a("s3fs", "small"), 10.0, "files/s"),
            ("small files vs rclone (no target)", a("artfs", "small"), a("rclone", "small"), None, "files/s"),
            ("random preads vs s3fs (no target)", a("artfs", "preads"), a("s3fs", "preads"), None, "ops/s"),
            ("random preads vs the server's ceiling (no target)", a("artfs", "preads"), a("S3 ceiling", "preads"),
             None, "ops/s"),
        ]
        trows = []
        for label, mine, ref, target, unit in targets:
            r = ratio(mine, ref)
            met = None if target is None or r is None else r >= target
            trows.append([label, _with_unit(mine, unit), _with_unit(ref, unit), fmt_ratio(r), verdict(met)])
        for label, mine, limit, unit in (("`find` ≤ 0.2 s", a("artfs", "find"), 0.2, "s"),
                                         ("first byte ≤ 100 ms", a("artfs", "ttfb"), 100.0, "ms")):
            met = None if mine is None else mine <= limit
            trows.append([label, _with_unit(mine, unit), f"{limit:g} {unit}", "—", verdict(met)])
        ra = ", ".join(f"{k} {v}" for k, v in self.readahead.items()) or "not read"
        notes = [
            f"Notes: the small-files read lists the directory and reads each of the {self.data.small_count:,} "
            "files whole, in readdir order; `find DIR -type f`; preads are "
            f"{self.scale.preads:,} page-aligned 4 KiB `pread`s at seeded random offsets of the big file. "
            "The systems take turns: each repetition starts one system later in the row order. "
            "Cold = fresh mount + empty cache dir + page cache dropped; cache-warm = the same mount after a "
            "cold read, page cache dropped (artfs: LMDB cache; rclone: its vfs cache; s3fs has no disk cache, "
            "so it fetches again). boto3: `download_file` to local disk (default TransferConfig); small files = "
            "list + one get_object per file, sequential; find = list_objects_v2; preads = ranged get_object.",
            f"Kernel readahead per mount, as found: {ra}. Local disk is this VM's virtual disk: with the "
            "guest's page cache dropped, a read may still come from the host's cache (so a second 'cold' read "
            "can be faster than the first); moto's objects live on the same disk.",
            f"First byte: artfs only ({many} files of 64–512 B in directories of 1,000, put as one "
            "version; a fresh mount and cache: the time includes fetching that version's manifest). rclone and "
            "s3fs not measured: 100k objects in moto take too long to create for this run.",
            "The floor and the ceiling of a cold stream (cold seq only): the null pyfuse3 fs over S3 "
            "(bench/null_s3fs.py) serves the big object as one file from ranged GETs of 16 MiB, four ahead, "
            "through artfs's botocore client, with readahead 1 MiB, and does nothing else (no chunks, no digest "
            "check, no cache); \"keeping a local copy\" also writes each part into a file on the work dir's disk, off "
            "the serving path "
            "(`--keep`: the copy a caching filesystem keeps, as rclone's vfs cache and artfs's chunk cache do, "
            "in new page cache); \"the copy in LMDB under checked digests\" (`--keep-lmdb`) is what artfs's "
            "design adds to that and nothing more: each 16 MiB part cut into 1 MiB pieces whose xxh3-128 digests "
            "are taken before the part is served, the pieces put under them into LMDB (a write transaction a "
            "part, no syncs) off the serving path; "
            "the server's ceiling is the big object in "
            f"{CEILING_THREADS} parallel {CEILING_PART >> 20} MiB ranged GETs into memory, in this process; its "
            "preads figure is the preads' count over that time: random reads over the whole file need nearly "
            "every byte of it, so a reader that brings the file in at the server's ceiling answers them no faster "
            "(a reader that sends one small GET per read is bound by the GETs' latency instead, as s3fs is). "
            "moto runs on the same two cores as every client here.",
            "Peak RSS: VmHWM of the process serving the mount (artfs: the daemon whose pid `artfs mount` prints), "
            "the max over this table's mounts. artfs's counts the pages of its LMDB chunk cache that it has "
            "mapped and read (file pages: the kernel reclaims them like any page cache; a cache-warm read of "
            "the big file maps all of it), and, during random reads of the big file, the parts it holds in "
            "memory until the whole file is in (up to 512 MiB, handed back after).",
        ]
        if self.broken:
            notes.append("Not measured: " + "; ".join(f"{k}: {v}" for k, v in self.broken.items()) + ".")
        return "\n".join([
            "## Table 2 — the mount: reads (issue 3), moto S3",
            "",
            md_table(header, rows),
            "",
            "### Targets (issue 3)",
            "",
            md_table(["target", "artfs", "reference", "ratio", "met"], trows),
            "",
            *[n + "\n" for n in notes],
        ])

    def as_json(self) -> dict:
        return {"broken": self.broken, "readahead": self.readahead, "many_files": self.many_files,
                "results": {s: {m: v.as_json() for m, v in ms.items()} for s, ms in self.res.items()}}


def _with_unit(x: float | None, unit: str) -> str:
    return "n/a" if x is None else f"{fmt_num(x)} {unit}"


def run(artfs: Artfs, s3: S3, data: Dataset, work: str, reps: int, scale: Scale, report: dict) -> str:
    bench = MountBench(artfs, s3, data, work, reps, scale)
    try:
        bench.run()
    finally:
        report["tables"]["mount"] = bench.as_json()
    text = bench.tables()
    print(text, flush=True)
    return text
