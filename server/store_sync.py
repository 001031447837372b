"""Keep a local copy of a bucket's model versions, so the server loads from disk as it does from a volume.

Each sync is one listing of the bucket (keys with ETags). A complete version (marker present, not
retired) that the local copy lacks is downloaded into a staging folder next to the copy, every file
checked against the size and SHA-256 in the marker, then renamed into place as `<cache>/<N>/`: the
model manager only ever sees verified, complete folders, exactly as on a volume. A version that
fails the check is refused with a log line and not fetched again until its marker changes; versions
gone from the bucket (rollback, retention) leave the copy. Several gunicorn workers may sync into the
same copy: renames onto an existing folder fail harmlessly.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import uuid
from pathlib import Path

from shared.model_store import DELETING_PREFIX, STAGING_PREFIX, ModelStore, ModelStoreError
from shared.store_s3 import MARKER, S3ModelStore, sha256_file

log = logging.getLogger(__name__)


class StoreSync:
    def __init__(self, remote: S3ModelStore, cache: ModelStore) -> None:
        self.remote = remote
        self.cache = cache
        self.refused: dict[int, tuple[str, str]] = {}  # version -> (marker ETag, reason)
        self.error: str | None = None  # the last sync's error; None after a good sync

    def sync(self) -> list[int]:
        """Mirror the bucket's complete versions; returns the versions downloaded. Raises ModelStoreError."""
        try:
            listing = self.remote.listing()
        except ModelStoreError as error:
            if self.error != str(error):
                log.warning("model store unreachable; serving what is loaded: %s", error)
            self.error = str(error)
            raise
        if self.error is not None:
            log.info("model store %s reachable again", self.remote.base_path)
        self.error = None
        wanted = listing.versions()
        for version in self.cache.versions():
            if version not in wanted:
                self._remove(version)
        fetched = []
        for version in sorted(wanted, reverse=True):  # newest first: it is the one to serve
            etag = listing.keys.get(f"{version}/{MARKER}", {}).get("etag", "")
            if self.cache.has_version(version) or self.refused.get(version, ("",))[0] == etag:
                continue
            if self._fetch(version, etag):
                fetched.append(version)
        return fetched

    def _fetch(self, version: int, etag: str) -> bool:
        self.cache.base_path.mkdir(parents=True, exist_ok=True)
        staging = self.cache.base_path / f"{STAGING_PREFIX}sync-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            files = self.remote.manifest(version).get("files", {})
            problem = None if files else "its marker lists no files"
            for name, expected in files.items():
                if problem:
                    break
                if "/" in name or name.startswith("."):
                    problem = f"its marker names an unsafe file {name!r}"
                    break
                self.remote.download(f"{version}/{name}", staging / name)
                size, digest = (staging / name).stat().st_size, sha256_file(staging / name)
                if size != expected.get("size") or digest != expected.get("sha256"):
                    problem = (f"{name} does not match its marker (size {size}, sha256 {digest[:12]}...;"
                               f" expected size {expected.get('size')}, sha256 {str(expected.get('sha256'))[:12]}...)")
            if problem:
                self.refused[version] = (etag, problem)
                log.error("model version %d refused: %s; keeping the current model", version, problem)
                return False
            try:
                os.rename(staging, self.cache.version_dir(version))
            except OSError as error:
                if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                return False  # another worker placed it first
            log.info("fetched model version %d from %s", version, self.remote.base_path)
            return True
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _remove(self, version: int) -> None:
        # Renamed away first, so the model manager never sees a half-deleted folder.
        doomed = self.cache.base_path / f"{DELETING_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(self.cache.version_dir(version), doomed)
        except FileNotFoundError:
            return
        shutil.rmtree(doomed, ignore_errors=True)
        log.info("model version %d left %s; removed from the local copy", version, self.remote.base_path)


def open_sync(model_store: str, model_name: str, cache_path: Path) -> StoreSync | None:
    """The sync for a bucket store; None for the volume (nothing to copy)."""
    if not model_store:
        return None
    return StoreSync(S3ModelStore(model_store, model_name), ModelStore(cache_path))
