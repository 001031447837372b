"""The benchmarks start our server as docker-compose.yml runs it: bench.lib.ours.COMPOSE_SERVER_ENV against
`docker compose config` (a clean environment, so only the file's defaults apply)."""

from __future__ import annotations

from helpers import compose_config
from test_deploy import SETTINGS

from bench.lib.ours import COMPOSE_SERVER_ENV


def test_the_bench_sets_every_server_setting_compose_sets_apart_from_the_default() -> None:
    compose = compose_config("docker-compose.yml")["services"]["server"]["environment"]
    differing = {name: value for name, value in compose.items()
                 if name in SETTINGS and value != SETTINGS[name].metadata["default"]}
    assert differing.items() <= COMPOSE_SERVER_ENV.items(), differing
    assert all(compose[name] == value for name, value in COMPOSE_SERVER_ENV.items()), COMPOSE_SERVER_ENV
