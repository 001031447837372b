"""The model store on S3 (`MODEL_STORE=s3://bucket/prefix`): the same contract as shared/model_store.py.

Layout under `s3://bucket/prefix/mnist/` (the bucket plays the part of MNIST_HOME):

    .claims/<N>        who took number N (written first, never deleted: numbers are not reused)
    <N>/model.keras  <N>/model.onnx  <N>/metadata.json
    <N>/COMPLETE       the completion marker, written last: a manifest of every file's size and SHA-256
    <N>/RETIRED        written by `rollback`: the version is out of service (kept for inspection)

S3 has no rename, so a version becomes visible through its marker: readers (the server's sync,
`trainer.manage status`) count only numbers with COMPLETE and without RETIRED, and a publisher killed
mid-upload leaves files without a marker that nobody serves (`clean_stale_staging` deletes them later).

Two publishers never complete the same number: the claim is a conditional put (`If-None-Match: *`,
refused with 412 by AWS S3, MinIO, R2, GCS when the key exists), then read back, then read back
again just before the marker is written. Stores that ignore the condition (rclone serve s3 1.75.2
overwrites) are found by putting the claim twice (the second put succeeds) and covered by the
read-backs, the first after CLAIM_SETTLE_SECONDS; what remains is a publisher slower than that
between its listing and its claim, and even then the server verifies every file against the
marker's digests and refuses a mixed version rather than serving it (docs/s3.md argues this).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from shared.model_store import (
    KERAS_FILE,
    METADATA_FILE,
    ONNX_FILE,
    STALE_STAGING_SECONDS,
    ModelStoreError,
)

MARKER = "COMPLETE"
RETIRED = "RETIRED"
CLAIMS = ".claims"
# On a store that ignores If-None-Match, how long a claim must stand before it is read back (see `_claim`).
CLAIM_SETTLE_SECONDS = 1.0
MODEL_FILES = (ONNX_FILE, KERAS_FILE, METADATA_FILE)
CHUNK = 1 << 20
# Short network timeouts: the server syncs in its reload thread and must notice an unreachable
# store within seconds (it keeps serving meanwhile); the trainer retries once more.
CONNECT_TIMEOUT_S = 3
READ_TIMEOUT_S = 20
CREDENTIAL_ERRORS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken",
                     "ExpiredToken", "AuthorizationHeaderMalformed", "403"}
CREDENTIAL_SETTINGS = "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"


def is_s3_url(text: str) -> bool:
    return text.startswith("s3://")


def parse_s3_url(text: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix"); raises ValueError for anything else."""
    parsed = urlparse(text)
    if parsed.scheme != "s3" or not parsed.netloc or parsed.query or parsed.fragment:
        raise ValueError("must be empty (the volume under MNIST_HOME) or s3://bucket[/prefix]")
    return parsed.netloc, parsed.path.strip("/")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_of(folder: Path) -> dict[str, dict[str, Any]]:
    """{file name: {"size": bytes, "sha256": hex}} of the model files in `folder`."""
    return {name: {"size": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)}
            for name in MODEL_FILES if (folder / name).exists()}


def s3_client() -> Any:
    """A boto3 S3 client from the standard AWS settings (credential chain, AWS_ENDPOINT_URL, AWS_REGION)."""
    import boto3  # imported here: a volume-only install never pays for it
    from botocore.config import Config as BotoConfig

    # Path-style addressing for S3-compatible endpoints (rclone, MinIO, Ceph): `bucket.host` needs DNS.
    style = "path" if os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3") else "auto"
    config = BotoConfig(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                        retries={"max_attempts": 2, "mode": "standard"}, s3={"addressing_style": style})
    return boto3.session.Session().client("s3", config=config)


