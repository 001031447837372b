"""The per-app objects routes need (config, model manager, data plane, samples), kept on the app."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from server.dataplane import DataPlane
from server.model_manager import ModelManager
from server.samples import SampleStore
from shared.config import Config

EXTENSION = "mnist"


@dataclass(frozen=True)
class Services:
    config: Config
    manager: ModelManager
    plane: DataPlane
    samples: SampleStore


def services() -> Services:
    return current_app.extensions[EXTENSION]
