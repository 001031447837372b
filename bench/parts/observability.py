"""Cost of the request log and of tracing (issue 28) on a batch-1 v2 infer, in process, over a real ONNX model:
the app without the request-log middleware (as before issue 28), with it and tracing off (the default), and
with tracing on (OTLP/HTTP to a local receiver that discards). Rounds alternate so machine load hits all three.

    python -m bench.parts.observability [--home bench/results/tmp/grpc-home] [--requests 2000] [--rounds 5]

Prints CPU microseconds per request (median over rounds) and writes bench/results/tmp/observability.json.
"""

from __future__ import annotations

import argparse
import http.server
import io
import json
import logging
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, TMP
from bench.report import Parts, render, table

BODY = json.dumps({"inputs": [{"name": "images", "shape": [1, 28, 28], "datatype": "FP32",
                               "data": [0.0] * 784}]}).encode()


def _environ() -> dict:
    return {"REQUEST_METHOD": "POST", "PATH_INFO": "/v2/models/mnist/infer", "SERVER_NAME": "bench",
            "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http", "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(BODY)), "wsgi.input": io.BytesIO(BODY),
            "wsgi.errors": io.StringIO(), "wsgi.multithread": False, "wsgi.multiprocess": False,
            "wsgi.run_once": False}


def _round(app, count: int) -> float:
    def start_response(status, _headers, _exc_info=None):
        assert status.startswith("200"), status
    started = time.process_time()  # CPU of every thread of the process: steadier than wall time on a shared machine
    for _ in range(count):
        body = app(_environ(), start_response)
        b"".join(body)
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return (time.process_time() - started) / count * 1e6


def _discarding_receiver() -> str:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=TMP / "grpc-home")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    from server import tracing
    from server.app import create_app
    from shared.config import Config
    from shared.logs import JsonFormatter

    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - the whole run
    handler.setFormatter(JsonFormatter())  # the line is formatted as in a container, then discarded
    logging.getLogger("server.requests").addHandler(handler)
    logging.getLogger("server.requests").setLevel(logging.INFO)
    logging.getLogger("server.requests").propagate = False

    app = create_app(Config(home=args.home.resolve(), inference_threads=1, workers=1))
    deadline = time.monotonic() + 60
    while app.extensions["mnist"].manager.current is None:
        assert time.monotonic() < deadline, "no model loaded from " + str(args.home)
        time.sleep(0.1)
    logged = app.wsgi_app
    variants = {"without request log (before)": logged.app, "request log, tracing off": logged,
                "request log, tracing on": logged}
    os.environ.update(OTEL_EXPORTER_OTLP_ENDPOINT=_discarding_receiver(), OTEL_BSP_SCHEDULE_DELAY="500")
    assert tracing.setup()
    on = tracing._tracer
    figures: dict[str, list[float]] = {name: [] for name in variants}
    for name, wsgi in variants.items():  # warm-up
        tracing._tracer = on if name.endswith("on") else None
        _round(wsgi, 200)
    names = list(variants)
    for number in range(args.rounds):
        for name in names[number % 3:] + names[:number % 3]:  # each variant takes each place in the order
            wsgi = variants[name]
            tracing._tracer = on if name.endswith("on") else None
            figures[name].append(_round(wsgi, args.requests))
        print(f"round {number + 1}/{args.rounds}: " + ", ".join(f"{name} {values[-1]:.0f} us CPU"
                                                             for name, values in figures.items()), flush=True)
    result = {name: {"median_us": round(statistics.median(values), 1), "rounds_us": [round(v, 1) for v in values]}
              for name, values in figures.items()}
    result["measured"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result["requests_per_round"] = args.requests
    (TMP / "observability.json").write_text(json.dumps(result, indent=2) + "\n")
    for name, values in figures.items():
        print(f"{name}: median {statistics.median(values):.1f} us per batch-1 v2 infer")
    app.extensions["mnist"].manager.stop()
    print(f"written {(TMP / 'observability.json').relative_to(ROOT)}")
    print(json.dumps(result), flush=True)  # last line: the JSON bench.run reads


def section(figures: dict[str, Any], parts: Parts) -> list[str]:
    """bench/results.md's section: each variant's median, its rounds, and its cost over the first."""
    variants = [name for name, value in figures.items() if isinstance(value, dict) and "median_us" in value]
    base = figures[variants[0]]["median_us"]
    rows = [[name, figures[name]["median_us"], f"{figures[name]['median_us'] - base:+.1f}",
             ", ".join(str(value) for value in figures[name]["rounds_us"])] for name in variants]
    return render("observability", requests=figures["requests_per_round"], measured=figures["measured"],
                  table=table(["variant", "median (us CPU)", "added over the first row (us)", "each round (us)"],
                              rows))


if __name__ == "__main__":
    main()
