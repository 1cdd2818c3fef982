"""Table 3 (issue 4): writing into MNT/NAME/staging and `artfs seal`, beside local disk, rclone, s3fs, boto3.

Per repetition, on a fresh store prefix, a fresh cache and a fresh mount: `mkdir MNT/NAME` (a new
artifact), write the big file into staging, seal (→ v0), `cp -r` the small files in, seal (→ v1),
change one small file, seal again (→ v2) and read the bytes it uploaded from `artfs seal --json`.
If the mount, `staging/` or `artfs seal` is missing, the artfs rows print n/a with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess

from bench.common import (
    MB,
    CommandFailed,
    Sample,
    drop_caches,
    fmt,
    fmt_bytes,
    fmt_num,
    fmt_ratio,
    fresh_dir,
    log,
    md_table,
    probe,
    ratio,
    remove_tree,
    run_cmd,
    timed,
    verdict,
)
from bench.data import Dataset
from bench.mounts import Artfs, ArtfsMount, Mount, MountUnavailable, RcloneMount, S3fsMount
from bench.s3peer import BUCKET, POOL, S3

NAME = "staged"
WRITERS = ("local disk", "artfs", "rclone", "s3fs")
LABELS = {"local disk": "local disk", "artfs": "**artfs staging**", "rclone": "rclone mount, vfs-cache writes",
          "s3fs": "s3fs"}
TIMEOUT = {"write": 900, "cp": 1800, "seal": 1800}


class StagingUnavailable(RuntimeError):
    pass


class StagingBench:
    def __init__(self, artfs: Artfs, s3: S3, data: Dataset, work: str, reps: int) -> None:
        self.artfs, self.s3, self.data, self.work, self.reps = artfs, s3, data, work, reps
        self.write = {s: Sample(unit="MB/s") for s in WRITERS}
        self.cp = {s: Sample(unit="files/s") for s in WRITERS}
        self.seal_big = Sample(unit="s")
        self.seal_small = Sample(unit="s")
        self.reseal_uploaded = Sample(unit="B")
        self.boto_big = Sample(unit="s")
        self.boto_small = Sample(unit="s")
        self.broken: dict[str, str] = {}

    # --- artfs ---

    def _seal(self, path: str, cache: str, store: str, message: str) -> tuple[float, dict | None]:
        env = {**self.artfs.env_for(cache), "ARTFS_STORE": store}
        args = [self.artfs.exe, "seal", path, "-m", message]
        out: list[subprocess.CompletedProcess] = []
        try:
            t = timed(lambda: out.append(run_cmd([*args, "--json"], env=env, timeout=TIMEOUT["seal"])))
        except CommandFailed as e:
            if "--json" not in e.reason and "no such option" not in e.reason.lower():
                raise
            t = timed(lambda: out.append(run_cmd(args, env=env, timeout=TIMEOUT["seal"])))
            return t, None
        try:
            return t, json.loads(out[-1].stdout)
        except ValueError:
            return t, None

    def run_artfs(self, rep: int) -> None:
        if "artfs" in self.broken:
            return
        d = self.data
        prefix = f"stage/r{rep}"
        store = self.s3.uri(prefix)
        cache = fresh_dir(self.work, "cache-stage")
        try:
            with ArtfsMount(self.artfs, fresh_dir(self.work, "mnt-stage"), store, cache) as m:
                art = os.path.join(m.path, NAME)
                try:
                    os.mkdir(art)
                except OSError as e:
                    raise StagingUnavailable(f"staging not available: mkdir MNT/{NAME}: {e.strerror}") from None
                staging = os.path.join(art, "staging")
                if not os.path.isdir(staging):
                    raise StagingUnavailable("staging not available: no MNT/NAME/staging")
                drop_caches()
                r = probe("write", d.big, os.path.join(staging, "big.bin"), timeout=TIMEOUT["write"])
                self.write["artfs"].values.append(r["bytes"] / MB / r["seconds"])
                t, _ = self._seal(staging, cache, store, "big file")
                self.seal_big.values.append(t)
                log(f"  r{rep} artfs: write {r['bytes'] / MB / r['seconds']:.0f} MB/s, seal {t:.2f}s")
                drop_caches()
                r = probe("cp", d.small_dir, os.path.join(staging, "small"), timeout=TIMEOUT["cp"])
                self.cp["artfs"].values.append(d.small_count / r["seconds"])
                t, _ = self._seal(staging, cache, store, "small files")
                self.seal_small.values.append(t)
                log(f"  r{rep} artfs: cp -r {d.small_count / r['seconds']:.0f} files/s, seal {t:.2f}s")
                victim = os.path.join(staging, "small", d.small_names[len(d.small_names) // 2])
                with open(victim, "r+b") as f:
                    f.write(b"changed!")
                t, out = self._seal(staging, cache, store, "one small file changed")
                if out is not None and "uploaded_bytes" in out:
                    self.reseal_uploaded.values.append(out["uploaded_bytes"])
                    log(f"  r{rep} artfs: re-seal {t:.2f}s, uploaded {fmt_bytes(out['uploaded_bytes'])}")
                else:
                    self.reseal_uploaded.error = "`artfs seal --json` gives no uploaded_bytes"
        except (MountUnavailable, StagingUnavailable) as e:
            self.broken["artfs"] = str(e)
            log(f"  artfs staging: n/a ({e})")
        except CommandFailed as e:
            if "No such command" in e.reason:
                self.broken["artfs"] = "staging not available: `artfs seal` missing"
            else:
                self.broken["artfs"] = f"`artfs seal` failed: {e.reason}"
            log(f"  artfs staging: n/a ({self.broken['artfs']})")
        finally:
            remove_tree(cache)
            self.s3.delete_prefix(prefix + "/")

    # --- peers ---

    def run_peer(self, system: str, rep: int) -> None:
        if system in self.broken:
            return
        try:
            if system == "local disk":
                self._write_into(system, fresh_dir(self.work, "stage-local"), rep)
                remove_tree(os.path.join(self.work, "stage-local"))
                return
            prefix = f"stagepeer/{system}-r{rep}"
            mnt = fresh_dir(self.work, f"mnt-{system}")
            peer_dir = fresh_dir(self.work, f"{system}-work")
            m: Mount
            if system == "rclone":
                m = RcloneMount(mnt, self.s3, prefix, peer_dir, "writes")
            else:
                self.s3.client.put_object(Bucket=BUCKET, Key=prefix + "/", Body=b"")  # s3fs wants the dir
                m = S3fsMount(mnt, self.s3, prefix, peer_dir)
            try:
                with m:
                    self._write_into(system, m.path, rep)
            finally:
                remove_tree(peer_dir)
                self.s3.delete_prefix(prefix + "/")
        except MountUnavailable as e:
            self.broken[system] = str(e)
            log(f"  {system}: n/a ({e})")
        except Exception as e:  # one failed figure is an n/a, never the end of the run
            for s in (self.write[system], self.cp[system]):
                if not s.values:
                    s.error = str(e)[:160]
            log(f"  {system}: failed: {e}")


    def _write_into(self, system: str, root: str, rep: int) -> None:
        d = self.data
        drop_caches()
        r = probe("write", d.big, os.path.join(root, "big.bin"), timeout=TIMEOUT["write"])
        self.write[system].values.append(r["bytes"] / MB / r["seconds"])
        drop_caches()
        c = probe("cp", d.small_dir, os.path.join(root, "small"), timeout=TIMEOUT["cp"])
        self.cp[system].values.append(d.small_count / c["seconds"])
        log(f"  r{rep} {system}: write {r['bytes'] / MB / r['seconds']:.0f} MB/s, "
            f"cp -r {d.small_count / c['seconds']:.0f} files/s")

    def run_boto3(self, rep: int) -> None:
        d, prefix = self.data, f"stagepeer/boto3-r{rep}/"
        drop_caches()
        self.boto_big.values.append(timed(lambda: self.s3.upload_file(d.big, prefix + "big.bin")))
        drop_caches()
        self.boto_small.values.append(
            timed(lambda: self.s3.put_files(d.small_dir, d.small_names, prefix + "small/", threads=POOL)))
        log(f"  r{rep} boto3: upload_file {self.boto_big.values[-1]:.2f}s, {d.small_count} put_object "
            f"({POOL} threads) {self.boto_small.values[-1]:.2f}s")
        self.s3.delete_prefix(prefix)

    def run(self) -> None:
        why = self.artfs.has_command("mount") or self.artfs.has_command("seal")
        if why:
            self.broken["artfs"] = f"staging not available: {why}"
        for rep in range(self.reps):
            log(f"Table 3 (staging), repetition {rep + 1}/{self.reps}")
            self.run_artfs(rep)
            for system in ("local disk", "rclone", "s3fs"):
                self.run_peer(system, rep)
            self.run_boto3(rep)

    # --- output ---

    def _cell(self, system: str, s: Sample, first: bool) -> str:
        if system in self.broken:
            return f"n/a ({self.broken[system]})" if first else "n/a"
        return fmt(s) if (s.values or s.error) else "—"

    def _artfs(self, s: Sample) -> float | None:
        return None if "artfs" in self.broken else s.value

    def tables(self) -> str:
        d = self.data
        local_w, local_cp = self.write["local disk"].value, self.cp["local disk"].value
        lines = [(f"sequential write of a {d.big_bytes >> 20} MiB file", self.write, local_w),
                 (f"`cp -r` of {d.small_count:,} small files", self.cp, local_cp)]
        rows = []
        for i, (label, samples, ref) in enumerate(lines):
            r = ratio(self._artfs(samples["artfs"]), ref)
            rows.append([label, *(self._cell(s, samples[s], i == 0) for s in WRITERS), fmt_ratio(r), "≥ 0.5×",
                         verdict(None if r is None else r >= 0.5)])
        t1 = md_table(["", *(LABELS[s] for s in WRITERS), "artfs ÷ local", "target", "met"], rows)

        na = "n/a (see above)" if "artfs" in self.broken else None
        sb, ss = self._artfs(self.seal_big), self._artfs(self.seal_small)
        bb, bs = self.boto_big.value, self.boto_small.value
        seal_big_rate = None if sb is None else d.big_bytes / MB / sb
        boto_big_rate = None if bb is None else d.big_bytes / MB / bb
        seal_small_rate = None if ss is None else d.small_count / ss
        boto_small_rate = None if bs is None else d.small_count / bs
        r_big, r_small = ratio(seal_big_rate, boto_big_rate), ratio(seal_small_rate, boto_small_rate)
        up = self._artfs(self.reseal_uploaded)
        share = None if up is None else up / d.total_bytes
        up_cell = na or (fmt(self.reseal_uploaded) if self.reseal_uploaded.error else
                         f"{fmt_bytes(up)} ({share * 100:.3f}% of the tree)" if up is not None else "—")
        srows = [
            [f"seal of the {d.big_bytes >> 20} MiB file (→ v0)", na or _rate_cell(sb, seal_big_rate, "MB/s"),
             _rate_cell(bb, boto_big_rate, "MB/s") + " (upload_file)", fmt_ratio(r_big), "≥ 0.8×",
             verdict(None if r_big is None else r_big >= 0.8)],
            [f"seal of {d.small_count:,} new small files (→ v1)", na or _rate_cell(ss, seal_small_rate, "files/s"),
             _rate_cell(bs, boto_small_rate, "files/s") + f" (put_object, {POOL} threads)", fmt_ratio(r_small),
             "—", "—"],
            ["re-seal after changing one small file (→ v2): uploaded", up_cell, "—", "—", "< 1% of the tree",
             verdict(None if share is None else share < 0.01)],
        ]
        t2 = md_table(["", "artfs seal", "boto3, same bytes", "artfs ÷ boto3", "target", "met"], srows)
        notes = (
            "Notes: writes are 1 MiB `write`s then `close`, no fsync (as `cp` does), from a source read "
            "beforehand; `cp -r` from a page-cache-cold source. Where the bytes go when the write returns: "
            "local disk and artfs staging: local disk (artfs uploads at seal); rclone (writes mode): its "
            "local cache, uploaded in the background after close (not in the figure); s3fs: uploaded to S3 "
            "on close (in the figure). A seal is `artfs seal MNT/NAME/staging` wall time (CLI start included). "
            f"Each repetition: fresh store prefix, cache and mount; the artifact is new (`mkdir MNT/{NAME}`)."
        )
        return "\n".join(["## Table 3 — staging and seal (issue 4), moto S3", "", t1, "", t2, "", notes, ""])

    def as_json(self) -> dict:
        return {"broken": self.broken, "write_MBps": {k: v.as_json() for k, v in self.write.items()},
                "cp_files_per_s": {k: v.as_json() for k, v in self.cp.items()},
                "seal_big_s": self.seal_big.as_json(), "seal_small_s": self.seal_small.as_json(),
                "reseal_uploaded_bytes": self.reseal_uploaded.as_json(),
                "boto3_upload_file_s": self.boto_big.as_json(), "boto3_put_small_s": self.boto_small.as_json()}


def _rate_cell(seconds: float | None, rate: float | None, unit: str) -> str:
    return "n/a" if seconds is None else f"{seconds:.2f} s, {fmt_num(rate)} {unit}"


def run(artfs: Artfs, s3: S3, data: Dataset, work: str, reps: int, report: dict) -> str:
    bench = StagingBench(artfs, s3, data, work, reps)
    try:
        bench.run()
    finally:
        report["tables"]["staging"] = bench.as_json()
    text = bench.tables()
    print(text, flush=True)
    return text
