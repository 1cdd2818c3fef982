"""s3:// objects: pinned by VersionId (versioned buckets) or ETag, read with the version named or If-Match."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from artfs.errors import ArtfsError, InvalidName, StoreUnavailable
from artfs.storage.sources.common import (
    CONNECT_TIMEOUT,
    TIMEOUT,
    Listed,
    Objects,
    Pin,
    SourceChanged,
    Stream,
    changed,
    too_many,
)


def parse_s3(uri: str) -> tuple[str, str]:
    """`s3://bucket/key` → (bucket, key); the key may be empty (the whole bucket) or end in '/' (a prefix)."""
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket or "/" in bucket:
        raise InvalidName(f"{uri!r}: no bucket (use s3://bucket/key)")
    return bucket, key


class S3Objects(Objects):
    """Objects in any bucket the AWS configuration chain may read (AWS_ENDPOINT_URL[_S3] for S3-compatible
    servers: botocore reads them itself)."""

    page_size = 1000  # keys per LIST request (S3's maximum)

    def __init__(self) -> None:
        import boto3
        import botocore.exceptions as bx
        from botocore.config import Config

        self._bx = bx
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        config = Config(max_pool_connections=32, connect_timeout=CONNECT_TIMEOUT, read_timeout=TIMEOUT,
                        retries={"total_max_attempts": 2, "mode": "standard"},
                        s3={"addressing_style": "path"} if endpoint else None)
        try:
            self._client = boto3.session.Session().client("s3", config=config)
        except (ValueError, bx.BotoCoreError) as e:
            raise StoreUnavailable(f"cannot open an S3 client: {e}") from None

    @contextlib.contextmanager
    def _errors(self, uri: str, pin: Pin | None = None) -> Iterator[None]:
        bx = self._bx
        try:
            yield
        except bx.ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if pin is not None and (code in ("PreconditionFailed", "NoSuchKey", "NoSuchVersion", "404", "412",
                                             "InvalidRange") or status in (404, 412, 416)):
                gone = status == 404 or code in ("NoSuchKey", "NoSuchVersion", "404")
                raise changed(pin, "is gone" if gone else "changed") from None
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ArtfsError(f"{uri} does not exist") from None
            if code == "NoSuchBucket":
                raise ArtfsError(f"{uri}: bucket {parse_s3(uri)[0]!r} does not exist") from None
            if status == 403 or code == "AccessDenied":
                raise StoreUnavailable(f"access to {uri} denied ({code or status})") from None
            raise StoreUnavailable(f"S3 error on {uri} ({code or status}): {e}") from None
        except (bx.NoCredentialsError, bx.PartialCredentialsError) as e:
            raise StoreUnavailable(f"no AWS credentials to read {uri}: {e}") from None
        except (bx.BotoCoreError, OSError) as e:
            raise StoreUnavailable(f"cannot reach S3 for {uri}: {e}") from None

    def _versioned(self, bucket: str, uri: str) -> bool:
        with self._errors(uri):
            try:
                return self._client.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled"
            except self._bx.ClientError as e:
                if int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0) == 403:
                    return False  # may not ask: the ETag pins the object (and HEAD still gives a VersionId)
                raise

    def find(self, uri: str, max_objects: int) -> list[Listed]:
        bucket, key = parse_s3(uri)
        if key and not key.endswith("/"):
            with self._errors(uri):
                try:
                    head = self._client.head_object(Bucket=bucket, Key=key)
                except self._bx.ClientError as e:
                    if str(e.response.get("Error", {}).get("Code")) not in ("404", "NoSuchKey", "NotFound"):
                        raise
                    head = None
            if head is not None:
                return [Listed("", self._pin(bucket, key, head.get("ContentLength", 0), head.get("ETag", ""),
                                             head.get("VersionId", "")), _ns(head.get("LastModified")))]
            key += "/"  # no such object: a prefix named without its slash, whole segments
        out = self._list_prefix(bucket, key, uri, max_objects)
        if not out:
            raise ArtfsError(f"{uri}: no such object, and no objects under it")
        return out

    def _list_prefix(self, bucket: str, key: str, uri: str, max_objects: int) -> list[Listed]:
        """One LIST per 1,000 objects (versions too, in a versioned bucket), no request per object."""
        versioned = self._versioned(bucket, uri)
        out: list[Listed] = []
        count = 0
        with self._errors(uri):
            paging = {"PageSize": self.page_size}
            if versioned:
                pages = self._client.get_paginator("list_object_versions").paginate(
                    Bucket=bucket, Prefix=key, PaginationConfig=paging)
                items = (v for page in pages for v in page.get("Versions", ()) if v.get("IsLatest"))
            else:
                pages = self._client.get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix=key, PaginationConfig=paging)
                items = (o for page in pages for o in page.get("Contents", ()))
            for obj in items:
                rel = obj["Key"][len(key):]
                if not rel or rel.endswith("/"):
                    continue  # a "folder" marker, not a file
                count += 1
                if count <= max_objects:
                    pin = self._pin(bucket, obj["Key"], obj.get("Size", 0), obj.get("ETag", ""),
                                    obj.get("VersionId", "") if versioned else "")
                    out.append(Listed(rel, pin, _ns(obj.get("LastModified"))))
        if count > max_objects:
            raise too_many(uri, count, max_objects)
        return out

    @staticmethod
    def _pin(bucket: str, key: str, size: int, etag: str, version_id: str | None) -> Pin:
        return Pin(f"s3://{bucket}/{key}", int(size), etag=etag or "",
                   version_id="" if version_id in (None, "", "null") else str(version_id))

    def _condition(self, pin: Pin) -> dict[str, str]:
        bucket, key = parse_s3(pin.uri)
        args = {"Bucket": bucket, "Key": key}
        if pin.version_id:
            args["VersionId"] = pin.version_id
        if pin.etag:
            args["IfMatch"] = pin.etag
        return args

    def open(self, pin: Pin) -> Stream:
        with self._errors(pin.uri, pin):
            resp = self._client.get_object(**self._condition(pin))
        if int(resp.get("ContentLength", -1)) != pin.size:
            resp["Body"].close()
            raise changed(pin, f"changed (now {resp.get('ContentLength')} bytes)")
        return _S3Body(resp["Body"], self, pin)

    def read(self, pin: Pin, offset: int, length: int) -> bytes:
        with self._errors(pin.uri, pin):
            resp = self._client.get_object(Range=f"bytes={offset}-{offset + length - 1}", **self._condition(pin))
            with contextlib.closing(resp["Body"]) as body:
                data = body.read()
        total = str(resp.get("ContentRange", "")).rpartition("/")[2]
        if total != str(pin.size):
            raise changed(pin, f"changed (now {total or '?'} bytes)")
        if len(data) != length:
            raise StoreUnavailable(f"short read of {pin.uri}: {len(data)} of {length} bytes arrived")
        return data

    def check(self, pin: Pin) -> str | None:
        args = self._condition(pin)
        try:
            with self._errors(pin.uri, pin):
                head = self._client.head_object(**args)
        except SourceChanged as e:
            return str(e)
        if int(head.get("ContentLength", -1)) != pin.size:
            return str(changed(pin, f"changed (now {head.get('ContentLength')} bytes)"))
        return None


class _S3Body:
    """A GetObject body read whole at add time, errors translated."""

    def __init__(self, body: object, objects: S3Objects, pin: Pin) -> None:
        self.body, self.objects, self.pin = body, objects, pin

    def read(self, n: int = -1) -> bytes:
        with self.objects._errors(self.pin.uri, self.pin):
            return self.body.read(n if n >= 0 else None)  # type: ignore[attr-defined]

    def close(self) -> None:
        self.body.close()  # type: ignore[attr-defined]


def _ns(when: object) -> int:
    ts = getattr(when, "timestamp", None)
    return int(ts() * 1e9) if ts is not None else 0
