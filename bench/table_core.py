"""Table 1 (issue 2): `artfs put` / `artfs get` beside boto3 (S3 store) and `cp -r` (local store).

Every artfs measurement gets a fresh ARTFS_CACHE (a get is cold: nothing cached, no index) and every
repetition a fresh store (a new directory or S3 prefix), so nothing is deduplicated against an earlier
repetition. The page cache is dropped before every timed operation, artfs's and the peers' alike.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

from bench.common import (
    MB,
    CommandFailed,
    MiB,
    Sample,
    drop_caches,
    fmt_bytes,
    fmt_num,
    fmt_ratio,
    fresh_dir,
    log,
    md_table,
    ratio,
    remove_tree,
    run_cmd,
    timed,
    verdict,
)
from bench.data import Dataset, flip_byte
from bench.mounts import Artfs
from bench.s3peer import BUCKET, POOL, S3

# what: (source dir of the dataset, artifact name)
PARTS = ("big", "small", "mixed")

# boto3's download_file as a command of its own, like `artfs get` (and `aws s3 cp`): interpreter start,
# import and client included. And the least any Python S3 command starts with: the interpreter, botocore
# (which artfs imports; boto3 adds its transfer manager) and one S3 client, no request.
BOTO3_GET_COMMAND = "import sys, boto3; boto3.client('s3').download_file(*sys.argv[1:4])"
S3_CLIENT_START = "import botocore.session; botocore.session.get_session().create_client('s3')"


@dataclass
class CoreResults:
    store: str  # "local" or "s3"
    times: dict[str, Sample] = field(default_factory=dict)  # e.g. "artfs put big" → seconds per rep
    reput_uploaded: Sample = field(default_factory=lambda: Sample(unit="B"))

    def t(self, key: str) -> Sample:
        return self.times.setdefault(key, Sample(unit="s"))

    def as_json(self) -> dict:
        return {"store": self.store, "seconds": {k: v.as_json() for k, v in self.times.items()},
                "reput_uploaded_bytes": self.reput_uploaded.as_json()}


def _src(data: Dataset, part: str) -> str:
    return {"big": data.big_dir, "small": data.small_dir, "mixed": data.root}[part]


def _artfs_rep(artfs: Artfs, data: Dataset, res: CoreResults, store: str, work: str, rep: int) -> None:
    """One repetition of artfs put + cold get of each part, then the one-byte re-put, into `store`.
    A failing artfs command makes its row n/a (with the command's own message); the run goes on."""
    for part in PARTS:
        cache = fresh_dir(work, f"cache-put-{part}")
        drop_caches()
        with _failure_is_na(res.t(f"artfs put {part}")):
            t, out = artfs.put(_src(data, part), part, store, cache)
            res.t(f"artfs put {part}").values.append(t)
            log(f"  r{rep} {res.store} artfs put {part}: {t:.2f}s, uploaded {fmt_bytes(out.get('uploaded_bytes'))}")
        remove_tree(cache)
    for part in PARTS:
        cache = fresh_dir(work, f"cache-get-{part}")
        dest = os.path.join(work, f"get-{part}")
        drop_caches()
        with _failure_is_na(res.t(f"artfs get {part}")):
            t, _ = artfs.get(f"{part}:v0", dest, store, cache)
            res.t(f"artfs get {part}").values.append(t)
            log(f"  r{rep} {res.store} artfs get {part} (cold): {t:.2f}s")
        remove_tree(cache)
        remove_tree(dest)
    cache = fresh_dir(work, "cache-reput")
    offset = data.big_bytes // 2 + 12345
    flip_byte(data.big, offset)
    try:
        drop_caches()
        with _failure_is_na(res.t("artfs re-put big"), res.reput_uploaded):
            t, out = artfs.put(data.big_dir, "big", store, cache)
            res.t("artfs re-put big").values.append(t)
            res.reput_uploaded.values.append(out["uploaded_bytes"])
            log(f"  r{rep} {res.store} artfs re-put after a 1-byte change: {t:.2f}s, "
                f"uploaded {fmt_bytes(out['uploaded_bytes'])} ({out.get('ref')})")
    finally:
        flip_byte(data.big, offset)  # restore the shared data at once
    remove_tree(cache)


@contextlib.contextmanager
def _failure_is_na(*samples: Sample) -> Iterator[None]:
    try:
        yield
    except (CommandFailed, subprocess.TimeoutExpired, ValueError, KeyError) as e:
        reason = e.reason if isinstance(e, CommandFailed) else f"{type(e).__name__}: {e}"
        for s in samples:
            s.error = reason[:160]
        log(f"  failed: {reason}")


def run_local(artfs: Artfs, data: Dataset, work: str, reps: int) -> CoreResults:
    res = CoreResults("local")
    for rep in range(reps):
        store = fresh_dir(work, "store")
        _artfs_rep(artfs, data, res, store, work, rep)
        shutil.rmtree(store)
        for part in PARTS:  # the local-disk peer: a plain copy of the same bytes
            dest = os.path.join(work, f"cp-{part}")
            drop_caches()
            t = timed(lambda src=_src(data, part), d=dest: run_cmd(["cp", "-r", src, d]))
            res.t(f"cp {part}").values.append(t)
            log(f"  r{rep} local cp -r {part}: {t:.2f}s")
            shutil.rmtree(dest)
    return res


def run_s3(artfs: Artfs, s3: S3, data: Dataset, work: str, reps: int) -> CoreResults:
    res = CoreResults("s3")
    for rep in range(reps):
        prefix = f"core/r{rep}"
        _artfs_rep(artfs, data, res, s3.uri(prefix), work, rep)
        s3.delete_prefix(prefix + "/")
        peer = f"peer/r{rep}/"
        drop_caches()
        t = timed(lambda p=peer: s3.upload_file(data.big, p + "big.bin"))
        res.t("boto3 put big").values.append(t)
        dest = fresh_dir(work, "boto3-get")
        drop_caches()
        t2 = timed(lambda p=peer, d=dest: s3.download_file(p + "big.bin", os.path.join(d, "big.bin")))
        res.t("boto3 get big").values.append(t2)
        os.unlink(os.path.join(dest, "big.bin"))
        drop_caches()
        t3 = timed(lambda p=peer, d=dest: run_cmd(
            [sys.executable, "-c", BOTO3_GET_COMMAND, BUCKET, p + "big.bin", os.path.join(d, "big.bin")], env=s3.env))
        res.t("boto3 get big, new process").values.append(t3)
        t4 = timed(lambda: run_cmd([sys.executable, "-c", S3_CLIENT_START], env=s3.env))
        res.t("python + botocore + S3 client").values.append(t4)
        log(f"  r{rep} boto3 upload_file {t:.2f}s, download_file {t2:.2f}s, as a new process {t3:.2f}s "
            f"(python + botocore + an S3 client alone: {t4:.2f}s)")
        for threads in (1, POOL):
            sub = f"{peer}t{threads}/"
            shutil.rmtree(dest)
            os.makedirs(dest)
            drop_caches()
            t = timed(lambda s=sub, n=threads: s3.put_files(data.small_dir, data.small_names, s, n))
            res.t(f"boto3 put small x{threads}").values.append(t)
            drop_caches()
            t2 = timed(lambda s=sub, n=threads, d=dest: s3.get_files(s, data.small_names, d, n))
            res.t(f"boto3 get small x{threads}").values.append(t2)
            log(f"  r{rep} boto3 {data.small_count} small files, {threads} thread(s): put_object {t:.2f}s, "
                f"get_object {t2:.2f}s")
        shutil.rmtree(dest)
        s3.delete_prefix(peer)
    return res


# --- the tables ---


def _med(res: CoreResults, key: str) -> float | None:
    s = res.times.get(key)
    return s.value if s else None


def _cell(res: CoreResults, key: str, rate: float | None, unit: str) -> str:
    s = res.times.get(key)
    if s is not None and s.error:
        return f"n/a ({s.error})"
    return f"{fmt_num(rate)} {unit}" if rate is not None else "n/a"


def _rate(amount: float, seconds: float | None, per: float = 1.0) -> float | None:
    return None if not seconds else amount / per / seconds


def table_s3(res: CoreResults, data: Dataset) -> str:
    n = data.small_count
    amounts = {"big": (data.big_bytes, MB, "MB/s"), "small": (n, 1, "files/s"), "mixed": (data.total_bytes, MB, "MB/s")}
    labels = {
        "big": f"big file ({data.big_bytes // MiB} MiB)",
        "small": f"{n:,} small files ({data.small_bytes / MiB:.0f} MiB)",
        "mixed": f"mixed tree, one command ({data.total_bytes / MiB:.0f} MiB)",
    }
    targets = {("put", "big"): 0.8, ("get", "big"): 1.0, ("put", "small"): 5.0, ("get", "small"): 5.0}
    rows = []
    for op in ("put", "get"):
        for part in PARTS:
            amount, per, unit = amounts[part]
            a_t = _med(res, f"artfs {op} {part}")
            if part == "mixed":  # the peer moves the same tree: upload_file of the big one + the small ones
                seq_t = _sum(_med(res, f"boto3 {op} big"), _med(res, f"boto3 {op} small x1"))
                par_t = _sum(_med(res, f"boto3 {op} big"), _med(res, f"boto3 {op} small x{POOL}"))
            elif part == "big":
                seq_t = par_t = _med(res, f"boto3 {op} big")
            else:
                seq_t, par_t = _med(res, f"boto3 {op} small x1"), _med(res, f"boto3 {op} small x{POOL}")
            a, seq, par = (_rate(amount, x, per) for x in (a_t, seq_t, par_t))
            target = targets.get((op, part))
            r = ratio(a, seq)
            met = None if target is None or r is None else r >= target
            name = f"{op} {labels[part]}" + (", cold cache" if op == "get" else "")
            mine = _cell(res, f"artfs {op} {part}", a, unit)
            rows.append([name, _secs(a_t), mine, f"{fmt_num(seq)} {unit}", fmt_ratio(r),
                         f"{fmt_num(par)} {unit}" if part != "big" else "(same)", fmt_ratio(ratio(a, par)),
                         f"≥ {target:g}×" if target else "—", verdict(met)])
    a_t, cmd_t = _med(res, "artfs get big"), _med(res, "boto3 get big, new process")
    a, cmd = _rate(data.big_bytes, a_t, MB), _rate(data.big_bytes, cmd_t, MB)
    r = ratio(a, cmd)
    rows.append([f"get {labels['big']}, cold cache, beside boto3 run as a command of its own (interpreter, "
                 "import and client included, as artfs's)", _secs(a_t), _cell(res, "artfs get big", a, "MB/s"),
                 f"{fmt_num(cmd)} MB/s", fmt_ratio(r), "(same)", fmt_ratio(r), "≥ 1×",
                 verdict(None if r is None else r >= 1.0)])
    up = res.reput_uploaded.value
    rows.append(["re-put after changing 1 byte of the big file: uploaded", _secs(_med(res, "artfs re-put big")),
                 _bytes_cell(res), "—", "—", "—", "—", "< 4 MiB", verdict(None if up is None else up < 4 * MiB)])
    header = ["operation", "artfs wall", "artfs", "boto3, one object per file", "artfs ÷ boto3",
              f"boto3, {POOL} threads", f"artfs ÷ boto3×{POOL}", "target (vs one per file)", "met"]
    return md_table(header, rows)


def start_note(res: CoreResults) -> str:
    """What every Python S3 command pays before its first request, measured in this run."""
    t = _med(res, "python + botocore + S3 client")
    if t is None:
        return ""
    return (f"A Python process that imports botocore and makes one S3 client, sending nothing, takes {t:.2f} s "
            "here (median): the least any Python S3 command, `artfs` or boto3's, starts with; boto3 in this "
            "process pays none of it.")


def table_local(res: CoreResults, data: Dataset) -> str:
    n = data.small_count
    rows = []
    for op in ("put", "get"):
        for part in PARTS:
            amount, per, unit = {"big": (data.big_bytes, MB, "MB/s"), "small": (n, 1, "files/s"),
                                 "mixed": (data.total_bytes, MB, "MB/s")}[part]
            a_t, cp_t = _med(res, f"artfs {op} {part}"), _med(res, f"cp {part}")
            a, cp = _rate(amount, a_t, per), _rate(amount, cp_t, per)
            what = {"big": f"big file ({data.big_bytes // MiB} MiB)", "small": f"{n:,} small files",
                    "mixed": "mixed tree, one command"}[part]
            rows.append([f"{op} {what}" + (", cold cache" if op == "get" else ""), _secs(a_t),
                         _cell(res, f"artfs {op} {part}", a, unit), f"{fmt_num(cp)} {unit}", fmt_ratio(ratio(a, cp))])
    up = res.reput_uploaded.value
    rows.append(["re-put after changing 1 byte of the big file: stored", _secs(_med(res, "artfs re-put big")),
                 _bytes_cell(res), "—", f"{verdict(None if up is None else up < 4 * MiB)} (target < 4 MiB)"])
    return md_table(["operation", "artfs wall", "artfs", "local disk (`cp -r`)", "artfs ÷ cp"], rows)


def _bytes_cell(res: CoreResults) -> str:
    s = res.reput_uploaded
    return f"n/a ({s.error})" if s.error else fmt_bytes(s.value)


def _sum(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def _secs(t: float | None) -> str:
    return "n/a" if t is None else f"{t:.2f} s"
