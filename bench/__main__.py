"""Benchmark artfs beside its peers, in one run: tables (markdown) on stdout, progress on stderr.

    scripts/bench [--quick] [--only TABLE[,TABLE…]] [--reps N] [--json FILE] [--scale-full]

(`scripts/bench` sets up the venv and the peers, then runs `python -m bench` from the repo root.)

Table 1 (core): `artfs put`/`get` on a local store and on moto S3, beside `cp -r` and boto3.
Table 2 (mount): reads through `artfs mount` beside local disk, boto3, rclone mount and s3fs.
Table 3 (staging): writes into MNT/NAME/staging and `artfs seal`, beside local disk, rclone and s3fs.
Table 4 (capture): small-file reads through a mount inside `artfs run` beside the same reads outside.
Table 5 (lineage): `artfs lineage` on a directory store with 10,000 runs and 1,000 versions.
Table 6 (runs): runs_using, run_info, producing_run, list_runs on a store of 10,000 runs, 1,000 versions.
Table floor: `cp -r`, `tar x`, `dd`, a hot re-read and `find` in artfs beside a minimal pyfuse3 filesystem
(bench/null_fs.py, the FUSE floor) and local disk; also `python -m bench.table_floor`.
Table huge: a 200,000-file version through a mount: first byte, `find` cold/warm, daemon RSS and CPU.
Table scale: how cost grows: 10k/100k(/1M with --scale-full or ARTFS_BENCH_FULL=1)-file versions, artifacts
of 10/100/1,000 versions, 1/4/8 concurrent readers; also `python -m bench.table_scale`.
Goals: issue 13's goals in one table, from the figures above (after a run of every table).
Figures are medians of --reps repetitions (3; 1 with --quick); ratios are artfs ÷ peer, higher is better.
Whatever is not available (the mount, staging, a peer) prints as n/a with the reason.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import traceback

from bench import (
    table_capture,
    table_core,
    table_floor,
    table_gc,
    table_goals,
    table_huge,
    table_lineage,
    table_mount,
    table_runs,
    table_scale,
    table_staging,
)
from bench.common import CLEANUP, drop_caches, install_signal_handlers, log, temp_dir
from bench.data import Scale, make_dataset
from bench.mounts import Artfs
from bench.s3peer import S3

TABLES = ("core", "mount", "staging", "capture", "lineage", "runs", "gc", "floor", "huge", "scale")


def _tables(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in TABLES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown table(s) {', '.join(unknown) or '(none)'}; "
                                         f"choose from {', '.join(TABLES)}")
    return names


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="scale the data down 8x (smoke run); 1 repetition")
    p.add_argument("--only", type=_tables, metavar="TABLE[,TABLE…]",
                   help=f"run only these tables, in this order ({', '.join(TABLES)})")
    p.add_argument("--reps", type=int, default=None, help="repetitions per figure (default 3; 1 with --quick)")
    p.add_argument("--json", dest="json_path", metavar="FILE", help="also write the raw numbers here")
    p.add_argument("--workdir", default=None, help="parent of the temp dirs (default: $TMPDIR or /tmp)")
    p.add_argument("--scale-full", action="store_true",
                   help="table scale: add the 1M-file point (long; also ARTFS_BENCH_FULL=1)")
    args = p.parse_args(argv)
    if args.reps is None:
        args.reps = 1 if args.quick else 3
    if args.reps < 1:
        p.error("--reps must be at least 1")
    return args


def machine_line() -> str:
    kernel = platform.release()
    cpus = os.cpu_count()
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) / (1 << 20)
    except OSError:
        mem = 0
    return (f"{cpus} cores, {mem:.0f} GiB RAM, Linux {kernel}, Python {platform.python_version()}"
            f"{free_page_reporting()}")


def free_page_reporting() -> str:
    """A VM that hands freed memory back to its host (virtio-balloon free page reporting) faults it in
    again at first use, at a fraction of the speed (measured here: fresh page cache 330 MB/s against
    3.4 GB/s for memory reused before it was reported): every figure that fills new memory depends on
    how soon freed pages are reported. Read, never changed, by the bench."""
    params = "/sys/module/page_reporting/parameters"
    try:
        with open(os.path.join(params, "min_free_ms")) as f:
            delay = f.read().strip()
    except OSError:
        return ""
    return f"; freed memory handed back to the host after {delay} ms ({params}/min_free_ms)"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    which = args.only or list(TABLES)
    scale = Scale.of(args.quick)
    report: dict = {"started": dt.datetime.now().isoformat(timespec="seconds"), "quick": args.quick,
                    "reps": args.reps, "machine": machine_line(), "tables": {}}
    try:
        work = temp_dir("run", args.workdir)
        data = make_dataset(os.path.join(work, "data"), scale)
        s3 = S3(os.path.join(work, "moto.log"))
        artfs = Artfs(s3.env)
        startup = artfs.startup_seconds(s3.uri("empty"), os.path.join(work, "cache-ls"))
        server = (f"moto {_moto_version()} on 127.0.0.1 (tests/support/s3server.py: ranged GETs streamed, "
                  f"conditional PUTs atomic), one process for the whole run")
        head = [
            f"# artfs benchmark — {report['started']}{' (--quick: data scaled down 8×)' if args.quick else ''}",
            "",
            f"- Machine: {report['machine']}.",
            f"- S3 server: {server}.",
            f"- Data: one {data.big_bytes >> 20} MiB file + {data.small_count:,} files of 4–64 KiB "
            f"({data.small_bytes / (1 << 20):.0f} MiB), random (incompressible), seeded; "
            f"{data.total_bytes / (1 << 20):.0f} MiB in all.",
            f"- Figures are medians of {args.reps} repetition(s); ratios are artfs ÷ peer (higher is better); "
            "MB/s = 10^6 bytes/s.",
            "- artfs runs as its CLI: every artfs figure includes a process start (`artfs ls` of an empty S3 "
            f"store takes {startup:.2f} s); boto3 runs inside the benchmark process, already imported.",
        ]
        if not drop_caches.works:
            head.append("- The page cache could NOT be dropped: cold figures are flattered.")
        report.update(server=server, endpoint=s3.endpoint, artfs_startup_s=startup)
        print("\n".join(head) + "\n", flush=True)
        tables = {
            "core": lambda: run_core(artfs, s3, data, work, args.reps, report),
            "mount": lambda: table_mount.run(artfs, s3, data, work, args.reps, scale, report),
            "staging": lambda: table_staging.run(artfs, s3, data, work, args.reps, report),
            "capture": lambda: table_capture.run(artfs, data, work, args.reps, report),
            "lineage": lambda: table_lineage.run(artfs, work, args.reps, report),
            "runs": lambda: table_runs.run(work, args.reps, args.quick, report),
            "gc": lambda: table_gc.run(work, args.reps, args.quick, report),
            "floor": lambda: table_floor.run(artfs, data, work, args.reps, args.quick, report),
            "huge": lambda: run_huge(work, args.reps, args.quick, report),
            "scale": lambda: table_scale.run(artfs, s3, work, args.reps, args.quick, args.scale_full, report),
        }
        failed = 0
        for name in which:
            try:
                tables[name]()
            except Exception as e:  # one broken table must not cost the others
                log(f"table {name} failed: {traceback.format_exc()}")
                print(f"## Table {TABLES.index(name) + 1} ({name}) — failed: {type(e).__name__}: {e}\n", flush=True)
                report["tables"][name] = {"error": f"{type(e).__name__}: {e}"}
                failed += 1
        if len(which) > 1:
            table_goals.run(report)  # issue 13's goals, from the tables just measured
    finally:
        log("cleaning up")
        CLEANUP.run_all()
        if args.json_path:
            with open(args.json_path, "w") as f:
                json.dump(report, f, indent=2, default=str)
            log(f"raw numbers in {args.json_path}")
    return 1 if failed else 0


def run_core(artfs: Artfs, s3: S3, data, work: str, reps: int, report: dict) -> str:
    log("Table 1 (core): local store")
    local = table_core.run_local(artfs, data, work, reps)
    log("Table 1 (core): moto S3 store")
    remote = table_core.run_s3(artfs, s3, data, work, reps)
    report["tables"]["core"] = {"local": local.as_json(), "s3": remote.as_json()}
    text = "\n".join([
        "## Table 1 — core: `artfs put` / `artfs get` (issue 2)",
        "",
        "### On the moto S3 store, beside boto3",
        "",
        table_core.table_s3(remote, data),
        "",
        "### On a local-directory store, beside `cp -r` on the same disk",
        "",
        table_core.table_local(local, data),
        "",
        "Notes: each artfs command runs with a fresh, empty cache dir (get is cold: no chunk cached); each "
        "repetition uses a fresh store; the page cache is dropped before every timed operation, for artfs "
        "and peers alike. boto3 uses the default TransferConfig for upload_file/download_file (multipart, "
        "10 threads), and one put_object/get_object per small file, sequential or from a pool of 8 threads. "
        "The re-put flips one byte in the middle of the big file and puts it again as the next version (new "
        "cache dir: artfs learns the parent's chunks from its manifest); 'uploaded' is `uploaded_bytes` "
        "from `artfs put --json`. " + table_core.start_note(remote),
        "",
    ])
    print(text, flush=True)
    return text


def run_huge(work: str, reps: int, quick: bool, report: dict) -> None:
    """bench/table_huge.py in this run's work dir (1/8 of the files with --quick)."""
    files, ttfb = (25_000, 12_500) if quick else (200_000, 100_000)
    print("## Table — huge versions through a mount (issue 13; `python -m bench.table_huge`)\n", flush=True)
    report["tables"]["huge"] = table_huge.main(["--files", str(files), "--ttfb-files", str(ttfb), "--reps",
                                                str(reps), "--workdir", os.path.join(work, "huge")])
    print(flush=True)


def _moto_version() -> str:
    try:
        from importlib.metadata import version

        return version("moto")
    except Exception:
        return "?"


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
