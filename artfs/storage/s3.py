"""S3Store: a store in an S3 bucket (or any S3-compatible service), under an optional key prefix.

`create_if_absent` is a conditional PUT (`If-None-Match: *`): S3 itself refuses the second writer, so
version numbers can be claimed safely from many machines. Retries are not done here (botocore makes a
single attempt): RetryingStore wraps every store, so one policy applies to all of them.
Every botocore failure goes through `_translate`, the one place that decides what is transient.

The client is botocore's own, not boto3's: boto3 adds nothing to the calls made here but ~100 ms of imports
(itself and s3transfer) to every command's start (`artfs get` is measured against boto3 *including* its
start). boto3's transfer manager is imported only for a multipart upload (`put_file` of a big pack).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator

import botocore.exceptions as bx
import botocore.loaders
import botocore.session
from botocore.config import Config

from artfs.errors import InvalidName, StoreError, StoreNotFound, StoreUnavailable, TransientStoreError
from artfs.storage.store import ObjectInfo, Store

try:  # urllib3 is a botocore dependency; its errors may escape from a response body read
    import urllib3.exceptions

    _Urllib3Error: type[Exception] = urllib3.exceptions.HTTPError
except ImportError:  # pragma: no cover
    _Urllib3Error = OSError

SINGLE_PUT_LIMIT = 64 << 20  # files below this go in one PUT; larger ones in multipart parts
PART_SIZE = 16 << 20
UPLOAD_THREADS = 8

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AllAccessDisabled",
    "AccountProblem",
    "403",
}
_TRANSIENT = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "OperationAborted",
    # A concurrent conditional write on the same key: AWS says to retry; the retry then gets 412 or wins.
    "ConditionalRequestConflict",
}
_CREDENTIALS = (bx.NoCredentialsError, bx.PartialCredentialsError, bx.CredentialRetrievalError)


def _one_line(text: object) -> str:
    return re.sub(r"\s+", " ", str(text)).strip()


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` → ("bucket", "some/prefix/"); the prefix may be empty."""
    if not uri.startswith("s3://"):
        raise InvalidName(f"not an S3 URI: {uri!r} (use s3://bucket/prefix)")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise InvalidName(f"S3 URI {uri!r} has no bucket (use s3://bucket/prefix)")
    prefix = prefix.strip("/")
    return bucket, prefix + "/" if prefix else ""


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _checked_range(key: str, data: bytes, offset: int, length: int, content_range: str | None) -> bytes:
    """The bytes of a ranged GET, or TransientStoreError when the body is shorter than the range the server
    said it sends: a body cut on the wire (even with a Content-Length that matches the cut) is retried like
    any dropped connection, not mistaken for a damaged object. Short only where the object ends."""
    match = _CONTENT_RANGE.fullmatch(content_range or "")
    if match is None:  # no Content-Range: a server that ignored the Range header sent the whole object
        return data[offset : offset + length] if len(data) > length else data
    first, last, total = match.groups()
    expected = int(last) - int(first) + 1
    if total != "*":
        expected = min(expected, int(total) - offset, length)
    if len(data) != expected:
        raise TransientStoreError(f"short read of {key}: {len(data)} of {expected} bytes arrived")
    return data


# The services a session's clients may be made for: S3, and what botocore's credential chain asks for
# credentials (assume-role and web-identity profiles: STS, as on EKS; SSO profiles and their token
# refresh; `aws login`).
SESSION_SERVICES = ("s3", "sts", "sso", "sso-oidc", "signin")


