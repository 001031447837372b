"""Cost of the request log and of tracing (issue 28) on a batch-1 v2 infer, two ways, each alternating its variants
in rounds (every variant takes every place in the order) so the shared machine's load hits them all alike:

- over HTTP, what a client sees: wrk (batch-1 v2 JSON, 16 connections) against our gunicorn as compose runs it
  (2 workers, LOG_FORMAT=json, the lines to a file) without the request-log middleware, with it and tracing off
  (the default), and with tracing on (OTLP/HTTP to a local receiver that discards); per variant the median
  requests/s, p50/p99 and the server's CPU per request;
- in process, the CPU per request of the app without the middleware, with it, and with tracing on.

    python -m bench.parts.observability [--seconds 8] [--rounds 3] [--requests 2000] [--in-process-rounds 5]

"Without the request log" is today's app with the middleware unwrapped (`unlogged_app`, gunicorn's factory
syntax): the same code otherwise, which a revision from before issue 28 would not be. Writes
bench/results/tmp/observability.json.
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

from bench.common import BENCH_HOME, ROOT, TMP, write_part
from bench.lib import bodies, sidebyside
from bench.lib.ours import V2_INFER, launch, server_layout
from bench.lib.processes import Launch, Running, free_port
from bench.lib.wrk import wrk
from bench.report import Parts, fragment, measured, render, table

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


def unlogged_app() -> Any:
    """gunicorn's app without the request-log middleware (`bench.parts.observability:unlogged_app()`)."""
    from server.app import create_app
    from server.request_log import RequestLog

    app = create_app()
    assert isinstance(app.wsgi_app, RequestLog)
    app.wsgi_app = app.wsgi_app.app
    return app


UNLOGGED, SECOND, LOGGED, TRACED = ("without request log", "without request log, a second server",
                                     "request log, tracing off", "request log, tracing on")
# The second unlogged server is an A/A comparison: its ratio to the first, round by round, is the noise band
# that "within noise" is judged against.
HTTP_VARIANTS = (UNLOGGED, SECOND, LOGGED, TRACED)
CONNECTIONS = 16


def _http_launch(name: str, port: int, receiver: str) -> Launch:
    settings = {"LOG_FORMAT": "json", "BATCHING": "false"}
    if name == TRACED:
        settings.update(OTEL_EXPORTER_OTLP_ENDPOINT=receiver, OTEL_SERVICE_NAME="mnist-bench")
    app = "bench.parts.observability:unlogged_app()" if name in (UNLOGGED, SECOND) else "server.wsgi:app"
    return launch(name, port, app=app, log_name=f"observability-{HTTP_VARIANTS.index(name)}", **settings)


def over_http(seconds: int, rounds: int) -> dict[str, Any]:
    """wrk against the servers, all started up front, one at a time in rotating order (bench.lib.sidebyside)."""
    for key in [key for key in os.environ if key.startswith("OTEL_")]:
        del os.environ[key]
    body = bodies.write(TMP / "bodies" / "observability-v2-1.json", bodies.v2_json(bodies.test_digits(1)),
                        "application/json")
    receiver = _discarding_receiver()
    servers = {}
    try:
        for name in HTTP_VARIANTS:
            port = free_port()
            servers[name] = Running(_http_launch(name, port, receiver), port)
        for running in servers.values():
            assert running.post(V2_INFER, body)["outputs"], running.launch.name
            wrk(running.url + V2_INFER, body, CONNECTIONS, 2)  # warm-up
        runs, loads = sidebyside.rounds(servers, V2_INFER, body, CONNECTIONS, seconds, rounds)
    finally:
        for running in servers.values():
            running.stop()
    return {"variants": sidebyside.summary(runs, "ratio_to_unlogged_by_round"), "seconds": seconds,
            "rounds": rounds, "connections": CONNECTIONS, "layout": server_layout(), "load_average": loads}


