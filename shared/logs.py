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
import time
from datetime import UTC, datetime
from typing import Any, TextIO

TEXT_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"
# One encoder for every line (json.dumps with options builds a new one per call), compact as orjson writes the
# server's request lines (server/request_log.py), so every JSON line looks alike.
_encode = json.JSONEncoder(default=str, ensure_ascii=False, separators=(",", ":")).encode


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


def json_line(created: float, level: str, logger: str, pid: int | None, message: str,
              fields: dict[str, Any]) -> dict[str, Any]:
    """The object a JSON line holds, in this key order: every writer of JSON lines builds it here."""
    return {"time": iso_time(created), "level": level, "logger": logger, "pid": pid, "message": message, **fields}


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "pid", "message", **fields}` on one line; a traceback as `exception`."""

    def format(self, record: logging.LogRecord) -> str:
        line = json_line(record.created, record.levelname, record.name, record.process, record.getMessage(),
                         _fields(record))
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


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stdout handler of `dict_config`. `write_line` puts an already formatted line on its stream under the
    handler's lock: the server's request line (one per request) comes this way when this handler is the only
    one that would see it, skipping the LogRecord and the handler chain (server/request_log.py)."""

    def write_line(self, text: str) -> bool:
        """Write `text` and a newline; False when the stream failed (the caller then goes through logging,
        whose handleError reports it)."""
        with self.lock:  # type: ignore[union-attr]
            try:
                self.stream.write(text + self.terminator)
                self.stream.flush()
            except Exception:
                return False
        return True


def sole_line_handler(logger: logging.Logger, level: int = logging.INFO) -> LineHandler | None:
    """The one handler a `level` record of `logger` would reach, when that is a `LineHandler` and no filter
    or other handler is on the way (a test's caplog, a user's extra handler); else None."""
    found: LineHandler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters or current.disabled:
            return None
        for handler in current.handlers:
            if found is not None or type(handler) is not LineHandler or handler.filters or handler.level > level:
                return None
            found = handler
        current = current.parent if current.propagate else None
    return found


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def dict_config(log_format: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` (gunicorn's logconfig_dict): everything to stdout in one format."""
    factory = f"{__name__}.{'JsonFormatter' if log_format == 'json' else 'TextFormatter'}"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": {"()": factory}},
        "handlers": {"stdout": {"class": f"{__name__}.LineHandler", "stream": "ext://sys.stdout", "formatter": "line"}},
        "root": {"level": "INFO", "handlers": ["stdout"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["stdout"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["stdout"], "propagate": False},
        },
    }


def configure(log_format: str, stream: TextIO | None = None) -> None:
    """Send the root logger's INFO lines to `stream` (stdout) in `log_format` (the trainer's CLI)."""
    handler = LineHandler(stream or sys.stdout)
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
        message = _encode(json_line(time.time(), "INFO", "trainer", os.getpid(), message, fields))
    print(message, file=stream or sys.stdout, flush=True)
