"""The trainer's own CLI reads `--recipe` over MODEL_RECIPE (issue 27). That `make retrain MODEL_RECIPE=...`
passes the flag (`make -n`, a process) is tests/integration/test_make_targets.py."""

from __future__ import annotations

import pytest

from shared.config import Config
from trainer import cli


def test_the_trainers_recipe_flag_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("MODEL_RECIPE", "seed")  # what compose sets by default
    assert Config.from_env(**vars(cli.parse_args(["--recipe", "improved"]))).recipe == "improved"
    with pytest.raises(SystemExit):  # argparse refuses an unknown recipe, as MODEL_RECIPE=other would be
        cli.parse_args(["--recipe", "other"])