def in_process(home: Path, requests: int, rounds: int) -> dict[str, Any]:
    os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    from server import tracing
    from server.app import create_app
    from shared.config import Config
    from shared.logs import JsonFormatter, LineHandler

    handler = LineHandler(open(os.devnull, "w"))  # noqa: SIM115 - the whole run; gunicorn.conf.py's handler
    handler.setFormatter(JsonFormatter())  # the line is formatted as in a container, then discarded
    logging.getLogger("server.requests").addHandler(handler)
    logging.getLogger("server.requests").setLevel(logging.INFO)
    logging.getLogger("server.requests").propagate = False

    app = create_app(Config(home=home.resolve(), inference_threads=1, workers=1))
    deadline = time.monotonic() + 60
    while app.extensions["mnist"].manager.current is None:
        assert time.monotonic() < deadline, "no model loaded from " + str(home)
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
    for number in range(rounds):
        for name in names[number % 3:] + names[:number % 3]:  # each variant takes each place in the order
            wsgi = variants[name]
            tracing._tracer = on if name.endswith("on") else None
            figures[name].append(_round(wsgi, requests))
        print(f"round {number + 1}/{rounds}: " + ", ".join(f"{name} {values[-1]:.0f} us CPU"
                                                           for name, values in figures.items()), flush=True)
    tracing._tracer = None
    app.extensions["mnist"].manager.stop()
    result: dict[str, Any] = {name: {"median_us": round(statistics.median(values), 1),
                                     "rounds_us": [round(v, 1) for v in values]}
                              for name, values in figures.items()}
    result["requests_per_round"] = requests
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=BENCH_HOME, help="MNIST_HOME of the in-process part")
    parser.add_argument("--requests", type=int, default=2000, help="in process: requests a round")
    parser.add_argument("--in-process-rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_SECONDS", "8")),
                        help="over HTTP: wrk seconds per variant and round")
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "3")),
                        help="over HTTP: rounds")
    args = parser.parse_args()
    result: dict[str, Any] = {"http": over_http(args.seconds, args.rounds)}
    result.update(in_process(args.home, args.requests, args.in_process_rounds))
    path = write_part("observability", result)
    print(f"written {path.relative_to(ROOT)}")
    print(json.dumps(result), flush=True)  # last line: the JSON bench.run reads


def _http_rows(http: dict[str, Any]) -> tuple[list[list[Any]], dict[str, float]]:
    """One row per variant, and each variant's median per-round ratio to the unlogged server."""
    rows, ratios = [], {}
    for name, value in http["variants"].items():
        by_round = value.get("ratio_to_unlogged_by_round")
        ratios[name] = statistics.median(by_round) if by_round else 1.0
        rows.append([name, value["requests_per_second"], f"{ratios[name]:.3f}" + (
            f" ({', '.join(f'{ratio:.2f}' for ratio in by_round)})" if by_round else ""),
            value["p50_ms"], value["p99_ms"], value["cpu_us_per_request"], value["errors"]])
    return rows, ratios


def _verdict(http: dict[str, Any], ratios: dict[str, float]) -> str:
    """The two questions in words: what the log costs with tracing off (against the A/A noise band when the run
    had a second unlogged server), what tracing costs on top."""
    variants = http["variants"]
    cpu = {name: value["cpu_us_per_request"] for name, value in variants.items()}
    logged, traced = (name for name in variants if name.startswith("request log"))
    text = (f"Request log with tracing off: {ratios[logged]:.1%} of the unlogged server's requests/s, "
            f"{cpu[logged] - cpu[UNLOGGED]:+.0f} us of server CPU per request.")
    same = variants.get(SECOND, {}).get("ratio_to_unlogged_by_round")
    if same:
        band = max(abs(1 - ratio) for ratio in same)
        within = abs(1 - ratios[logged]) <= band
        text += (f" Noise band (two identical unlogged servers, round by round): ±{band:.1%}, their median ratio"
                 f" {ratios[SECOND]:.1%}; the log's median ratio is {'within' if within else 'outside'} the band.")
    return text + (f" Tracing on: {ratios[traced]:.1%}, {cpu[traced] - cpu[UNLOGGED]:+.0f} us of CPU per"
                   " request over the unlogged server.")


def section(figures: dict[str, Any], parts: Parts) -> list[str]:
    """bench/results.md's section: the HTTP table and verdict, then the in-process medians and rounds."""
    variants = [name for name, value in figures.items() if isinstance(value, dict) and "median_us" in value]
    base = figures[variants[0]]["median_us"]
    rows = [[name, figures[name]["median_us"], f"{figures[name]['median_us'] - base:+.1f}",
             ", ".join(str(value) for value in figures[name]["rounds_us"])] for name in variants]
    http = figures.get("http")
    text = ""
    if http:
        http_rows, ratios = _http_rows(http)
        text = fragment("observability-http", http_table=table(
            ["variant", "requests/s", "vs without (each round)", "p50 ms", "p99 ms", "server CPU us/request",
             "errors"], http_rows), verdict=_verdict(http, ratios), connections=http["connections"],
            seconds=http["seconds"], rounds=http["rounds"], layout=http["layout"],
            load=", ".join(http["load_average"]))
    return render("observability", requests=figures["requests_per_round"], measured=measured(figures),
                  table=table(["variant", "median (us CPU)", "added over the first row (us)", "each round (us)"],
                              rows), http=text)


if __name__ == "__main__":
    main()
