"""The FUSE floor (issue 13): artfs beside a minimal pyfuse3 filesystem (bench/null_fs.py) and local disk.

    python -m bench.table_floor [--quick] [--reps N] [--files N] [--workdir DIR] [--json FILE]

What pyfuse3 + trio + the kernel can do at all on this machine, set against artfs doing the same work:
`cp -r` and `tar x` of the small files and `dd` of 512 MiB into the null fs (with and without the
kernel's writeback cache; and keeping what it is given as files on the work directory's disk, the floor
of any filesystem whose files must outlive its daemon) and into a new artifact's staging directory; a
page-cache-hot re-read of a 512 MiB file (null fs with keep_cache, an artfs version file); `find` over
200,000 entries on a fresh mount and again. Local disk is the work directory's own filesystem. Every
figure is the median of --reps repetitions, the systems taking turns within a repetition; the daemon's
CPU seconds (utime + stime from /proc) stand beside wall time, being far less noisy on a shared machine.

artfs runs on a directory store here (staging never touches the store until a seal; the version files
are read back through the same mount code as from S3), each mount with an empty cache dir and its own
data dir (ARTFS_DATA), so staged files land on the work directory's disk like the local-disk figures.

What a system wrote is set aside (renamed into a trash directory) rather than deleted until the table is
done: ext4 without a journal (this VM's disk) skips every inode deleted in the last 60 s (5 min while its
inode table block is not written back; fs/ext4/ialloc.c, recently_deleted) when it looks for a free one,
scanning from the group's start each time, so
the system measured right after 10,000 deletes paid 150-500 µs of CPU per new file where the others paid
~10 (measured: `cp -r` into the null fs on disk 1,500-2,000 files/s after another system's deletes, 2,300
without). Which system that was depended on the turn order, not on the system.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import json
import mmap
import os
import shutil
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from bench.common import (
    CLEANUP,
    MB,
    REPO,
    MiB,
    drop_caches,
    fmt_num,
    fmt_ratio,
    fresh_dir,
    install_signal_handlers,
    log,
    md_table,
    mounts_under,
    probe,
    ratio,
    remove_tree,
    run_cmd,
    temp_dir,
    unmount,
    verdict,
)
from bench.data import Dataset, Scale, make_dataset, make_many_files
from bench.mounts import Artfs, ArtfsMount, Mount, MountUnavailable, wait_mounted
from bench.table_huge import cpu_seconds, settle
from bench.table_staging import StagingUnavailable

FIND_FILES = 200_000
PAGE = 4096
TIMEOUT = 900
NULL = "null fs"
NULL_WB = "null fs + writeback"
NULL_DISK = "null fs on disk + writeback"
NULL_DISK_X = "null fs on disk + xattrs + writeback"
ARTFS = "artfs"
LOCAL = "local disk"
WRITERS = (NULL, NULL_WB, NULL_DISK, NULL_DISK_X, ARTFS, LOCAL)
DISCARD, DISCARD_WB = "null fs, discard", "null fs, discard + writeback"

PASSTHROUGH_NOTES = [
    "FUSE passthrough (kernel 6.9+; CONFIG_FUSE_PASSTHROUGH=y here) sends an open file's reads and writes "
    "straight to a backing file on a local filesystem. pyfuse3 3.5.0 cannot ask for it: its init handler "
    "requests only READDIRPLUS, EXPORT_SUPPORT, WRITEBACK_CACHE and POSIX_ACL, and its FileInfo carries only "
    "fh, direct_io, keep_cache and nonseekable (no backing_id); libfuse's API for it (FUSE_CAP_PASSTHROUGH, "
    "fuse_passthrough_open) came in 3.17.1, and this machine has 3.14.",
    "It would take a pyfuse3 patch on libfuse ≥ 3.17 (want the capability, call the BACKING_OPEN ioctl, put "
    "the backing id in the open reply), CAP_SYS_ADMIN for the daemon, no writeback cache on that mount (the "
    "kernel refuses the two together, so staging would lose it), and a whole plain file on disk for every "
    "file served that way: artfs keeps chunks in LMDB, so a fully cached file would first be written out.",
    "Large folios: FUSE's support for them is in the kernel since 6.16, but the switch that turns them on "
    "(\"fuse: enable large folios\", b46e0966) was committed in September 2026, after 6.18; its own benchmark "
    "shows warm 1 MiB sequential reads going from 2.4 to 5.1 GiB/s. The daemon has no part in it: a "
    "page-cache hit never reaches it (the re-read row's daemon CPU is about zero; more means pages were evicted).",
]


def _scratch(work: str) -> str:
    """/dev/shm when it has room: 200,000 files are made and removed there in seconds, not minutes of disk
    metadata writes (on a busy disk, deleting them from ext4 took longer than the whole table)."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 4 << 30:
        return temp_dir("floor", shm)
    return work


