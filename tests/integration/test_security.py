"""Security: the bearer token on every route that predicts, kept out of logs and answers;
debug mode that cannot be switched on; non-root containers with a read-only model volume;
secrets from the environment only.

The container checks read the real Dockerfile and docker-compose.yml (parsed, not grepped),
so they hold for whatever the images become.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests
import yaml
from conftest import ROOT, LiveServer

from shared.config import Config

TOKEN = "tok-7Hq2-never-in-a-log"
ZERO = [[0] * 28] * 28
# A valid body for each route the OpenAPI document marks as secured.
BODIES = {
    "/predict": {"instances": [ZERO]},
    "/v1/models/mnist:predict": {"instances": [ZERO]},
    "/v1/models/mnist/versions/{version}:predict": {"instances": [ZERO]},
    "/v2/models/mnist/infer": {"inputs": [{"name": "pixels", "shape": [1, 28, 28], "datatype": "UINT8",
                                           "data": [0] * 784}]},
    "/v2/models/mnist/versions/{version}/infer": {"inputs": [{"name": "pixels", "shape": [1, 784],
                                                              "datatype": "FP32", "data": [0.0] * 784}]},
}


@pytest.fixture(scope="module")
def server(trained_home: Path, start_module_server) -> LiveServer:
    # Everything an operator might try to turn debugging on with, all at once.
    return start_module_server(trained_home, AUTH_TOKEN=TOKEN, FLASK_DEBUG="1", FLASK_ENV="development",
                               WEB_CONCURRENCY="1", THREADS="2")


def secured_operations(server: LiveServer) -> list[tuple[str, str]]:
    document = requests.get(server.url + "/openapi.json", timeout=10).json()
    return [(method.upper(), path) for path, operations in document["paths"].items()
            for method, operation in operations.items()
            if any("bearerAuth" in requirement for requirement in operation.get("security", []))]


def test_every_route_that_predicts_needs_the_token(server) -> None:
    secured = secured_operations(server)
    posts = {path for method, path in secured if method == "POST"}
    # Every POST is a prediction: none may be left open by a route added later.
    document = requests.get(server.url + "/openapi.json", timeout=10).json()
    all_posts = {path for path, operations in document["paths"].items() if "post" in operations}
    assert posts == all_posts == set(BODIES), (posts, all_posts)
    for method, path in secured:
        url = server.url + path.replace("{version}", "1")
        body = BODIES[path]
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": f"Bearer {TOKEN[:-1]}"}):
            response = requests.request(method, url, json=body, headers=headers, timeout=10)
            assert response.status_code == 401, (path, headers, response.text)
            assert TOKEN not in response.text
        response = requests.request(method, url, json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert response.status_code == 200, (path, response.text)


def test_the_token_never_appears_in_logs_or_answers(server) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    # Good requests, refused ones, and errors raised after the token was accepted.
    requests.post(server.url + "/predict", json={"instances": [ZERO]}, headers=auth, timeout=10)
    requests.post(server.url + "/predict", data="{not json", headers={**auth, "Content-Type": "application/json"},
                  timeout=10)
    requests.post(server.url + "/predict", json={"instances": [ZERO]},
                  headers={"Authorization": f"Bearer {TOKEN}-guess"}, timeout=10)
    requests.get(server.url + "/no-such-route", headers=auth, timeout=10)
    answers = [requests.get(server.url + path, headers=auth, timeout=30).text
               for path in ("/models", "/metrics", "/openapi.json", "/readyz", "/v1/models/mnist", "/")]
    assert not [a for a in answers if TOKEN in a], "an answer shows the token"
    log = server.log()
    assert "POST /predict" in log  # the log is real and has the requests
    assert TOKEN not in log


def test_debug_mode_cannot_be_switched_on(server) -> None:
    """FLASK_DEBUG=1 / FLASK_ENV=development are set on this server: no debugger, no tracebacks."""
    # The debugger's console and its script (served for any path when it is active) are absent.
    debugger = requests.get(server.url + "/?__debugger__=yes&cmd=resource&f=debugger.js", timeout=10)
    assert "javascript" not in debugger.headers["Content-Type"]
    assert "debugger" not in debugger.text.lower()
    for path in ("/console", "/no-such-route", "/samples/test/1.png?scale=x"):
        response = requests.get(server.url + path, timeout=10)
        assert response.status_code in (400, 404), (path, response.status_code)
        assert response.headers["Content-Type"].startswith("application/json"), path
        for marker in ("Traceback", "Werkzeug Debugger", "__debugger__", 'File "'):
            assert marker not in response.text, (path, marker)


def test_an_unexpected_error_never_shows_a_traceback_even_with_flask_debug(monkeypatch, tmp_path) -> None:
    """The one way to see the 500 path: a bug planted in-process, with FLASK_DEBUG=1 set."""
    from server import app as app_module
    from server.protocols import native

    monkeypatch.setenv("FLASK_DEBUG", "1")

    def planted_bug(*_args: object) -> None:
        raise RuntimeError("planted bug with /secret/path in its message")

    monkeypatch.setattr(native, "decode", planted_bug)
    client = app_module.create_app(Config(home=tmp_path), watch=False).test_client()
    response = client.post("/predict", json={"instances": [ZERO]})
    assert response.status_code == 500
    assert response.is_json and "Traceback" not in response.text and "/secret/path" not in response.text


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Dockerfile instructions per stage name, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, argument = line.partition(" ")
        if instruction.upper() == "FROM":
            name = argument.split()[-1] if " as " in argument.lower() else argument
            current = stages.setdefault(name, [])
        current.append((instruction.upper(), argument.strip()))
    return stages


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def resolved(services: dict, name: str) -> dict:
    """A service with what it `extends` filled in (the grpc service extends the server's build and user)."""
    spec = services[name]
    base = spec.get("extends", {}).get("service")
    return {**resolved(services, base), **spec} if base else spec


def test_both_images_run_as_a_non_root_user() -> None:
    stages = dockerfile_stages()
    services = compose()["services"]
    for service in services:
        spec = resolved(services, service)
        target = spec["build"]["target"]
        users = [argument for instruction, argument in stages[target] if instruction == "USER"]
        assert users, f"stage {target!r} ({service}) never sets USER: it would run as root"
        user = users[-1].split(":")[0]
        assert user not in ("root", "0"), f"{service} runs as {users[-1]}"
        assert str(spec.get("user", "")).split(":")[0] not in ("root", "0"), f"compose makes {service} root"
        assert not spec.get("privileged"), f"{service} is privileged"


def test_the_server_mounts_the_model_volume_read_only() -> None:
    services = compose()["services"]

    def mounts(service: str) -> list[tuple[str, bool]]:
        found = []
        for volume in services[service].get("volumes", []):
            if isinstance(volume, str):
                parts = volume.split(":")
                found.append((parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
            else:
                found.append((volume["target"], bool(volume.get("read_only"))))
        return found

    home = "/data"  # MNIST_HOME in the image
    assert (home, True) in mounts("server") and (home, False) not in mounts("server"), mounts("server")
    assert (home, False) in mounts("trainer"), "the trainer must be able to publish"


def test_debugging_is_not_configured_in_the_images_or_compose() -> None:
    settings = [argument for stage in dockerfile_stages().values() for instruction, argument in stage
                if instruction in ("ENV", "ARG")]
    for service in compose()["services"].values():
        environment = service.get("environment", {})
        settings += [f"{k}={v}" for k, v in environment.items()] if isinstance(environment, dict) else environment
    assert not [s for s in settings if re.search(r"FLASK_DEBUG|FLASK_ENV|DEBUG\s*=\s*1|--reload", s, re.I)]
    server_command = " ".join(a for i, a in dockerfile_stages()["server"] if i in ("CMD", "ENTRYPOINT"))
    assert "gunicorn" in server_command and "flask run" not in server_command and "--debug" not in server_command


def test_secrets_come_from_the_environment_only() -> None:
    assert Config().auth_token == "", "a token is built into the code"
    assert Config.from_env({"AUTH_TOKEN": "from-env"}).auth_token == "from-env"
    for instruction, argument in (pair for stage in dockerfile_stages().values() for pair in stage):
        assert not re.search(r"TOKEN|SECRET|PASSWORD", argument, re.I), f"{instruction} {argument}"
    for name, service in compose()["services"].items():
        environment = service.get("environment", {})
        for key, value in environment.items():
            if re.search(r"TOKEN|SECRET|PASSWORD", key, re.I):
                # Only ever passed through from the operator's environment, never written here.
                assert re.fullmatch(r"\$\{" + key + r"(:?-)?\}", str(value)), f"{name}: {key}={value!r}"
