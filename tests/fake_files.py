"""The Files API (`/api/2.0/fs/...`) of the fake workspace, its files kept as objects in moto's S3.

Paths and shapes follow databricks-sdk 0.162 (`databricks/sdk/service/files.py`, `mixins/files.py`): a file is put
in one request (`PUT /api/2.0/fs/files{path}?overwrite=`), read with `GET` (or `HEAD` for its metadata), a directory
is probed with `HEAD /api/2.0/fs/directories{path}` and listed with `GET`, and `POST /api/2.0/fs/create-download-url`
answers a presigned URL, the first of the SDK's default download endpoints. The workspace signs that URL itself
(HMAC, expiry) and serves it from the S3 object without a bearer token, as a presigned S3 URL is served; moto is not
asked to check query-string signatures, which it cannot while it enforces IAM. An expired URL gets S3's answer
(403 AccessDenied "Request has expired"), which the SDK recognises and replaces.

A mount maps a workspace path prefix to an S3 prefix and authorizes each access; `resolve(principal, rest, write)`
returns the S3 URL of `rest` under the mount or raises the ApiError the workspace answers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import posixpath
import re
import secrets
from dataclasses import dataclass, field
from email.utils import format_datetime
from typing import Any, Callable
from urllib.parse import quote

from fake_databricks import ApiError, FakeDatabricks, Raw, RecordedRequest

FS = "/api/2.0/fs"
Resolver = Callable[[str, str, bool], str]
PRESIGNED_TTL_S = 900


@dataclass
class FilesApi:
    """The Files API of one fake workspace: mounts, and the S3 client that holds their files."""

    fake: FakeDatabricks
    make_s3: Callable[[], Any]
    mounts: list[tuple[str, Resolver]] = field(default_factory=list)
    _s3: Any = field(default=None, repr=False)
    _key: bytes = field(default_factory=lambda: secrets.token_bytes(16), repr=False)

    def s3(self) -> Any:
        """One S3 client, made on first use (boto3 clients are thread-safe)."""
        if self._s3 is None:
            self._s3 = self.make_s3()
        return self._s3

    def mount(self, prefix: str, resolver: Resolver) -> None:
        """Serve workspace paths under prefix (e.g. "/Models/") through resolver."""
        self.mounts.append((prefix.rstrip("/") + "/", resolver))

    def locate(self, principal: str | None, path: str, write: bool) -> tuple[str, str]:
        """Bucket and key of a workspace path, after the mount's authorization."""
        for prefix, resolver in self.mounts:
            if path.startswith(prefix):
                url = resolver(principal or "", path[len(prefix):].strip("/"), write)
                bucket, _, key = url.removeprefix("s3://").partition("/")
                return bucket, key.rstrip("/")
        raise ApiError(404, "NOT_FOUND", f"The path {path} is not a Files API path of this workspace.")

    # ---- routes ------------------------------------------------------------------------------------------------

    def install(self) -> "FilesApi":
        fake = self.fake
        fake.add_route("PUT", rf"{FS}/files(?P<path>/.+)", self._put)
        fake.add_route("GET", rf"{FS}/files(?P<path>/.+)", self._get)
        fake.add_route("HEAD", rf"{FS}/directories(?P<path>/.+)", self._directory_exists)
        fake.add_route("GET", rf"{FS}/directories(?P<path>/.+)", self._list)
        fake.add_route("POST", rf"{FS}/create-download-url", self._download_url)
        fake.add_route("GET", r"/presigned/(?P<bucket>[^/]+)/(?P<key>.+)", self._presigned, authenticated=False)
        return self

    def _put(self, fake: FakeDatabricks, request: RecordedRequest, path: str) -> tuple[int, Any]:
        bucket, key = self.locate(request.principal, path, write=True)
        overwrite = (request.query.get("overwrite") or ["true"])[0].lower() != "false"
        if not overwrite and self._head(bucket, key) is not None:
            raise ApiError(409, "ALREADY_EXISTS", f"The file {path} already exists.")
        self.s3().put_object(Bucket=bucket, Key=key, Body=request.raw_body)
        return 204, None

    def _get(self, fake: FakeDatabricks, request: RecordedRequest, path: str) -> tuple[int, Any, dict[str, str]]:
        bucket, key = self.locate(request.principal, path, write=False)
        head = self._head(bucket, key)
        if head is None:
            raise ApiError(404, "NOT_FOUND", f"The file {path} does not exist.")
        headers = {"Last-Modified": format_datetime(head["LastModified"].astimezone(dt.timezone.utc), usegmt=True)}
        if request.method == "HEAD":
            return 200, Raw(b"\0" * head["ContentLength"]), headers
        data = self.s3().get_object(Bucket=bucket, Key=key)["Body"].read()
        return 200, Raw(data), headers

    def _directory_exists(self, fake: FakeDatabricks, request: RecordedRequest, path: str) -> tuple[int, Any]:
        bucket, key = self.locate(request.principal, path, write=False)
        listed = self.s3().list_objects_v2(Bucket=bucket, Prefix=f"{key}/", MaxKeys=1)
        if not listed.get("KeyCount"):
            raise ApiError(404, "NOT_FOUND", f"The directory {path} does not exist.")
        return 200, None

    def _list(self, fake: FakeDatabricks, request: RecordedRequest, path: str) -> tuple[int, Any]:
        bucket, key = self.locate(request.principal, path, write=False)
        pages = self.s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{key}/", Delimiter="/")
        contents: list[dict[str, Any]] = []
        for page in pages:
            for common in page.get("CommonPrefixes", []):
                name = common["Prefix"].rstrip("/").rsplit("/", 1)[-1]
                contents.append({"path": posixpath.join(path, name), "is_directory": True, "name": name})
            for item in page.get("Contents", []):
                name = item["Key"].rsplit("/", 1)[-1]
                contents.append({"path": posixpath.join(path, name), "is_directory": False, "name": name,
                                 "file_size": item["Size"],
                                 "last_modified": int(item["LastModified"].timestamp() * 1000)})
        if not contents:
            raise ApiError(404, "NOT_FOUND", f"The directory {path} does not exist.")
        return 200, {"contents": contents}

    def _download_url(self, fake: FakeDatabricks, request: RecordedRequest) -> tuple[int, Any]:
        path = (request.query.get("path") or [""])[0]
        if not re.match(r"^/.+", path):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "path is required.")
        bucket, key = self.locate(request.principal, path, write=False)
        if self._head(bucket, key) is None:
            raise ApiError(404, "NOT_FOUND", f"The file {path} does not exist.")
        expires = int(self.fake.now()) + PRESIGNED_TTL_S
        url = (f"{self.fake.url}/presigned/{bucket}/{quote(key)}?expires={expires}"
               f"&signature={self._sign(bucket, key, expires)}")
        return 200, {"url": url, "headers": []}

    def _sign(self, bucket: str, key: str, expires: int) -> str:
        return hmac.new(self._key, f"{bucket}/{key}/{expires}".encode(), hashlib.sha256).hexdigest()

    def _presigned(self, fake: FakeDatabricks, request: RecordedRequest, bucket: str,
                   key: str) -> tuple[int, Any, dict[str, str]]:
        expires = int((request.query.get("expires") or ["0"])[0])
        signature = (request.query.get("signature") or [""])[0]
        if not hmac.compare_digest(signature, self._sign(bucket, key, expires)):
            return 403, _s3_error("SignatureDoesNotMatch", "The request signature we calculated does not match the "
                                                           "signature you provided."), {}
        if fake.now() > expires:
            return 403, _s3_error("AccessDenied", "Request has expired"), {}
        data = self.s3().get_object(Bucket=bucket, Key=key)["Body"].read()
        wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("range", ""))
        if wanted is None:
            return 200, Raw(data), {}
        start, end = int(wanted[1]), int(wanted[2]) if wanted[2] else len(data) - 1
        return 206, Raw(data[start:end + 1]), {"Content-Range": f"bytes {start}-{end}/{len(data)}"}

    def _head(self, bucket: str, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return self.s3().head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise


def _s3_error(code: str, message: str) -> Raw:
    """S3's XML error body (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html)."""
    return Raw(f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message>"
               "</Error>".encode(), "application/xml")


__all__ = ["FS", "FilesApi"]