def _sh(*args: str) -> None:
    run_cmd(list(args), timeout=TIMEOUT)


def large_folio_share(path: str, limit: int = 64 * MiB) -> float | None:
    """Of the first `limit` bytes of `path`, freshly read into the page cache, the share of pages that sit in
    large folios: each page's frame from /proc/self/pagemap of a private mapping, its flags from
    /proc/kpageflags (COMPOUND_HEAD/TAIL). None where that is not allowed (it needs root)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = min(os.fstat(fd).st_size, limit) // PAGE * PAGE
        if not size:
            return None
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # read afresh: readahead picks the folio sizes
        with open(path, "rb", buffering=0) as f:
            left, buf = size, bytearray(MiB)
            while left > 0 and (n := f.readinto(buf)):
                left -= n
        m = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            view = ctypes.c_char.from_buffer(m)
            base = ctypes.addressof(view)
            try:
                large = present = 0
                with open("/proc/self/pagemap", "rb", buffering=0) as pm, \
                        open("/proc/kpageflags", "rb", buffering=0) as kf:
                    for off in range(0, size, PAGE):
                        _ = m[off]  # map it (reading a private mapping shares the page-cache page)
                        entry = struct.unpack("Q", os.pread(pm.fileno(), 8, (base + off) // PAGE * 8))[0]
                        pfn = entry & ((1 << 55) - 1)
                        if not entry >> 63 or not pfn:
                            continue
                        present += 1
                        flags = struct.unpack("Q", os.pread(kf.fileno(), 8, pfn * 8))[0]
                        large += bool(flags & (1 << 15 | 1 << 16))  # KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL
            finally:
                del view
        finally:
            m.close()
        return large / present if present else None
    except OSError:
        return None
    finally:
        os.close(fd)


# --- the null filesystem as a mount ---


class NullMount(Mount):
    """`python -m bench.null_fs PATH FLAGS`, in the foreground; unmounting ends it."""

    what = "null fs"

    def __init__(self, path: str, *flags: str) -> None:
        super().__init__(path)
        self.flags = flags

    def open(self) -> None:
        self.log_path = os.path.join(os.path.dirname(self.path), os.path.basename(self.path) + ".log")
        env = {**os.environ, "PYTHONPATH": REPO}
        with open(self.log_path, "ab") as logf:
            proc = subprocess.Popen([sys.executable, "-m", "bench.null_fs", self.path, *self.flags], env=env,
                                    cwd=REPO, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
        self.pid = proc.pid
        wait_mounted(self.path, self.pid, 120, "null fs", self.log_path)


# --- figures ---


@dataclass
class Figure:
    """Repeated runs of one operation on one system: wall seconds and the daemon's CPU seconds."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def seconds(self) -> float | None:
        return None if self.error or not self.wall else statistics.median(self.wall)

    @property
    def cpu_seconds(self) -> float | None:
        return None if self.error or not self.cpu else statistics.median(self.cpu)

    def as_json(self) -> dict:
        return {"wall_s": self.wall, "cpu_s": self.cpu, "median_s": self.seconds,
                "median_cpu_s": self.cpu_seconds, "error": self.error}