def explain(error: Exception, url: str) -> ModelStoreError:
    """A ModelStoreError that names the setting to fix for a botocore error."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    endpoint = os.environ.get("AWS_ENDPOINT_URL") or "the AWS default endpoint"
    if isinstance(error, NoCredentialsError):
        return ModelStoreError(f"{url}: no AWS credentials found; set {CREDENTIAL_SETTINGS}")
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in CREDENTIAL_ERRORS:
            return ModelStoreError(f"{url}: the S3 store refused the credentials ({code}); check {CREDENTIAL_SETTINGS}")
        if code == "NoSuchBucket":
            return ModelStoreError(f"{url}: no such bucket at {endpoint}; check MODEL_STORE and AWS_ENDPOINT_URL")
        return ModelStoreError(f"{url}: S3 error {code or '?'}: {error}")
    if isinstance(error, EndpointConnectionError):
        return ModelStoreError(f"{url}: cannot reach the S3 store at {endpoint} (AWS_ENDPOINT_URL): {error}")
    return ModelStoreError(f"{url}: S3 request failed ({type(error).__name__}: {error})")


@dataclass(frozen=True)
class Listing:
    """One listing of the store: what a reader needs to decide, from a single ListObjectsV2 walk."""

    keys: dict[str, dict[str, Any]]  # key below mnist/ -> {"etag", "size", "modified"}

    def numbers(self, marker: str | None = None) -> list[int]:
        found = set()
        for key in self.keys:
            head, _, tail = key.partition("/")
            if head.isascii() and head.isdigit() and (marker is None or tail == marker):
                found.add(int(head))
        return sorted(found)

    def claimed(self) -> list[int]:
        return sorted(int(key.split("/")[1]) for key in self.keys
                      if key.startswith(f"{CLAIMS}/") and key.split("/")[1].isdigit())

    def versions(self) -> list[int]:
        retired = set(self.numbers(RETIRED))
        return [n for n in self.numbers(MARKER) if n not in retired]

    def retired(self) -> list[int]:
        return self.numbers(RETIRED)


class S3ModelStore:
    """Numbered model versions under `s3://bucket/prefix/mnist/`; the same methods as ModelStore."""

    def __init__(self, url: str, model_name: str, client: Any = None) -> None:
        self.bucket, prefix = parse_s3_url(url)
        self.root = f"{prefix}/{model_name}/" if prefix else f"{model_name}/"
        self.base_path = f"s3://{self.bucket}/{self.root.rstrip('/')}"  # for messages, like ModelStore's
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = s3_client()
        return self._client

    def _call(self, method: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(Bucket=self.bucket, **kwargs)
        except (BotoCoreError, ClientError) as error:
            raise explain(error, self.base_path) from None

    # -- reading --------------------------------------------------------------------------

    def listing(self) -> Listing:
        """Every key under the model's prefix with its ETag and size (one request per 1000 keys)."""
        keys: dict[str, dict[str, Any]] = {}
        token: dict[str, str] = {}
        while True:
            page = self._call("list_objects_v2", Prefix=self.root, **token)
            for item in page.get("Contents", []):
                keys[item["Key"][len(self.root):]] = {"etag": item.get("ETag", ""), "size": item.get("Size", 0),
                                                      "modified": item.get("LastModified")}
            if not page.get("IsTruncated"):
                return Listing(keys)
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def versions(self) -> list[int]:
        return self.listing().versions()

    def latest(self) -> int | None:
        versions = self.versions()
        return versions[-1] if versions else None

    def version_dir(self, version: int) -> str:
        return f"{self.base_path}/{version}"

    def has_version(self, version: int) -> bool:
        return version in self.versions()

    def read_json(self, key: str) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.root + key)["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise ModelStoreError(f"{self.base_path}/{key}: no such object") from None
            raise explain(error, self.base_path) from None
        except Exception as error:  # botocore's connection errors
            raise explain(error, self.base_path) from None
        try:
            return json.loads(body)
        except ValueError as error:
            raise ModelStoreError(f"{self.base_path}/{key}: not JSON ({error})") from None

    def metadata(self, version: int) -> dict[str, Any]:
        return self.read_json(f"{version}/{METADATA_FILE}")

    def manifest(self, version: int) -> dict[str, Any]:
        """The completion marker: {"files": {name: {size, sha256}}, "claim": id, "completed": time}."""
        return self.read_json(f"{version}/{MARKER}")

    def download(self, key: str, path: Path) -> None:
        self._call("download_file", Key=self.root + key, Filename=str(path))

    # -- writing (the trainer, trainer.manage) ----------------------------------------------

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A local folder to write a version into; `publish()` uploads it. Removed afterwards."""
        path = Path(tempfile.mkdtemp(prefix="mnist-publish-"))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def _put(self, key: str, body: bytes, exclusive: bool = False) -> bool:
        """Put an object; with `exclusive`, only if the key does not exist. False when it did (412)."""
        from botocore.exceptions import BotoCoreError, ClientError

        extra = {"IfNoneMatch": "*"} if exclusive else {}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.root + key, Body=body, **extra)
        except ClientError as error:
            if exclusive and error.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412",
                                                                              "ConditionalRequestConflict"):
                return False
            raise explain(error, self.base_path) from None
        except BotoCoreError as error:
            raise explain(error, self.base_path) from None
        return True

    def _owns(self, version: int, claim_id: str) -> bool:
        try:
            return self.read_json(f"{CLAIMS}/{version}").get("claim") == claim_id
        except ModelStoreError:
            return False

    def _claim(self, claim_id: str) -> int:
        listing = self.listing()
        version = max([*listing.numbers(), *listing.claimed()], default=0) + 1
        body = json.dumps({"claim": claim_id, "host": os.uname().nodename, "pid": os.getpid(),
                           "claimed": datetime.now(UTC).isoformat(timespec="seconds")}).encode()
        while True:
            key = f"{CLAIMS}/{version}"
            if self._put(key, body, exclusive=True):
                # The same conditional put again tells whether this store honours it (412: the claim is ours
                # alone). One that does not lets a publisher that listed before our claim overwrite it a
                # little later: wait for such a write to land before reading the claim back.
                if self._put(key, body, exclusive=True):
                    time.sleep(CLAIM_SETTLE_SECONDS)
                if self._owns(version, claim_id):
                    return version
            version += 1  # another publisher holds this number

    def publish(self, staged: Path, stamp: Callable[[Path, int], None] | None = None) -> int:
        """Claim the next number, upload the staged files, then write the completion marker.

        A claim lost between the upload and the marker (a store that ignores If-None-Match let another
        publisher take the number) makes this publisher claim a new number and upload again.
        """
        claim_id = uuid.uuid4().hex
        while True:
            version = self._claim(claim_id)
            if stamp is not None:
                stamp(staged, version)
            files = manifest_of(staged)
            for name in MODEL_FILES:
                if name in files:
                    self._call("upload_file", Filename=str(staged / name), Key=f"{self.root}{version}/{name}")
            if not self._owns(version, claim_id):
                continue
            marker = {"claim": claim_id, "files": files, "completed": datetime.now(UTC).isoformat(timespec="seconds")}
            if self._put(f"{version}/{MARKER}", json.dumps(marker, indent=2).encode(), exclusive=True):
                return version

    def _delete_version(self, version: int, marker_first: str = MARKER) -> bool:
        """Delete every object of a version, its marker first so no reader sees a partial version."""
        keys = [key for key in self.listing().keys if key.startswith(f"{version}/")]
        if not keys:
            return False
        first = f"{version}/{marker_first}"
        ordered = [first] if first in keys else []
        ordered += [key for key in keys if key != first]
        self._call("delete_objects", Delete={"Objects": [{"Key": self.root + ordered[0]}], "Quiet": True})
        rest = ordered[1:]
        for start in range(0, len(rest), 1000):
            chunk = [{"Key": self.root + key} for key in rest[start:start + 1000]]
            self._call("delete_objects", Delete={"Objects": chunk, "Quiet": True})
        return True

    def prune(self, keep: int) -> list[int]:
        doomed = self.versions()[:-keep] if keep > 0 else []
        return [version for version in doomed if self._delete_version(version)]

    def prune_retired(self, keep: int) -> list[int]:
        # The claims stay, so a deleted retired number is never handed out again (unlike the volume,
        # no retired version has to be kept for that).
        doomed = self.listing().retired()[:-max(keep, 1)]
        return [number for number in doomed if self._delete_version(number, marker_first=RETIRED)]

    def rollback(self) -> int:
        versions = self.versions()
        if len(versions) < 2:
            raise ModelStoreError(f"{self.base_path}: nothing to roll back to (versions: {versions or 'none'})")
        retired = {"retired": datetime.now(UTC).isoformat(timespec="seconds")}
        self._put(f"{versions[-1]}/{RETIRED}", json.dumps(retired).encode())
        return versions[-2]

    def clean_stale_staging(self, older_than_s: float = STALE_STAGING_SECONDS) -> list[str]:
        """Delete the files of publishes that never wrote their marker (a killed trainer), once old."""
        listing = self.listing()
        complete = set(listing.numbers(MARKER))
        cutoff = time.time() - older_than_s
        removed = []
        for number in listing.numbers():
            if number in complete:
                continue
            times = [meta["modified"].timestamp() for key, meta in listing.keys.items()
                     if key.startswith(f"{number}/") and meta.get("modified") is not None]
            if times and max(times) < cutoff and self._delete_version(number):
                removed.append(f"{self.base_path}/{number}")
        return removed
