"""h2load (Debian's nghttp2-client), a C load generator for HTTP/2, as the gRPC benchmark's client.

A gRPC unary call is an HTTP/2 POST of one length-prefixed message (`frame`) with `content-type:
application/grpc`; h2load sends the same prepared body over and over on `streams` connections, one call
at a time on each (`-m 1`), from one thread that leaves the cores to the server under test (the grpc.aio
client it replaces took several times its CPU: docs/grpc.md, "Benchmark").

h2load checks the HTTP status, not gRPC's status, which travels in the trailers: a failed call is a 200
with trailers only. So every call must bring back the one answer the server gives this body (`answer_bytes`,
measured once with a real gRPC client): the DATA bytes received, counted by h2load, must be that answer
once per finished call, give or take the calls still in flight when the run ended. A failed call has no
answer and leaves the count short.
"""

from __future__ import annotations

import re
import resource
import subprocess
import tempfile
from pathlib import Path
from typing import Any

PREFIX_BYTES = 5  # gRPC's message prefix: a compressed flag and a 4-byte big-endian length
_REQUESTS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                       r"(\d+) errored, (\d+) timeout")
_DATA = re.compile(r"traffic: .*?, .*?, (?:\S+) \((\d+)\) data")


def frame(message: bytes) -> bytes:
    """One uncompressed gRPC message as it travels in an HTTP/2 DATA frame."""
    return b"\0" + len(message).to_bytes(4, "big") + message


def _h2load(url: str, body: Path, streams: int, seconds: float, log: Path | None) -> str:
    command = ["h2load", "-t1", f"-c{streams}", "-m1", f"-D{round(seconds * 1000)}ms", "-d", str(body),
               "-H", "content-type: application/grpc", "-H", "te: trailers", url]
    if log is not None:
        command.insert(1, f"--log-file={log}")
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout


def _counts(output: str) -> tuple[dict[str, int], int]:
    found = _REQUESTS.search(output)
    data = _DATA.search(output)
    if found is None or data is None:
        raise RuntimeError(f"h2load printed no request or traffic counts:\n{output}")
    names = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
    return dict(zip(names, map(int, found.groups()), strict=True)), int(data.group(1))


def check(output: str, answer_bytes: int) -> int:
    """The calls done, once every one of them brought the server's answer back (module docstring)."""
    counts, data = _counts(output)
    if counts["failed"] or counts["errored"] or counts["timeout"] or counts["succeeded"] != counts["done"]:
        raise RuntimeError(f"h2load: calls failed at the HTTP/2 level: {counts}")
    framed = PREFIX_BYTES + answer_bytes
    answers, rest = divmod(data, framed)
    if rest or not counts["done"] <= answers <= counts["started"]:
        raise RuntimeError(f"h2load: {data} bytes received for {counts['done']} calls done of {counts['started']}"
                           f" started, answers of {framed} bytes: some calls failed (gRPC status in the trailers)")
    return counts["done"]


def _cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load(url: str, body: Path, answer_bytes: int, streams: int, seconds: float, warmup: float) -> dict[str, Any]:
    """A warm-up run, then `seconds` of calls on `streams` connections: calls/s, p50/p99 and h2load's CPU share."""
    if warmup > 0:
        check(_h2load(url, body, streams, warmup, None), answer_bytes)
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "calls.tsv"
        cpu_before = _cpu_of_children()
        done = check(_h2load(url, body, streams, seconds, log), answer_bytes)
        cpu = _cpu_of_children() - cpu_before
        # Columns: start (µs since the epoch), HTTP status, µs until the end of the response.
        latencies = sorted(int(row.split("\t")[2]) for row in log.read_text().splitlines() if row)
    if not latencies:
        raise RuntimeError(f"no call finished in {seconds} s")
    return {"calls_per_s": round(done / seconds, 1),
            "p50_ms": round(latencies[len(latencies) // 2] / 1000, 2),
            "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] / 1000, 2),
            "client_cpu_share": round(cpu / seconds, 2)}
