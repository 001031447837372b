"""`python -m trainer.manage status|rollback`: look after the model store without training.

Runs in the trainer container (the one that mounts the volume read-write); needs no TensorFlow.
"""

from __future__ import annotations

import argparse
import sys

from shared.config import Config, ConfigError
from shared.model_store import ModelStoreError
from shared.object_store import VersionStore, open_store


def status(store: VersionStore) -> int:
    versions = store.versions()
    if not versions:
        print(f"{store.base_path}: no model versions yet")
        return 0
    print(f"{'version':>7}  {'created':<25}  {'test_accuracy':>13}  current")
    for version in versions:
        try:
            metadata = store.metadata(version)
        except ModelStoreError as error:
            print(f"{version:>7}  unreadable: {error}")
            continue
        marker = "*" if version == versions[-1] else ""
        print(f"{version:>7}  {metadata.get('created', '?'):<25}  {metadata.get('test_accuracy', 0):>13.4f}  {marker}")
    return 0


def rollback(store: VersionStore) -> int:
    newest = store.latest()
    current = store.rollback()
    print(f"retired version {newest}; version {current} is current again (servers pick it up on their next check)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.manage", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("status", "rollback"))
    args = parser.parse_args(argv)
    try:
        store = open_store(Config.from_env())
        return {"status": status, "rollback": rollback}[args.command](store)
    except (ConfigError, ModelStoreError) as error:
        print(f"trainer.manage: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
