"""The request log (server/request_log.py) over the real app with the stand-in model (Flask's test client):
every route gives exactly one line carrying its request id, the id comes back in the response and in every
JSON error body, and the formats of shared/logs.py render the line as JSON or text.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re

import pytest
from conftest import standin_digits

from server.pipeline import url_rules
from server.request_log import UNMATCHED
from shared import logs

# A value for every path parameter of the app's URL rules, so each rule is requested once.
_ARGUMENTS = {"<int:version>": "2", "<split>": "test", "<index>": "0", "<path:filename>": "app.css"}


def _path(rule: str) -> str:
    for argument, value in _ARGUMENTS.items():
        rule = rule.replace(argument, value)
    assert "<" not in rule, f"give the test a value for the parameter in {rule}"
    return rule


def _lines(caplog: pytest.LogCaptureFixture, request_id: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records
            if record.name == "server.requests" and record.fields["request_id"] == request_id]


def _every_rule(app) -> list[tuple[str, str]]:
    rules = [(rule.rule, sorted(rule.methods - {"HEAD", "OPTIONS"})[0]) for rule in app.url_map.iter_rules()]
    return rules + [(rule, "POST") for rule, _methods in url_rules()]


def test_every_route_gives_exactly_one_line_with_its_id_and_template(app, client, caplog) -> None:
    caplog.set_level(logging.INFO, logger="server.requests")
    rules = _every_rule(app)
    assert len(rules) > 20  # the pipeline's predict routes and Flask's routes are both there
    for number, (rule, method) in enumerate(rules):
        request_id = f"test-{number}"
        response = client.open(_path(rule), method=method, headers={"X-Request-ID": request_id},
                               buffered=True)  # buffered: the body is closed, so the line is written
        assert response.headers["X-Request-ID"] == request_id, rule
        lines = _lines(caplog, request_id)
        assert len(lines) == 1, (rule, lines)
        fields = lines[0].fields
        assert (fields["route"], fields["method"], fields["status"]) == (rule, method, response.status_code)
        assert fields["bytes_out"] == len(response.data)
        assert fields["latency_ms"] >= 0 and fields["client"] == "127.0.0.1"


def test_unknown_paths_share_one_label_and_errors_carry_the_id(client, caplog) -> None:
    caplog.set_level(logging.INFO, logger="server.requests")
    for path, method, status in (("/no/such/page/12345", "GET", 404), ("/predict", "POST", 400),
                                 ("/v2/models/mnist/infer", "GET", 405), ("/healthz", "DELETE", 405)):
        response = client.open(path, method=method, data=b"{not json", content_type="application/json",
                               buffered=True)
        assert response.status_code == status
        request_id = response.json["request_id"]  # made by the server: nothing was sent
        assert response.headers["X-Request-ID"] == request_id and re.fullmatch("[0-9a-f]{32}", request_id)
        assert "error" in response.json
        assert int(response.headers["Content-Length"]) == len(response.data)
        (line,) = _lines(caplog, request_id)  # the id the client saw finds its line
        assert line.fields["status"] == status
    # Flask matched no rule for a 404 or its 405 (as in the metrics' route label): one fixed label, never the path.
    assert [record.fields["route"] for record in caplog.records] == [UNMATCHED, "/predict", "/v2/models/mnist/infer",
                                                                    UNMATCHED]


def test_inference_lines_name_the_model_version_images_and_protocol(client, caplog) -> None:
    caplog.set_level(logging.INFO, logger="server.requests")
    images = standin_digits(3, 1, 4)
    body = json.dumps({"inputs": [{"name": "images", "shape": list(images.shape), "datatype": "FP32",
                                   "data": images.ravel().tolist()}]}).encode()
    response = client.post("/v2/models/mnist/versions/1/infer", data=body, content_type="application/json",
                           headers={"X-Request-ID": "infer-1"}, buffered=True)
    assert response.status_code == 200
    (line,) = _lines(caplog, "infer-1")
    assert {key: line.fields[key] for key in ("route", "model_version", "images", "protocol", "bytes_in")} == {
        "route": "/v2/models/mnist/versions/<int:version>/infer", "model_version": 1, "images": 3,
        "protocol": "v2", "bytes_in": len(body)}


def test_a_traceparent_gives_its_trace_id_and_unsafe_ids_are_replaced(client, caplog) -> None:
    caplog.set_level(logging.INFO, logger="server.requests")
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = client.get("/healthz", headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"}, buffered=True)
    assert response.headers["X-Request-ID"] == trace
    assert len(_lines(caplog, trace)) == 1
    forged = client.get("/healthz", headers={"X-Request-ID": "a\" b=c;" + "x" * 200})
    assert re.fullmatch("[0-9a-f]{32}", forged.headers["X-Request-ID"])  # never written to the log as sent


def _record(**fields: object) -> logging.LogRecord:
    record = logging.LogRecord("server.requests", logging.INFO, __file__, 1, "GET %s %d", ("/healthz", 200), None)
    record.fields = fields
    return record


def test_json_and_text_formats() -> None:
    record = _record(request_id="abc", status=200, model_version=None)
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["message"] == "GET /healthz 200" and line["request_id"] == "abc" and line["level"] == "INFO"
    assert line["time"].endswith("+00:00")
    text = logs.TextFormatter().format(record)
    assert text.endswith("GET /healthz 200 request_id=abc status=200")  # None fields are left out
    stream = io.StringIO()
    logs.configure("json", stream)
    try:
        logging.getLogger("trainer").info("epoch 1", extra={"fields": {"epoch": 1}})
    finally:
        logging.getLogger().handlers.clear()
    assert json.loads(stream.getvalue())["epoch"] == 1


def test_trainer_lines_follow_log_format(monkeypatch) -> None:
    stream = io.StringIO()
    logs.emit("trainer: published version 3", stream, published_version=3)
    monkeypatch.setenv("LOG_FORMAT", "json")
    logs.emit("trainer: published version 3", stream, published_version=3)
    text, line = stream.getvalue().splitlines()
    assert text == "trainer: published version 3"  # text: the line as it always read
    assert json.loads(line)["published_version"] == 3 and json.loads(line)["message"] == text


def test_the_lines_own_record_formats_as_a_standard_one() -> None:
    """request_log's record skips LogRecord's lookups; every attribute a format may name is still there."""
    from server.request_log import _Line

    record = _Line("server.requests", ("POST", "/v2/models/mnist/infer", 200, 1.25), {"request_id": "r1"})
    standard = logging.LogRecord("server.requests", logging.INFO, __file__, 1, "%s", ("x",), None)
    assert set(vars(standard)) <= set(vars(record))
    every = " ".join(f"%({name})s" for name in sorted(vars(standard)) if name not in ("msg", "args"))
    assert logging.Formatter(every + " %(message)s %(asctime)s").format(record).endswith(
        "POST /v2/models/mnist/infer 200 1.2ms " + logging.Formatter().formatTime(record))
    assert record.process == os.getpid() and record.levelname == "INFO"
    assert json.loads(logs.JsonFormatter().format(record))["request_id"] == "r1"


def test_iso_time_is_datetimes() -> None:
    from datetime import UTC, datetime

    for created in (0.0, 1796398325.0, 1796398325.0005, 1796398325.9999, 1796398325.123456, 1796398399.999):
        assert logs.iso_time(created) == datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")


@pytest.fixture
def line_logger():
    """`server.requests` as gunicorn.conf.py sets it up (shared.logs.dict_config's LineHandler on the root),
    with the handler's stream a StringIO; restored afterwards."""
    import logging.config

    root, requests = logging.getLogger(), logging.getLogger("server.requests")
    saved = (root.handlers[:], root.level, requests.handlers[:], requests.level, requests.propagate)

    def configure(log_format: str) -> io.StringIO:
        logging.config.dictConfig(logs.dict_config(log_format))
        stream = io.StringIO()
        root.handlers[0].setStream(stream)
        requests.handlers[:], requests.propagate = [], True
        return stream

    yield configure
    root.handlers[:], root.level = saved[0], saved[1]
    requests.handlers[:], requests.level, requests.propagate = saved[2], saved[3], saved[4]


def _write_one(**notes: object) -> dict:
    from server import request_log

    return request_log.write(request_log.log, "r1", "POST", "/v2/models/{model}/infer", 200, 0.0, 3200, 180,
                             {"model_version": 2, "images": 1, "protocol": "v2", **notes}, "127.0.0.1", None)


def test_direct_json_line_is_the_formatters_line(line_logger) -> None:
    """The request line skips the LogRecord when dict_config's handler is the only one that would print it
    (server.request_log._write_direct): the same keys in the same order, the same values, as JsonFormatter's."""
    from server.request_log import _Line

    stream = line_logger("json")
    assert type(logs.sole_line_handler(logging.getLogger("server.requests"))) is logs.LineHandler
    fields = _write_one(note="ü")
    direct = json.loads(stream.getvalue())
    record = _Line("server.requests", ("POST", "/v2/models/{model}/infer", 200, fields["latency_ms"]), dict(fields))
    formatted = json.loads(logs.JsonFormatter().format(record))
    assert list(direct) == list(formatted) and direct.pop("time")[:10] == formatted.pop("time")[:10]
    assert direct == formatted and direct["note"] == "ü" and direct["model_version"] == 2


def test_direct_line_gives_way_to_any_other_handler_or_filter(line_logger) -> None:
    """A second handler (a user's, or pytest's caplog), a filter or the text format: the line goes through
    logging, so everything a user adds to the logging setup still sees it."""
    requests = logging.getLogger("server.requests")
    stream = line_logger("json")
    requests.addFilter(lambda record: True)
    assert logs.sole_line_handler(requests) is None
    requests.filters.clear()
    seen: list[logging.LogRecord] = []
    extra = logging.Handler()
    extra.emit = seen.append  # type: ignore[method-assign]
    requests.addHandler(extra)
    assert logs.sole_line_handler(requests) is None
    _write_one()
    assert [record.fields["request_id"] for record in seen] == ["r1"]
    assert json.loads(stream.getvalue())["request_id"] == "r1"  # the LineHandler printed it, through logging
    requests.removeHandler(extra)
    stream = line_logger("text")
    assert logs.sole_line_handler(requests) is not None  # the only handler, but not JSON: through logging
    _write_one()
    assert "POST /v2/models/{model}/infer 200 " in stream.getvalue() and "request_id=r1" in stream.getvalue()
