"""Which model store a process uses: the volume under MNIST_HOME, or a bucket (MODEL_STORE=s3://...).

Both stores answer the same calls (versions, latest, version_dir, metadata, staging, publish, prune,
prune_retired, rollback, clean_stale_staging), so the trainer and `trainer.manage` do not care which.
The server reads a bucket through a local copy instead (server/store_sync.py).
"""

from __future__ import annotations

from typing import Any, Protocol

from shared.config import MODEL_NAME, Config
from shared.model_store import ModelStore
from shared.store_s3 import S3ModelStore


class VersionStore(Protocol):
    base_path: Any

    def versions(self) -> list[int]: ...
    def latest(self) -> int | None: ...
    def metadata(self, version: int) -> dict[str, Any]: ...
    def prune(self, keep: int) -> list[int]: ...
    def prune_retired(self, keep: int) -> list[int]: ...
    def rollback(self) -> int: ...


def open_store(config: Config) -> ModelStore | S3ModelStore:
    """The store the trainer publishes to and `trainer.manage` looks after."""
    if config.model_store:
        return S3ModelStore(config.model_store, MODEL_NAME)
    return ModelStore(config.model_base_path)
