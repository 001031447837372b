"""The Dockerfile and .dockerignore read as text, in-process; no Docker engine needed.

hadolint and `docker compose config` run as processes, so their checks are tests/integration/test_deploy_tools.py.
"""

from __future__ import annotations

import re

from conftest import ROOT
from helpers import DOCKERFILE, stage


def test_images_are_layered_for_fast_rebuilds_and_run_as_non_root() -> None:
    assert re.search(r"^FROM python:3\.11-slim(-bookworm)? AS base$", DOCKERFILE, flags=re.MULTILINE)
    for service in ("server", "trainer"):
        deps = stage(f"{service}-deps")
        # Only the requirements file precedes the install: a code change keeps this layer cached.
        assert f"COPY requirements/{service}.txt" in deps and "pip install" in deps
        assert "COPY shared/" not in deps and f"COPY {service}/" not in deps
        runtime = stage(service)
        assert runtime.startswith(f"COPY --from={service}-deps /opt/venv /opt/venv")
        assert re.search(r"^USER 10001:10001$", runtime, flags=re.MULTILINE)
    assert "trainer.txt" not in stage("server-deps")
    assert 'ENTRYPOINT ["python", "-m", "trainer"]' in stage("trainer")
    # The proxy is Debian's HAProxy on the same base, its config checked at build time, not root.
    proxy = stage("proxy")
    assert "apt-get install -y --no-install-recommends haproxy" in proxy and "rm -rf /var/lib/apt/lists/*" in proxy
    assert "haproxy -c" in proxy and re.search(r"^USER 10001:10001$", proxy, flags=re.MULTILINE)
    # Before the trainer stages: the classic builder builds every stage up to the target.
    assert DOCKERFILE.index("AS proxy") < DOCKERFILE.index("AS trainer-deps")
    server = stage("server")
    assert "HEALTHCHECK" in server and "/readyz" in server and "curl" not in server.split("HEALTHCHECK")[1]
    assert 'CMD ["gunicorn", "-c", "server/gunicorn.conf.py", "server.wsgi:app"]' in server


def test_dockerignore_sends_only_what_the_images_copy() -> None:
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert lines[0] == "*", "the build context should be an allow-list"
    assert set(re.findall(r"^COPY (?!--from)(\S+)/? ", DOCKERFILE, flags=re.MULTILINE)) <= {
        "requirements/server.txt",
        "requirements/trainer.txt",
        "requirements/s3store.txt",
        "shared/",
        "server/",
        "trainer/",
        "deploy/haproxy/haproxy.cfg",
    }
    assert {"!requirements/", "!shared/", "!server/", "!trainer/", "!deploy/haproxy/"} <= set(lines)
