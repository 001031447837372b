"""HTTP method labels are a fixed set: an invented method cannot add a Prometheus series (issue 23, item 4)."""

from __future__ import annotations

from prometheus_client import generate_latest


def test_invented_methods_are_counted_as_other(client):
    for method in ("BREW", "XQZT", "PROPFIND"):
        assert client.open("/healthz", method=method).status_code == 405
    exposition = generate_latest().decode()
    for method in ("BREW", "XQZT", "PROPFIND"):
        assert f'method="{method}"' not in exposition
    assert 'mnist_requests_total{method="other",protocol="http",route="unmatched",status="405"}' in exposition


def test_standard_methods_keep_their_label(client):
    client.get("/healthz")
    expected = 'mnist_requests_total{method="GET",protocol="http",route="/healthz",status="200"}'
    assert expected in generate_latest().decode()
