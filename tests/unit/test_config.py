"""Configuration: defaults, environment parsing, one clear error for bad values, flags over env."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SHARED_MNIST_SHA256

from shared.config import KERAS_MNIST_SHA256, KERAS_MNIST_URL, Config, ConfigError, config_table, parse_setting


def test_defaults_reproduce_the_reference_training_and_keras_dataset():
    config = Config.from_env({})
    assert (config.epochs, config.batch_size, config.train_subset) == (6, 128, 0)
    assert config.dataset_url == KERAS_MNIST_URL
    assert config.dataset_sha256 == KERAS_MNIST_SHA256
    assert config.model_base_path == Path("var") / "mnist"
    assert config.dataset_path == Path("var") / "datasets" / "mnist.npz"
    assert config.pinned_version is None
    assert config.skip_if_published is False


def test_environment_values_are_parsed_to_their_types():
    config = Config.from_env(
        {
            "MNIST_HOME": "/volume",
            "EPOCHS": "3",
            "MIN_ACCURACY": "0.5",
            "SKIP_IF_PUBLISHED": "Yes",
            "MODEL_VERSION": "4",
            "RELOAD_INTERVAL": "0.25",
            "MNIST_SHA256": SHARED_MNIST_SHA256.upper(),
            "MODEL_BACKEND": "keras",
        }
    )
    assert config.home == Path("/volume")
    assert config.epochs == 3
    assert config.min_accuracy == 0.5
    assert config.skip_if_published is True
    assert config.pinned_version == 4
    assert config.reload_interval == 0.25
    assert config.dataset_sha256 == SHARED_MNIST_SHA256  # normalised to lower case
    assert config.backend == "keras"


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("EPOCHS", "0", "at least 1"),
        ("EPOCHS", "six", "whole number"),
        ("BATCH_SIZE", "-5", "at least 1"),
        ("SEED", "-1", "0 or more"),
        ("TRAIN_SUBSET", "1.5", "whole number"),
        ("MIN_ACCURACY", "1.5", "between 0 and 1"),
        ("MIN_ACCURACY", "nan", "between 0 and 1"),
        ("SKIP_IF_PUBLISHED", "maybe", "true or false"),
        ("MNIST_SHA256", "abc123", "64 hexadecimal"),
        ("MNIST_HOME", "", "not be empty"),
        ("MODEL_BACKEND", "tflite", "onnx, keras"),
        ("TRAIN_PRECISION", "float16", "auto, float32, mixed_bfloat16"),
        ("MODEL_VERSION", "0", "at least 1"),
        ("RELOAD_INTERVAL", "0", "greater than 0"),
        ("RELOAD_INTERVAL", "inf", "greater than 0"),
        ("PORT", "70000", "1 to 65535"),
        ("KEEP_VERSIONS", "", "whole number"),
    ],
)
def test_a_bad_value_is_one_config_error_naming_the_variable(variable, value, reason):
    with pytest.raises(ConfigError) as caught:
        Config.from_env({variable: value})
    message = str(caught.value)
    assert f"{variable}={value!r}" in message
    assert reason in message
    assert "\n" not in message


def test_every_bad_value_is_reported_at_once():
    with pytest.raises(ConfigError) as caught:
        Config.from_env({"EPOCHS": "0", "PORT": "http", "MIN_ACCURACY": "2"})
    message = str(caught.value)
    for variable in ("EPOCHS", "PORT", "MIN_ACCURACY"):
        assert variable in message


def test_overrides_win_over_the_environment():
    config = Config.from_env({"EPOCHS": "5", "SEED": "1"}, epochs=2, seed=None)
    assert config.epochs == 2
    assert config.seed == 1  # a None override (flag not given) leaves the environment's value


def test_parse_setting_applies_the_variables_checks():
    assert parse_setting("epochs", "7") == 7
    with pytest.raises(ValueError, match="at least 1"):
        parse_setting("epochs", "0")


def test_config_table_documents_every_variable():
    table = config_table()
    for variable in ("MNIST_HOME", "MNIST_URL", "MNIST_SHA256", "EPOCHS", "MIN_ACCURACY", "KEEP_VERSIONS"):
        assert f"| `{variable}` |" in table
