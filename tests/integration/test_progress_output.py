"""Long steps say what they do (issue 24 item 6): pip installs print an estimate and every package, the
training targets show the image build, `make up` follows the trainer's epoch lines until the stack is healthy,
and `make serve-local` prints the address gunicorn really binds.

`make up`'s script runs against a stand-in `docker compose` (a shell script), so no Docker is needed.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT

from shared.config import Config

STAND_IN_COMPOSE = """#!/usr/bin/env bash
# A stand-in for `docker compose`: `up` takes a while, the trainer container appears, its log has epoch lines.
here=$(dirname "$0")
case "$*" in
  *"up --build -d --wait"*) touch "$here/trainer-exists"; sleep 2; exit "${UP_STATUS:-0}";;
  *"ps -aq trainer"*) [ -f "$here/trainer-exists" ] && echo 0123456789ab; exit 0;;
  *"logs -f --no-log-prefix trainer"*) echo "epoch 1/2: loss 0.51"; echo "epoch 2/2: loss 0.22"; exec sleep 60;;
esac
echo "unexpected: $*" >&2
exit 2
"""


def make_dry_run(target: str) -> list[str]:
    """The commands `make -n -B target` would run, installs included as on a first run (none is run)."""
    done = subprocess.run(["make", "-n", "-B", "--no-print-directory", target], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.replace("\\\n", " ").splitlines()


def run_up_script(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    compose = tmp_path / "compose"
    compose.write_text(STAND_IN_COMPOSE)
    compose.chmod(compose.stat().st_mode | stat.S_IXUSR)
    return subprocess.run(["bash", "scripts/up.sh"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COMPOSE": str(compose), **env})


def test_make_up_follows_the_trainers_epoch_lines_until_the_stack_is_up(tmp_path: Path) -> None:
    done = run_up_script(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("up: following the trainer's log"), done.stdout
    assert lines[1:] == ["epoch 1/2: loss 0.51", "epoch 2/2: loss 0.22"], done.stdout


def test_make_up_exits_with_the_status_of_compose_up(tmp_path: Path) -> None:
    done = run_up_script(tmp_path, UP_STATUS="3")
    assert done.returncode == 3, done.stdout + done.stderr


def test_pip_installs_print_an_estimate_then_every_package() -> None:
    for target in ("venv", "serve-local"):
        commands = make_dry_run(target)
        installs = [index for index, line in enumerate(commands) if re.search(r"pip install .*-r requirements", line)]
        assert installs, (target, commands)
        for index in installs:
            assert "--quiet" not in commands[index], commands[index]
        announced = " ".join(commands[: installs[0]])
        assert re.search(r"about [\d.]+ [GM]B, .*(minute|first run)", announced), (target, announced)


@pytest.mark.parametrize("target", ["train", "retrain"])
def test_training_targets_show_the_image_build(target: str) -> None:
    assert not [line for line in make_dry_run(target) if "--quiet-build" in line]


@pytest.mark.parametrize("env", [{}, {"BIND_HOST": "127.0.0.1", "PORT": "8123"}])
def test_serve_local_prints_the_address_gunicorn_binds(env: dict[str, str]) -> None:
    clean = {key: value for key, value in os.environ.items() if key not in ("BIND_HOST", "PORT")}
    [echo] = [line for line in make_dry_run("serve-local") if "serve-local: listening on" in line]
    said = subprocess.run(["bash", "-c", echo], capture_output=True, text=True, timeout=10, env={**clean, **env})
    address = re.search(r"listening on (\S+) ", said.stdout)
    assert address, said.stdout
    config = Config.from_env({**clean, **env})
    assert address[1] == f"{config.bind_host}:{config.port}"
    assert 'bind = f"{_config.bind_host}:{_config.port}"' in (ROOT / "server" / "gunicorn.conf.py").read_text()
