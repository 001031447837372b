"""Log lines in one of two shapes, chosen by LOG_FORMAT: `json` (one object per line, for a log
collector; the containers' default) or `text` (for a person at a terminal; `make serve-local`).

A record may carry structured fields as `extra={"fields": {...}}`: JSON puts them beside the
message, text appends them as `key=value`. The server's gunicorn config, its request log
(server/request_log.py) and the trainer all log through these formatters.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

TEXT_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"
# One encoder for every line: json.dumps with options builds a new one per call.
_encode = json.JSONEncoder(default=str, ensure_ascii=False).encode


@functools.lru_cache(maxsize=4)
def _second(whole: int) -> str:
    return datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def iso_time(created: float) -> str:
    """`datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")`, the date part made once per
    second: the server writes a line per request."""
    whole = int(created)
    return f"{_second(whole)}.{int((created - whole) * 1000):03d}+00:00"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", **fields}` on one line; a traceback as `exception`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _encode(line)


class TextFormatter(logging.Formatter):
    """The classic one-line format, structured fields appended as `key=value`."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _fields(record)
        if not fields:
            return text
        return text + " " + " ".join(f"{key}={value}" for key, value in fields.items() if value is not None)


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def dict_config(log_format: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` (gunicorn's logconfig_dict): everything to stdout in one format."""
    factory = f"{__name__}.{'JsonFormatter' if log_format == 'json' else 'TextFormatter'}"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": {"()": factory}},
        "handlers": {"stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "line"}},
        "root": {"level": "INFO", "handlers": ["stdout"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["stdout"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["stdout"], "propagate": False},
        },
    }


def configure(log_format: str, stream: TextIO | None = None) -> None:
    """Send the root logger's INFO lines to `stream` (stdout) in `log_format` (the trainer's CLI)."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def emit(message: str, stream: TextIO | None = None, **fields: Any) -> None:
    """One trainer progress line on stdout: `message` as it reads (LOG_FORMAT=text, the default), or with
    LOG_FORMAT=json an object holding the message and `fields` (epoch, metrics, published version)."""
    from shared.config import env_name, parse_setting

    log_format = parse_setting("log_format", os.environ.get(env_name("log_format"), "text"))
    if log_format == "json":
        message = json.dumps({"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "level": "INFO",
                              "logger": "trainer", "pid": os.getpid(), "message": message, **fields}, default=str)
    print(message, file=stream or sys.stdout, flush=True)