class Floor:
    def __init__(self, artfs: Artfs, data: Dataset, work: str, reps: int, find_files: int) -> None:
        self.artfs, self.data, self.work, self.reps, self.find_files = artfs, data, work, reps, find_files
        self.figs: dict[tuple[str, str], Figure] = {}
        self.broken: dict[str, str] = {}
        self.folios: dict[str, float | None] = {}  # share of a re-read file's cached pages in large folios
        self.store = os.path.join(work, "floor-store")
        self.tar = os.path.join(work, "floor-small.tar")
        self.many_src = os.path.join(_scratch(work), "many")  # the huge version's source, kept for local `find`
        self.big_mib = data.big_bytes // MiB
        self.trash = os.path.join(work, "trash")  # what the systems wrote, until the table is done
        self._set_aside = 0

    def fig(self, op: str, system: str) -> Figure:
        return self.figs.setdefault((op, system), Figure())

    def measure(self, op: str, system: str, pid: int | None, fn: Callable[[], float | None]) -> None:
        """Time `fn` (which may return its own, narrower wall time) and the daemon's CPU meanwhile."""
        f = self.fig(op, system)
        if f.error:
            return
        os.sync()  # nobody's dirty pages from before get written back inside this figure
        c0 = cpu_seconds(pid) if pid else 0.0
        t0 = time.perf_counter()
        try:
            own = fn()
        except Exception as e:  # one failed figure is an n/a, never the end of the table
            f.error = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            log(f"  {system} {op}: failed: {f.error}")
            return
        wall = time.perf_counter() - t0 if own is None else own
        f.wall.append(wall)
        if pid:
            f.cpu.append(cpu_seconds(pid) - c0)
        log(f"  {system} {op}: {wall:.3f}s" + (f", daemon CPU {f.cpu[-1]:.2f}s" if pid else ""))

    # --- preparation (untimed) ---

    def prepare(self) -> None:
        d = self.data
        run_cmd(["tar", "cf", self.tar, "-C", d.small_dir, "."], timeout=TIMEOUT)
        cache = fresh_dir(self.work, "floor-put-cache")
        env = self.artfs.env_for(cache)
        log(f"floor: artfs put of the {self.big_mib} MiB file")
        run_cmd([self.artfs.exe, "put", d.big_dir, "bigf", "--store", self.store], env=env, timeout=TIMEOUT)
        log(f"floor: making {self.find_files:,} tiny files, then artfs put")
        remove_tree(self.many_src)
        make_many_files(self.many_src, self.find_files)
        t0 = time.perf_counter()
        run_cmd([self.artfs.exe, "put", self.many_src, "many", "--store", self.store], env=env, timeout=TIMEOUT)
        log(f"  put of {self.find_files:,} files: {time.perf_counter() - t0:.1f}s")
        remove_tree(cache)

    def warm_sources(self) -> None:
        """The sources of cp, tar and dd stay in the page cache: the figures are the destinations' alone."""
        buf = bytearray(MiB)
        for name in self.data.small_names:
            with open(os.path.join(self.data.small_dir, name), "rb", buffering=0) as f:
                f.readinto(buf)
        with open(self.tar, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass

    # --- one system's writes ---

    def writes(self, system: str, root: str, pid: int | None, ops: tuple[str, ...]) -> None:
        d = self.data
        n = self.big_mib
        if "cp" in ops:
            self.measure("cp", system, pid, lambda: _sh("cp", "-r", d.small_dir, os.path.join(root, "cp")))
        if "tar" in ops:
            dest = os.path.join(root, "tar")
            os.mkdir(dest)
            self.measure("tar", system, pid, lambda: _sh("tar", "xf", self.tar, "-C", dest))
        for op, extra in (("dd", []), ("dd_fsync", ["conv=fsync"])):
            args = ["dd", "if=/dev/zero", f"of={os.path.join(root, op + '.bin')}", "bs=1M", f"count={n}", *extra]
            self.measure(op, system, pid, functools.partial(_sh, *args))

    def reread(self, system: str, path: str, pid: int | None) -> None:
        probe("seq", path, timeout=TIMEOUT)  # the first read fills the page cache (or does not)
        self.measure("reread", system, pid, lambda: probe("seq", path, timeout=TIMEOUT)["seconds"])
        if system not in self.folios:
            self.folios[system] = large_folio_share(path)

    def finds(self, system: str, root: str, pid: int | None) -> None:
        def one() -> float:
            out = probe("find", root, timeout=TIMEOUT)
            if out["files"] != self.find_files:
                raise RuntimeError(f"find listed {out['files']} files, expected {self.find_files}")
            return out["seconds"]

        self.measure("find_cold", system, pid, one)
        if pid:
            settle(pid)  # artfs builds the version's index in the background: warm is the steady state
        self.measure("find_warm", system, pid, one)

    def set_aside(self, path: str) -> None:
        """Keep what a system wrote until the table is done (see the module's docstring): unmounted if
        anything is mounted below it, then renamed into the trash, which `run` empties at its end. Its
        big files (`dd`'s) go at once: a few inodes cost the next allocations nothing, and the trash
        stays small (~0.3 GB a system and repetition, not 1.3)."""
        if not os.path.lexists(path):
            return
        for mnt in mounts_under(path):
            unmount(mnt)
        for d, _, files in os.walk(path):
            for f in files:
                full = os.path.join(d, f)
                with contextlib.suppress(OSError):
                    if os.lstat(full).st_size >= MiB:
                        os.unlink(full)
        self._set_aside += 1
        os.makedirs(self.trash, exist_ok=True)
        os.rename(path, os.path.join(self.trash, f"{self._set_aside}-{os.path.basename(path)}"))

    # --- the systems, one repetition each ---

    def run_null(self, rep: int) -> None:
        ops, dds = ("cp", "tar", "dd", "dd_fsync"), ("dd", "dd_fsync")
        disk = fresh_dir(self.work, f"null-disk-{rep}")  # on the disk artfs's staged files and local disk's go to
        disk_x = fresh_dir(self.work, f"null-diskx-{rep}")
        configs = ((NULL, ["--big-mib", str(self.big_mib)], ops), (NULL_WB, ["--writeback"], ops),
                   (NULL_DISK, ["--writeback", "--disk", disk], ops),
                   (NULL_DISK_X, ["--writeback", "--disk", disk_x, "--xattrs"], ops),
                   (DISCARD, ["--discard"], dds), (DISCARD_WB, ["--discard", "--writeback"], dds))
        try:
            for i, (system, flags, what) in enumerate(configs):
                if system in self.broken:
                    continue
                try:
                    with NullMount(fresh_dir(self.work, f"mnt-null{i}-{rep}"), *flags) as m:
                        self.writes(system, m.path, m.pid, what)
                        if system == NULL:  # keep_cache off: every open drops the file's pages
                            self.reread("null fs, no keep_cache", os.path.join(m.path, "big.bin"), m.pid)
                except MountUnavailable as e:
                    self.broken[system] = str(e)
                    log(f"  {system}: n/a ({e})")
        finally:
            self.set_aside(disk)
            self.set_aside(disk_x)

    def run_null_reads(self, rep: int) -> None:
        """The null fs's re-read (keep_cache on) and `find` rows, each on its own fresh mount."""
        if NULL in self.broken:
            return
        with NullMount(fresh_dir(self.work, f"mnt-nullk-{rep}"), "--keep-cache", "--big-mib", str(self.big_mib)) as m:
            self.reread(NULL, os.path.join(m.path, "big.bin"), m.pid)
        drop_caches()
        with NullMount(fresh_dir(self.work, f"mnt-nullf-{rep}"), "--files", str(self.find_files)) as m:
            self.finds(NULL, os.path.join(m.path, "many"), m.pid)

    @contextlib.contextmanager
    def _artfs_mount(self, tag: str) -> Iterator[Mount]:
        """A fresh mount: an empty cache dir and its own data dir (staged files), both gone afterwards."""
        cache = fresh_dir(self.work, f"floor-cache-{tag}")
        data_dir = fresh_dir(self.work, f"floor-data-{tag}")
        try:
            artfs = Artfs({**self.artfs.env, "ARTFS_DATA": data_dir})
            with ArtfsMount(artfs, fresh_dir(self.work, f"mnt-artfs-{tag}"), self.store, cache) as m:
                yield m
        finally:
            remove_tree(cache)
            self.set_aside(data_dir)

    def run_artfs(self, rep: int) -> None:
        if ARTFS in self.broken:
            return
        try:
            with self._artfs_mount(f"w{rep}") as m:
                art = os.path.join(m.path, f"floor{rep}")
                try:
                    os.mkdir(art)
                except OSError as e:
                    raise StagingUnavailable(f"mkdir MNT/floor{rep}: {e.strerror}") from None
                staging = os.path.join(art, "staging")
                if not os.path.isdir(staging):
                    raise StagingUnavailable("no MNT/NAME/staging")
                self.writes(ARTFS, staging, m.pid, ("cp", "tar", "dd", "dd_fsync"))
                self.reread(ARTFS, os.path.join(m.path, "bigf", "v0", os.path.basename(self.data.big)), m.pid)
            drop_caches()
            with self._artfs_mount(f"f{rep}") as m:
                self.finds(ARTFS, os.path.join(m.path, "many", "v0"), m.pid)
        except (MountUnavailable, StagingUnavailable) as e:
            self.broken[ARTFS] = str(e)
            log(f"  artfs: n/a ({e})")

    def run_local(self, rep: int) -> None:
        root = fresh_dir(self.work, f"floor-local-{rep}")
        try:
            self.writes(LOCAL, root, None, ("cp", "tar", "dd", "dd_fsync"))
        finally:
            self.set_aside(root)
        self.reread(LOCAL, self.data.big, None)
        drop_caches()
        self.finds(LOCAL, self.many_src, None)

    def run(self) -> None:
        self.prepare()
        turns: list[Callable[[int], None]] = [self.run_null, self.run_null_reads, self.run_artfs, self.run_local]
        try:
            for rep in range(self.reps):
                log(f"floor: repetition {rep + 1}/{self.reps}")
                self.warm_sources()
                k = rep % len(turns)
                for turn in turns[k:] + turns[:k]:  # systems take turns: no one always runs first or last
                    turn(rep)
                    self.warm_sources()
        finally:
            remove_tree(self.trash)

    # --- output ---

    def rate(self, op: str, system: str, amount: float) -> float | None:
        s = self.fig(op, system).seconds
        return None if s is None or s == 0 else amount / s

    def cell(self, op: str, system: str, amount: float | None, unit: str) -> str:
        if system in self.broken:
            return "n/a"
        f = self.figs.get((op, system))
        if f is None:
            return "—"
        if f.error:
            return f"n/a ({f.error})"
        s = f.seconds
        if s is None:
            return "—"
        main = f"{s:.2f} s" if amount is None else f"{fmt_num(amount / s)} {unit}"
        cpu = f.cpu_seconds
        return main + (f" ({cpu:.2f} CPU-s)" if cpu is not None else "")

    def speed(self, op: str, system: str, amount: float | None) -> float | None:
        """Higher is better: a rate, or 1/seconds for the `find` rows."""
        s = self.fig(op, system).seconds if system not in self.broken else None
        if s is None or s == 0:
            return None
        return (amount or 1.0) / s

    def table(self) -> str:
        d = self.data
        n_small, mb = d.small_count, self.big_mib * MiB / MB
        rows_spec = [
            ("cp", f"`cp -r` of {n_small:,} files of 4–64 KiB", n_small, "files/s", "null", 0.8),
            ("tar", f"`tar x` of the same {n_small:,} files", n_small, "files/s", "null", 0.8),
            ("dd", f"`dd` {self.big_mib} MiB, bs=1M", mb, "MB/s", "local", 0.8),
            ("dd_fsync", f"`dd` {self.big_mib} MiB, bs=1M conv=fsync", mb, "MB/s", "local", 0.8),
            ("reread", f"page-cache-hot re-read of {self.big_mib} MiB (1 MiB reads)", mb, "MB/s", "local", 0.8),
            ("find_cold", f"`find` over {self.find_files:,} files, fresh mount", None, "", "1s", 1.0),
            ("find_warm", "`find` again (warm)", None, "", "", 0.0),
        ]
        rows = []
        for op, label, amount, unit, goal, bar in rows_spec:
            nulls = [(v, s) for s in (NULL, NULL_WB, DISCARD, DISCARD_WB) if (v := self.speed(op, s, amount))]
            best_null, best = max(nulls) if nulls else (None, None)
            a, loc = self.speed(op, ARTFS, amount), self.speed(op, LOCAL, amount)
            r_null = None if a is None or best_null is None else a / best_null
            cpu_a = self.fig(op, ARTFS).cpu_seconds if ARTFS not in self.broken else None
            cpu_n = self.fig(op, best).cpu_seconds if best else None
            r_cpu = (f"{cpu_a / cpu_n:.1f}×" if cpu_a is not None and cpu_n and max(cpu_a, cpu_n) >= 0.05
                     else "— (no daemon work)" if cpu_a is not None and cpu_n is not None else "n/a")
            r_local = None if a is None or loc is None else a / loc
            r_disk = ratio(a, self.speed(op, NULL_DISK, amount))
            r_disk_x = ratio(a, self.speed(op, NULL_DISK_X, amount))
            if goal == "null":
                goal_text, ok = f"≥ {bar}× null fs", None if r_null is None else r_null >= bar
            elif goal == "local":
                goal_text, ok = f"≥ {bar}× local", None if r_local is None else r_local >= bar
            elif goal == "1s":
                s = self.fig(op, ARTFS).seconds if ARTFS not in self.broken else None
                goal_text, ok = "≤ 1 s", None if s is None else s <= 1.0
            else:
                goal_text, ok = "—", None
            rows.append([label, *(self.cell(op, s, amount, unit) for s in WRITERS), fmt_ratio(r_null), r_cpu,
                         fmt_ratio(r_disk), fmt_ratio(r_disk_x), fmt_ratio(r_local), goal_text, verdict(ok)])
        header = ["", NULL, NULL_WB, NULL_DISK, NULL_DISK_X, "**artfs**", f"{LOCAL} ({self.local_fs()})",
                  "artfs ÷ best null fs", "daemon CPU, artfs ÷ that null fs", "artfs ÷ null fs on disk",
                  "artfs ÷ null fs on disk + xattrs", "artfs ÷ local", "goal", "met"]
        main = md_table(header, rows)
        floor_rows = []
        for op, label in (("dd", "`dd`, bs=1M"), ("dd_fsync", "`dd`, bs=1M conv=fsync")):
            floor_rows.append([f"{label} {self.big_mib} MiB", self.cell(op, DISCARD, mb, "MB/s"),
                               self.cell(op, DISCARD_WB, mb, "MB/s"), self.cell(op, NULL, mb, "MB/s"),
                               self.cell(op, NULL_WB, mb, "MB/s")])
        floor_rows.append([f"re-read of {self.big_mib} MiB, keep_cache off (every open drops the pages)",
                           self.cell("reread", "null fs, no keep_cache", mb, "MB/s"), "—",
                           self.cell("reread", NULL, mb, "MB/s") + " (keep_cache on)", "—"])
        alone = md_table(["FUSE alone", "null fs, discard", "discard + writeback", "null fs, in RAM",
                          "in RAM + writeback"], floor_rows)
        broken = "".join(f"\n- {s}: n/a — {why}" for s, why in self.broken.items())
        notes = "\n".join([
            f"Notes: medians of {self.reps} repetition(s); the systems take turns within each. Cells: wall-time rate "
            "(the daemon's CPU seconds for that operation). Ratios are speeds (files/s, MB/s, 1/s), higher is "
            "better; \"best null fs\" is the fastest null fs configuration measured for the row (with or without the "
            "writeback cache; for `dd` also `--discard`, the table below), and the CPU ratio compares the two "
            "daemons' CPU seconds for the same work (lower is better; steady under load, unlike wall time).",
            "- null fs: bench/null_fs.py, in-memory pyfuse3 + trio, no await, no flush/fsync handlers (ENOSYS), "
            "keep_cache on for the re-read row; `--discard` keeps sizes only (the cost of FUSE alone: keeping the "
            "bytes in RAM costs it as much again, in page faults of fresh memory).",
            "- null fs on disk: the same with `--disk DIR --writeback` (DIR on the work dir's disk): each file and "
            "directory made through it is also made under DIR (open O_CREAT, pwrite, mkdir; nothing synced), "
            "as libfuse's passthrough example does. The least a filesystem can do whose files must still be there "
            "after its daemon dies, which artfs's staging promises; not counted as a \"null fs\" above.",
            "- null fs on disk + xattrs: the same with `--xattrs`: getxattr answers \"no such "
            "attribute\" instead of ENOSYS, as any filesystem with extended attributes must (artfs has its "
            "`user.artfs.*` ones). The kernel then asks for `security.capability` before every write(), chmod and "
            "chown (one request a file for `cp -r`, ~5 for `tar x`'s 10 KiB writes, one per `dd` block): nothing "
            "can stop that but FUSE_HANDLE_KILLPRIV_V2, which pyfuse3 3.5 cannot negotiate.",
            f"- artfs: a new artifact's staging on a directory store, each mount with an empty cache and its own "
            f"ARTFS_DATA under the work dir; re-read of `bigf/v0/{os.path.basename(self.data.big)}` after one "
            "full read; `find` on a fresh mount (page cache dropped), then again after its daemon went idle.",
            f"- local disk: {self.local_fs()} (the work dir's filesystem), writes into the page cache unless "
            "fsync'd; the sources (and /dev/zero for dd) are page-cache hot, so only destinations count. Local "
            f"`find` runs over the huge version's source tree, on {self.local_fs(self.many_src)}.",
            "- Passthrough and large folios (read, not built):",
            *(f"  {i}. {line}" for i, line in enumerate([*PASSTHROUGH_NOTES, self.folio_note()], 1)),
        ]) + broken
        return "\n".join(["## The FUSE floor — artfs beside a minimal pyfuse3 filesystem (issue 13)", "", main, "",
                          alone, "", notes, ""])

    def folio_note(self) -> str:
        """What this run measured of it: large folios per system, and whether the null fs reaches the goal."""
        def share(system: str) -> str:
            v = self.folios.get(system)
            return "n/a" if v is None else f"{v * 100:.0f}%"

        r = ratio(self.speed("reread", NULL, 1.0), self.speed("reread", LOCAL, 1.0))
        text = (f"Measured here (/proc/kpageflags, first 64 MiB after a fresh read): {share(NULL)} of the null fs's "
                f"cached pages sit in large folios, {share(ARTFS)} of artfs's, {share(LOCAL)} of local disk's. ")
        if r is None:
            return text + "The null fs's re-read was not measured."
        if r < 0.8:
            return text + (f"The null fs re-reads at {r:.2f}× local: below 0.8× with no daemon work at all, so the "
                           "limit is the kernel (pyfuse3 cannot change the folio size), not artfs's code.")
        return text + f"The null fs re-reads at {r:.2f}× local: the kernel allows the 0.8× goal here."

    def local_fs(self, path: str | None = None) -> str:
        try:
            out = run_cmd(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "--target", path or self.work],
                          timeout=30).stdout.split()
            if len(out) < 2:
                return "?"
            return out[0] if out[0] == out[1] else f"{out[0]} on {out[1]}"
        except Exception:
            return "?"

    def as_json(self) -> dict:
        return {"broken": self.broken, "find_files": self.find_files, "small_files": self.data.small_count,
                "big_mib": self.big_mib,
                "figures": {f"{op}/{system}": f.as_json() for (op, system), f in self.figs.items()}}


