"""Each recipe carries its own epoch count (issue 27): EPOCHS empty or `auto` trains the recipe's own
(seed 6, improved 5: improved meets its accuracy target in the seed's time only at 5), an explicit
EPOCHS or `--epochs` always wins, and bad values are still refused saying what a good one looks like."""

from __future__ import annotations

import pytest

from shared.config import RECIPE_EPOCHS, Config, ConfigError, parse_setting
from trainer import cli


def test_the_seed_recipe_keeps_six_epochs_and_improved_trains_five():
    assert RECIPE_EPOCHS == {"seed": 6, "improved": 5}
    assert Config.from_env({}).epochs == 6  # unchanged default behaviour
    assert Config.from_env({"MODEL_RECIPE": "improved"}).epochs == 5
    assert Config(recipe="improved").epochs == 5  # built in code, as bench and tests do


@pytest.mark.parametrize("auto", ["", "auto", " AUTO "])
@pytest.mark.parametrize("recipe", sorted(RECIPE_EPOCHS))
def test_empty_or_auto_epochs_mean_the_recipes_own_count(recipe, auto):
    assert Config.from_env({"MODEL_RECIPE": recipe, "EPOCHS": auto}).epochs == RECIPE_EPOCHS[recipe]


@pytest.mark.parametrize(("recipe", "epochs"), [("improved", "6"), ("seed", "5"), ("improved", "1")])
def test_an_explicit_epochs_wins_over_the_recipes_count(recipe, epochs):
    assert Config.from_env({"MODEL_RECIPE": recipe, "EPOCHS": epochs}).epochs == int(epochs)
    assert Config(recipe=recipe, epochs=int(epochs)).epochs == int(epochs)


@pytest.mark.parametrize(("value", "reason"), [("0", "at least 1"), ("-2", "at least 1"), ("5.5", "whole number"),
                                               ("automatic", "whole number")])
def test_bad_epochs_are_refused_naming_the_variable_and_auto(value, reason):
    with pytest.raises(ConfigError) as caught:
        Config.from_env({"MODEL_RECIPE": "improved", "EPOCHS": value})
    message = str(caught.value)
    assert f"EPOCHS={value!r}" in message and reason in message and "auto" in message


def test_the_trainers_epochs_flag_wins_over_epochs_and_the_recipe(monkeypatch):
    monkeypatch.setenv("MODEL_RECIPE", "improved")
    monkeypatch.setenv("EPOCHS", "9")
    assert Config.from_env(**vars(cli.parse_args([]))).epochs == 9
    assert Config.from_env(**vars(cli.parse_args(["--epochs", "7"]))).epochs == 7
    # `--epochs auto` is a flag like any other: it wins over EPOCHS=9 and gives the recipe's count.
    assert Config.from_env(**vars(cli.parse_args(["--epochs", "auto"]))).epochs == 5
    monkeypatch.setenv("EPOCHS", "auto")
    assert Config.from_env(**vars(cli.parse_args(["--recipe", "seed"]))).epochs == 6


def test_the_trainers_epochs_flag_refuses_bad_values_like_the_variable(capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["--epochs", "0"])
    assert "argument --epochs: '0' must be at least 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="whole number"):
        parse_setting("epochs", "six")
