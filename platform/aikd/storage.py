"""One way from a URI to a filesystem: every job addresses its data through here.

``s3://bucket/prefix`` goes to pyarrow's S3 client configured from the standard AWS
variables (pyarrow ignores ``AWS_ENDPOINT_URL`` by itself, so it is read here);
``file:///abs/path`` and plain paths go to the local filesystem. S3 calls retry
transient errors with the AWS SDK's default strategy (no retry quota); whole-object
reads and writes, and lookups of what is at a path, also retry the few transient errors
that strategy gives up on (:data:`S3_WHOLE_OBJECTS`). The client keeps that strategy when
it is pickled to other processes (:class:`RetryingS3FileSystem`).
"""

from __future__ import annotations

import io
import json
import os
import posixpath
from dataclasses import dataclass
from urllib.parse import urlparse

import pyarrow.fs as pafs

from aikd.errors import AikdError
from aikd.retry import Policy, doubling

S3_RETRIES = int(os.environ.get("AIKD_S3_RETRIES", "8"))
READ_ATTEMPTS = 4
# Errors the S3 client gives up on although a new request may succeed. The AWS SDK does not
# retry an error answer whose body is larger than the range it asked for: reading an object
# smaller than S3's XML error body (a small JSON file) that meets a 500 or a 503 fails with
# INTERNAL_FAILURE "Failed to flush response stream". Ray Data retries the same list.
TRANSIENT = ("AWS Error INTERNAL_FAILURE", "AWS Error NETWORK_CONNECTION", "AWS Error SLOW_DOWN",
             "AWS Error SERVICE_UNAVAILABLE", "AWS Error UNKNOWN (HTTP status 5")


def transient(err: BaseException) -> bool:
    return isinstance(err, OSError) and any(marker in str(err) for marker in TRANSIENT)


# a whole S3 object read or write, or a lookup: 4 attempts, 0.5, 1 and 2 s apart, on the transient
# errors only. A write is whole (the object appears when its upload completes), so writing it again is
# safe; the S3 client does not retry the completion of a multipart upload that meets a 503 SlowDown, nor
# a HEAD answered by a bodiless 503 (it reads as "AWS Error UNKNOWN (HTTP status 503)").
S3_WHOLE_OBJECTS = Policy(attempts=READ_ATTEMPTS, wait=doubling(0.5), retryable=transient)


class StorageError(AikdError):
    """A URI that cannot be resolved or a location that does not exist."""


@dataclass(frozen=True)
class Location:
    """A filesystem plus a path on it, and the URI it came from (for messages)."""

    fs: pafs.FileSystem
    path: str
    uri: str

    def join(self, *parts: str) -> Location:
        path = posixpath.join(self.path, *parts)
        uri = posixpath.join(self.uri, *parts)
        return Location(self.fs, path, uri)

    @property
    def name(self) -> str:
        """The last part of the path (a run's or an output's name)."""
        return posixpath.basename(self.path.rstrip("/"))

    @property
    def is_s3(self) -> bool:
        return isinstance(self.fs, pafs.S3FileSystem)

    def info(self, what: pafs.FileSelector | None = None):
        """``fs.get_file_info`` of this path (or of ``what``), tried again on S3's transient errors."""
        def look():
            return self.fs.get_file_info(self.path if what is None else what)

        return S3_WHOLE_OBJECTS.call(look) if self.is_s3 else look()

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def makedirs(self) -> None:
        # Object stores have no directories; creating one on S3 would only add a marker.
        if not self.is_s3:
            self.fs.create_dir(self.path, recursive=True)

    def read_bytes(self) -> bytes:
        def read() -> bytes:
            with self.fs.open_input_stream(self.path) as f:
                return f.read()

        return S3_WHOLE_OBJECTS.call(read) if self.is_s3 else read()

    def write_bytes(self, data: bytes) -> None:
        self.parent().makedirs()

        def write() -> None:
            with self.fs.open_output_stream(self.path) as f:
                f.write(data)

        S3_WHOLE_OBJECTS.call(write) if self.is_s3 else write()

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def open_text(self) -> io.TextIOWrapper:
        """The file as UTF-8 text read as it goes, for files too big to hold. Not tried again on S3's transient
        errors (a stream cannot restart where it broke); pyarrow's S3 client retries each request itself."""
        return io.TextIOWrapper(self.fs.open_input_stream(self.path), encoding="utf-8", newline="")

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def write_json(self, obj) -> None:
        self.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")

    def read_json(self):
        return json.loads(self.read_text())

    def create_exclusive(self, data: bytes) -> bool:
        """Write ``data`` only if nothing is at this path yet; False if something was.

        Local files use ``O_EXCL``; S3 a conditional PUT (``If-None-Match: *``), which
        pyarrow does not expose, hence boto3. A PUT retried after a lost response can
        find its own first attempt: callers recognise their own content.
        """
        self.parent().makedirs()
        if not self.is_s3:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
        from botocore.exceptions import ClientError

        bucket, key = self.path.split("/", 1)
        try:
            s3_client().put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise StorageError(f"{self.uri}: {err}") from None
        return True

    def delete(self) -> None:
        """Remove the file here (nothing if there is none)."""
        try:
            self.fs.delete_file(self.path)
        except FileNotFoundError:
            pass

    def parent(self) -> Location:
        return Location(self.fs, posixpath.dirname(self.path), posixpath.dirname(self.uri))

    def list_files(self, suffix: str = "") -> list[Location]:
        """Files directly or recursively under this location, sorted, hidden ones skipped."""
        info = self.info()
        if info.type == pafs.FileType.File:
            return [self]
        if info.type == pafs.FileType.NotFound:
            raise StorageError(f"nothing at {self.uri}")
        selector = pafs.FileSelector(self.path, recursive=True)
        out = []
        for item in self.info(selector):
            name = posixpath.basename(item.path)
            if item.type != pafs.FileType.File or name.startswith((".", "_")):
                continue
            if item.path.endswith(suffix):
                rel = posixpath.relpath(item.path, self.path)
                out.append(self.join(rel))
        return sorted(out, key=lambda loc: loc.path)


