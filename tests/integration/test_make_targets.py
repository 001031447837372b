"""`make retrain MODEL_RECIPE=improved` reaches the trainer in every way make starts it (issue 27):
the compose trainer, the GPU override (GPU=1) and the multi-worker script (WORKERS=N). `make -n`
prints the commands without running them. The trainer's own CLI reading the flag is tests/unit/test_make_retrain.py."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from helpers import ROOT

GPU_FILES = "-f docker-compose.yml -f docker-compose.gpu.yml"


def make_dry_run(*variables: str) -> str:
    """What `make retrain <variables>` would run (`make -n` runs nothing), spaces collapsed."""
    make = shutil.which("make")
    if make is None:
        pytest.fail("make not found: the project's commands are make targets (apt-get install make)")
    result = subprocess.run([make, "-n", "--no-print-directory", "retrain", "COMPOSE=docker compose", *variables],
                            cwd=ROOT, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return " ".join(result.stdout.split())


@pytest.mark.parametrize(("variables", "expected"), [
    ((), "docker compose run --rm -e SKIP_IF_PUBLISHED=false trainer --recipe improved"),
    (("GPU=1",), f"docker compose {GPU_FILES} run --rm -e SKIP_IF_PUBLISHED=false trainer --recipe improved"),
    (("GPU=1", "EPOCHS=5"), f"docker compose {GPU_FILES} run --rm -e SKIP_IF_PUBLISHED=false trainer"
                            " --epochs 5 --recipe improved"),
    (("WORKERS=2", "GPU=1"), f'COMPOSE="docker compose {GPU_FILES}" bash scripts/retrain-workers.sh 2'
                             " --recipe improved"),
])
def test_make_retrain_passes_the_recipe_to_the_trainer(variables, expected):
    assert expected in make_dry_run("MODEL_RECIPE=improved", *variables)


def test_without_model_recipe_make_passes_no_recipe_flag():
    # The trainer's own default (MODEL_RECIPE in compose, else `seed`) applies.
    assert "--recipe" not in make_dry_run() and "--recipe" not in make_dry_run("GPU=1")
