"""The S3 server for the run, and boto3 as the plain-S3 peer: the same bytes moved object by object.

The peer runs in this process, at its best (no interpreter start, default TransferConfig); artfs runs as
its CLI, so artfs's figures include its process start (measured separately and printed in the notes).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from bench.common import CLEANUP, log
from tests.support.s3server import FOREIGN_AWS_VARS, S3Server, s3_env

BUCKET = "bench"
POOL = 8  # the "fair peer": boto3 with a thread pool of 8, as many as artfs uploads with


class S3:
    """The tests' moto server (ranged GETs streamed: tests/support/s3server_main.py), one bucket, a boto3 client."""

    def __init__(self, log_path: str) -> None:
        self.server = S3Server(log_path=log_path)
        self.server.start()
        CLEANUP.push("moto S3 server", self.server.stop)
        self.endpoint = self.server.endpoint
        self.env = {**os.environ, **s3_env(self.endpoint)}
        for name in FOREIGN_AWS_VARS:
            self.env.pop(name, None)
        self.creds = s3_env(self.endpoint)
        self.client = self.server.client()
        self.server.create_bucket(BUCKET)
        log(f"moto S3 server (ranged GETs streamed) at {self.endpoint}, pid {self.server.pid}")

    def uri(self, prefix: str) -> str:
        return f"s3://{BUCKET}/{prefix}"

    # --- the peer's operations ---

    def upload_file(self, path: str, key: str) -> None:
        self.client.upload_file(path, BUCKET, key)

    def download_file(self, key: str, path: str) -> None:
        self.client.download_file(BUCKET, key, path)

    def put_files(self, src_dir: str, names: list[str], prefix: str, threads: int = 1) -> None:
        def put(name: str) -> None:
            with open(os.path.join(src_dir, name), "rb") as f:
                self.client.put_object(Bucket=BUCKET, Key=f"{prefix}{name}", Body=f.read())

        self._each(put, names, threads)

    def get_files(self, prefix: str, names: list[str], dest_dir: str, threads: int = 1) -> None:
        def get(name: str) -> None:
            body = self.client.get_object(Bucket=BUCKET, Key=f"{prefix}{name}")["Body"].read()
            with open(os.path.join(dest_dir, name), "wb") as f:
                f.write(body)

        self._each(get, names, threads)

    @staticmethod
    def _each(fn, names: list[str], threads: int) -> None:
        if threads <= 1:
            for n in names:
                fn(n)
            return
        with ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(fn, names):
                pass

    def list_keys(self, prefix: str) -> list[str]:
        keys = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys

    def ranged_get(self, key: str, offset: int, size: int) -> bytes:
        rng = f"bytes={offset}-{offset + size - 1}"
        return self.client.get_object(Bucket=BUCKET, Key=key, Range=rng)["Body"].read()

    def delete_prefix(self, prefix: str) -> None:
        """Free the server's memory and disk between repetitions."""
        keys = self.list_keys(prefix)
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            self.client.delete_objects(Bucket=BUCKET, Delete={"Objects": batch, "Quiet": True})