class _S3Loader(botocore.loaders.Loader):
    """botocore's data loader for a session that makes S3 clients (and the credential chain's). The stock
    one checks a service's name against a listing of every service it has a model for (~450 directories,
    a stat per file: ~50 ms of every S3 command's start, more on a cold disk); this one knows the names,
    and loads their models from the same search paths as the stock one would.

    With a `scratch` directory it also reads botocore's endpoint table (endpoints.json, 1.2 MB: ~40 ms to
    parse at every start) as a copy kept there that holds only SESSION_SERVICES' entries (19 KB), made once
    per botocore file; without one, or on any trouble with the copy, the stock table."""

    def __init__(self, *args: object, scratch: str | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.scratch = scratch

    def list_available_services(self, type_name: str) -> list[str]:
        return list(SESSION_SERVICES)

    def load_data_with_path(self, name: str) -> tuple[dict, str]:
        if name == "endpoints" and self.scratch:
            found = _trimmed_endpoints(self.search_paths, self.scratch)
            if found is not None:
                return found
        return super().load_data_with_path(name)


def _trimmed_endpoints(search_paths: list[str], scratch: str) -> tuple[dict, str] | None:
    """botocore's endpoint table with SESSION_SERVICES' entries only, and the path of the table it was cut
    from; None where it cannot be had (a compressed table, an unreadable one: the stock loader decides)."""
    source = next((os.path.join(d, "endpoints.json") for d in search_paths
                   if os.path.isfile(os.path.join(d, "endpoints.json"))), None)
    if source is None:
        return None
    try:
        st = os.stat(source)
        tag = hashlib.sha256(f"{botocore.__version__}:{source}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()
        copy = os.path.join(scratch, f"endpoints-{tag[:24]}.json")
        try:
            with open(copy, "rb") as f:
                data = json.load(f)
            if isinstance(data, dict) and isinstance(data.get("partitions"), list):
                return data, source
        except (OSError, ValueError):
            pass
        with open(source, "rb") as f:
            data = json.load(f)
        for partition in data["partitions"]:
            services = partition.get("services", {})
            partition["services"] = {k: v for k, v in services.items() if k in SESSION_SERVICES}
        os.makedirs(scratch, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=scratch, prefix=".endpoints-")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
            os.replace(tmp, copy)  # whole or not at all: another process may be reading it
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return data, source
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _session(scratch: str | None = None) -> botocore.session.Session:
    """A new botocore session (the AWS configuration chain, as boto3 reads it) with the S3-only loader;
    `scratch`: where it may keep its trimmed endpoint table (see _S3Loader)."""
    session = botocore.session.Session()
    stock = session.get_component("data_loader")  # built from AWS_DATA_PATH (no I/O yet): its search paths
    session.register_component(
        "data_loader",
        _S3Loader(extra_search_paths=list(stock.search_paths), include_default_search_paths=False, scratch=scratch),
    )
    return session


class S3Store(Store):
    """Objects live at `<prefix><key>` in one bucket. One botocore client, shared by all threads."""

    def __init__(self, uri: str, endpoint_url: str | None = None, timeout: float = 20.0,
                 scratch: str | None = None) -> None:
        """`timeout`: seconds to connect (at most 5) and between bytes of an answer, per attempt;
        `scratch`: a disposable directory for a trimmed copy of botocore's endpoint table (faster start)."""
        self.bucket, self.prefix = parse_s3_uri(uri)
        self.uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None  # the AWS chain, as botocore
        config = Config(
            max_pool_connections=32,
            connect_timeout=min(5.0, timeout),
            read_timeout=timeout,
            # One attempt per call (`max_attempts` would count *extra* tries): RetryingStore retries.
            retries={"total_max_attempts": 1, "mode": "standard"},
            s3={"addressing_style": "path"} if endpoint else None,
        )
        try:
            # A private session (the AWS configuration chain, as boto3 reads it): sessions are not safe to
            # share between threads; the client is.
            self._client = _session(scratch).create_client("s3", endpoint_url=endpoint, config=config)
        except (ValueError, bx.BotoCoreError) as e:
            raise StoreUnavailable(f"cannot open S3 store {self.uri}: {_one_line(e)}") from e
        self.endpoint = self._client.meta.endpoint_url

    def _key(self, key: str) -> str:
        if not key or key.startswith("/"):
            raise InvalidName(f"invalid store key {key!r}")
        return self.prefix + key

    def _translate(self, e: BaseException, key: str) -> StoreError:
        """The one place that maps botocore failures to store errors."""
        where = f"{key!r} in {self.uri}"
        if isinstance(e, _CREDENTIALS):
            return StoreUnavailable(
                "no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile"
                + ("" if isinstance(e, bx.NoCredentialsError) else f" ({_one_line(e)})")
            )
        if isinstance(e, bx.SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(e):
            return StoreUnavailable(f"cannot trust {self.endpoint}: {_one_line(e)}")
        if isinstance(e, (bx.ConnectionError, bx.HTTPClientError, _Urllib3Error, ConnectionError, TimeoutError)):
            return TransientStoreError(f"cannot reach {self.endpoint}: {_one_line(e)}")
        if isinstance(e, (bx.IncompleteReadError, bx.FlexibleChecksumError)):
            return TransientStoreError(f"damaged transfer of {where}: {_one_line(e)}")
        if isinstance(e, bx.ClientError):
            err = e.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            message = _one_line(err.get("Message") or e)
            if code in _NOT_FOUND:
                return StoreNotFound(f"{where} not found")
            if code == "NoSuchBucket":
                return StoreUnavailable(f"bucket {self.bucket!r} does not exist (store {self.uri})")
            if code in _DENIED or status == 403:
                return StoreUnavailable(f"access to {self.uri} denied ({code}): {message}")
            if code in _TRANSIENT or status >= 500 or status == 429:
                return TransientStoreError(f"S3 busy or failing on {where} ({code or status}): {message}")
            return StoreError(f"S3 error on {where} ({code or status}): {message}")
        if isinstance(e, bx.ParamValidationError):
            return StoreError(f"bad S3 request for {where}: {_one_line(e)}")
        return StoreError(f"S3 failed on {where}: {type(e).__name__}: {_one_line(e)}")

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        try:
            yield
        except (bx.BotoCoreError, bx.ClientError, _Urllib3Error, OSError) as e:
            raise self._translate(e, key) from e

    def get(self, key: str) -> bytes:
        with self._errors(key):
            body = self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            with contextlib.closing(body):
                return body.read()

    def check(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except bx.ClientError as e:
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if status == 404 or e.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
                raise StoreUnavailable(
                    f"bucket {self.bucket!r} not found at {self.endpoint} (or that endpoint is not S3)"
                ) from None
            raise self._translate(e, "the bucket") from e
        except Exception as e:  # noqa: BLE001 - translated: unreachable, denied, …
            raise self._translate(e, "the bucket") from e

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Like pread: a range past the end of the object comes back short."""
        if offset < 0 or length < 0:
            raise ValueError(f"bad range offset={offset} length={length}")
        with self._errors(key):
            if length == 0:  # S3 has no empty range: check existence instead
                self._client.head_object(Bucket=self.bucket, Key=self._key(key))
                return b""
            try:
                resp = self._client.get_object(
                    Bucket=self.bucket, Key=self._key(key), Range=f"bytes={offset}-{offset + length - 1}"
                )
            except bx.ClientError as e:
                if e.response.get("Error", {}).get("Code") == "InvalidRange":
                    return b""  # the object exists but ends before `offset`
                raise
            with contextlib.closing(resp["Body"]) as body:
                data = body.read()
        return _checked_range(key, data, offset, length, resp.get("ContentRange"))

    def put(self, key: str, data: bytes) -> None:
        with self._errors(key):
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def put_file(self, key: str, path: str | os.PathLike) -> None:
        """One PUT for small files; multipart (parallel parts) for big packs. Both publish atomically."""
        size = os.path.getsize(path)  # a missing source is the caller's error: let it raise as is
        with self._errors(key):
            if size < SINGLE_PUT_LIMIT:
                with open(path, "rb") as f:
                    self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=f)
                return
        self._put_multipart(key, os.fspath(path))

    def _put_multipart(self, key: str, path: str) -> None:
        """boto3's transfer manager over our client: parts in parallel, one object at the end."""
        from boto3.exceptions import S3UploadFailedError
        from boto3.s3.transfer import S3Transfer, TransferConfig

        transfer = TransferConfig(
            multipart_threshold=SINGLE_PUT_LIMIT,
            multipart_chunksize=PART_SIZE,
            max_concurrency=UPLOAD_THREADS,
            use_threads=True,
        )
        with self._errors(key):
            try:
                with S3Transfer(self._client, transfer) as manager:
                    manager.upload_file(path, self.bucket, self._key(key))
            except S3UploadFailedError as e:  # boto3 wraps the failure of a part: translate what it wraps
                cause = e.__context__
                if isinstance(cause, (bx.ClientError, bx.BotoCoreError)):
                    raise self._translate(cause, key) from e
                raise self._translate(e, key) from e

    def create_if_absent(self, key: str, data: bytes) -> bool:
        with self._errors(key):
            try:
                self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
            except bx.ClientError as e:
                if e.response.get("Error", {}).get("Code") == "PreconditionFailed":
                    return False
                raise
        return True

    def list(self, prefix: str) -> Iterator[str]:
        """S3 lists keys in UTF-8 byte order, which is also Python's str order."""
        cut = len(self.prefix)
        with self._errors(prefix or "/"):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix
            )
            for page in pages:
                for obj in page.get("Contents", ()):
                    yield obj["Key"][cut:]

    def list_info(self, prefix: str) -> Iterator[ObjectInfo]:
        """The same listing; S3 gives sizes and last-modified times in it at no extra cost."""
        cut = len(self.prefix)
        with self._errors(prefix or "/"):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix
            )
            for page in pages:
                for obj in page.get("Contents", ()):
                    yield ObjectInfo(obj["Key"][cut:], int(obj.get("Size", 0)), obj["LastModified"].timestamp())

    def delete(self, key: str) -> None:
        with self._errors(key):
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def close(self) -> None:
        self._client.close()