def run(artfs: Artfs, data: Dataset, work: str, reps: int, quick: bool, report: dict,
        find_files: int | None = None) -> str:
    if find_files is None:
        find_files = FIND_FILES // 8 if quick else FIND_FILES
    floor = Floor(artfs, data, fresh_dir(work, "floor"), reps, find_files)
    try:
        floor.run()
    finally:
        report["tables"]["floor"] = floor.as_json()
    text = floor.table()
    print(text, flush=True)
    return text


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.table_floor", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="data scaled down 8x, 25,000 files for find; 1 repetition")
    p.add_argument("--reps", type=int, default=None, help="repetitions per figure (default 3; 1 with --quick)")
    p.add_argument("--files", type=int, default=None, help=f"files for the find rows (default {FIND_FILES:,})")
    p.add_argument("--workdir", default=None, help="parent of the temp dir (default: $TMPDIR or /tmp)")
    p.add_argument("--json", dest="json_path", metavar="FILE", help="also write the raw numbers here")
    args = p.parse_args(argv)
    reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    if reps < 1 or (args.files is not None and args.files < 1):
        p.error("--reps and --files must be at least 1")
    install_signal_handlers()
    report: dict = {"tables": {}}
    try:
        work = temp_dir("floor", args.workdir)
        data = make_dataset(os.path.join(work, "data"), Scale.of(args.quick))
        run(Artfs(dict(os.environ)), data, work, reps, args.quick, report, args.files)
    finally:
        log("cleaning up")
        CLEANUP.run_all()
        if args.json_path:
            with open(args.json_path, "w") as f:
                json.dump(report, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