def copy_tree(src: Location, dst: Location) -> None:
    """Copy every file under ``src`` to the same relative path under ``dst`` (any storage to any)."""
    dst.makedirs()
    pafs.copy_files(src.path, dst.path, source_filesystem=src.fs, destination_filesystem=dst.fs)


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


class RetryingS3FileSystem(pafs.S3FileSystem):
    """pyarrow's S3 client retrying with the SDK's default strategy, here and in every process it is sent to.

    The SDK's default strategy, not its "standard" one: the standard strategy draws every
    retry from a quota (about 100 retries, refilled one per success) that a long job under a
    10 % fault rate empties, after which no request is retried at all. pyarrow pickles an
    S3 client without its retry strategy, so Ray Train's controller and workers and Ray
    Data's tasks, which get the client pickled, would rebuild it with the standard one (a
    distillation under injected faults failed so: its controller's checkpoint upload met a
    503 it did not retry). This class is rebuilt with its own.
    """

    def __init__(self, *, retries: int, **options):
        super().__init__(retry_strategy=pafs.AwsDefaultS3RetryStrategy(max_attempts=retries), **options)
        self.retries = retries

    def __reduce__(self):
        _, (options,) = super().__reduce__()  # pyarrow's own: every option but the retry strategy
        return _retrying_s3_filesystem, (options, self.retries)


def _retrying_s3_filesystem(options: dict, retries: int) -> RetryingS3FileSystem:
    return RetryingS3FileSystem(retries=retries, **options)


def s3_filesystem() -> RetryingS3FileSystem:
    """pyarrow S3 client from the standard AWS environment, endpoint override included."""
    kwargs: dict = {"retries": S3_RETRIES, "allow_bucket_creation": True}
    endpoint = _env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs["endpoint_override"] = parsed.netloc
        kwargs["scheme"] = parsed.scheme or "https"
    region = _env("AWS_REGION", "AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    key, secret = _env("AWS_ACCESS_KEY_ID"), _env("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        kwargs["access_key"] = key
        kwargs["secret_key"] = secret
        token = _env("AWS_SESSION_TOKEN")
        if token:
            kwargs["session_token"] = token
    return RetryingS3FileSystem(**kwargs)


def s3_client():
    """boto3's S3 client from the same environment (for the calls pyarrow lacks), with standard retries."""
    import boto3
    from botocore.config import Config

    endpoint = _env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    return boto3.client("s3", endpoint_url=endpoint, region_name=_env("AWS_REGION", "AWS_DEFAULT_REGION"),
                        config=Config(retries={"max_attempts": S3_RETRIES, "mode": "standard"}))


def resolve(uri: str | os.PathLike) -> Location:
    """Map ``s3://``, ``file://`` or a plain path to a :class:`Location`."""
    text = os.fspath(uri)
    if not text:
        raise StorageError("empty URI: give s3://bucket/prefix, file:///path or a path")
    parsed = urlparse(text)
    scheme = parsed.scheme.lower()
    if scheme == "s3":
        if not parsed.netloc:
            raise StorageError(f"{text!r} has no bucket: expected s3://bucket/prefix")
        path = posixpath.join(parsed.netloc, parsed.path.lstrip("/")).rstrip("/")
        return Location(s3_filesystem(), path, text.rstrip("/"))
    if scheme == "file":
        path = os.path.abspath(parsed.path)
        return Location(pafs.LocalFileSystem(), path, f"file://{path}")
    if scheme and len(scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise StorageError(f"unsupported URI scheme {scheme!r} in {text!r}: use s3://, file:// or a path")
    path = os.path.abspath(os.path.expanduser(text))
    return Location(pafs.LocalFileSystem(), path, path)
