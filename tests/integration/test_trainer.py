"""The real trainer on a slice of real MNIST: what it publishes, its gates, logs and management CLI.

Training is the expensive part (~25 s a run on 2 cores), so the published model comes from the
session-wide `trained_home` (EPOCHS=1, TRAIN_SUBSET=4000, read-only here); only the quality gate
test runs the trainer again (1000 images), and the progress-output test fits 256 images in-process.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from conftest import ROOT, SHARED_MNIST, SHARED_MNIST_SHA256, TRAIN_SUBSET, run_trainer, trainer_env
from helpers import hidden_entries, tiny_mnist

from shared.model_store import KERAS_FILE, METADATA_FILE, ONNX_FILE, ModelStore
from shared.preprocess import scale_pixels
from trainer import precision
from trainer.export import PROBABILITY_TOLERANCE, QualityGateError, check_onnx_agrees

HELD_OUT = slice(9000, 10000)  # test digits: validation data only, never trained on
REFERENCE_LAYERS = ["Conv2D", "Conv2D", "MaxPooling2D", "Dropout", "Flatten", "Dense", "Dropout", "Dense"]
REFERENCE_PARAMETERS = 1_199_882  # the Keras MNIST example's summary
EPOCH_LINE = re.compile(r"^epoch 1/1: loss \d\.\d{4} accuracy \d\.\d{4} val_accuracy \d\.\d{4} \(\d+\.\d s\)$")


@pytest.fixture(scope="module")
def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    with np.load(SHARED_MNIST) as archive:
        return archive["x_test"][HELD_OUT], archive["y_test"][HELD_OUT]


@pytest.fixture(scope="module")
def keras_model(trained_home):
    import keras

    return keras.saving.load_model(ModelStore(trained_home / "mnist").version_dir(1) / KERAS_FILE)


@pytest.fixture(scope="module")
def onnx_session(trained_home):
    import onnxruntime

    path = ModelStore(trained_home / "mnist").version_dir(1) / ONNX_FILE
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def onnx_probabilities(session, images: np.ndarray) -> np.ndarray:
    return session.run(None, {session.get_inputs()[0].name: scale_pixels(images)})[0]


def test_the_trainer_publishes_version_1_with_every_file(trained_home):
    store = ModelStore(trained_home / "mnist")
    assert store.versions() == [1]
    assert sorted(p.name for p in store.version_dir(1).iterdir()) == sorted([KERAS_FILE, ONNX_FILE, METADATA_FILE])
    assert hidden_entries(store) == []  # no staging folder left behind
    assert (trained_home / "datasets" / "mnist.npz").is_file()  # the cache the server and later runs use


def test_metadata_records_everything_the_issue_lists(trained_home):
    metadata = ModelStore(trained_home / "mnist").metadata(1)
    assert metadata["version"] == 1
    created = datetime.fromisoformat(metadata["created"])
    assert timedelta(0) <= datetime.now(UTC) - created < timedelta(hours=2)
    assert metadata["dataset_sha256"] == SHARED_MNIST_SHA256
    assert metadata["hyperparameters"] == {
        "epochs": 1,
        "batch_size": 128,
        "seed": 1337,
        "train_images": TRAIN_SUBSET,
        "precision": precision.resolve("auto"),  # TRAIN_PRECISION's default on this CPU
        "optimizer": "rmsprop",
        "loss": "categorical_crossentropy",
    }
    [epoch] = metadata["history"]
    assert epoch["epoch"] == 1 and epoch["seconds"] > 0
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(epoch)
    # The test set is the validation set; validation ran in the training precision, the test in float32,
    # so under mixed bfloat16 a few of the 10,000 digits may come out differently.
    same_numerics = metadata["hyperparameters"]["precision"] == "float32"
    assert metadata["test_accuracy"] == pytest.approx(epoch["val_accuracy"], abs=1e-4 if same_numerics else 2e-3)
    assert 0 < metadata["test_loss"] < 1
    confusion = np.array(metadata["confusion_matrix"])
    assert confusion.shape == (10, 10)
    # Rows are true labels: they add up to the real test set's class counts.
    assert confusion.sum(axis=1).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert confusion.trace() / confusion.sum() == pytest.approx(metadata["test_accuracy"], abs=1e-4)
    assert np.allclose(metadata["per_class_accuracy"], confusion.diagonal() / confusion.sum(axis=1), atol=1e-5)
    assert 0 < metadata["training_seconds"] < 600
    assert metadata["onnx_max_probability_difference"] <= PROBABILITY_TOLERANCE
    libraries = metadata["libraries"]
    assert libraries["tensorflow"].startswith("2.21") and libraries["keras"].startswith("3.")
    assert {"python", "numpy", "onnx", "onnxruntime", "tf2onnx"} <= set(libraries)


def test_the_saved_keras_model_is_the_reference_cnn(keras_model):
    assert [type(layer).__name__ for layer in keras_model.layers] == REFERENCE_LAYERS
    assert [layer.rate for layer in keras_model.layers if hasattr(layer, "rate")] == [0.25, 0.5]
    assert keras_model.count_params() == REFERENCE_PARAMETERS
    assert keras_model.input_shape == (None, 28, 28, 1) and keras_model.output_shape == (None, 10)
    assert type(keras_model.optimizer).__name__ == "RMSprop"
    # Float32 whatever it was trained in, so the ONNX export and Keras serving compute in float32.
    assert {layer.dtype_policy.name for layer in keras_model.layers} == {"float32"}


def test_the_saved_model_scores_well_above_chance_and_onnx_agrees(keras_model, onnx_session, mnist_test):
    images, labels = mnist_test
    keras_probabilities = keras_model.predict(scale_pixels(images), batch_size=500, verbose=0)
    accuracy = float((keras_probabilities.argmax(axis=1) == labels).mean())
    assert accuracy > 0.8, f"accuracy {accuracy:.3f} on held-out digits (chance is 0.1)"
    onnx = onnx_probabilities(onnx_session, images)
    assert np.array_equal(onnx.argmax(axis=1), keras_probabilities.argmax(axis=1))
    assert np.abs(onnx - keras_probabilities).max() <= PROBABILITY_TOLERANCE


def test_the_onnx_gate_refuses_any_disagreement(trained_home, onnx_session, mnist_test):
    images = mnist_test[0][:200]
    onnx_path = ModelStore(trained_home / "mnist").version_dir(1) / ONNX_FILE
    exact = onnx_probabilities(onnx_session, images)
    assert check_onnx_agrees(onnx_path, images, exact) <= 1e-6

    nudged = exact.copy()
    nudged[17, 3] += 3 * PROBABILITY_TOLERANCE  # one probability off, same labels everywhere
    with pytest.raises(QualityGateError, match=r"differs from Keras by 3\.\d+e-04"):
        check_onnx_agrees(onnx_path, images, nudged)

    relabelled = exact.copy()
    winner = relabelled[5].argmax()
    relabelled[5, (winner + 1) % 10] = relabelled[5, winner] + 0.01  # image 5 now "predicted" differently
    with pytest.raises(QualityGateError, match="disagrees with Keras on 1 of 200 labels"):
        check_onnx_agrees(onnx_path, images, relabelled)


@pytest.mark.parametrize("numerics", ["mixed_bfloat16", "float32"])
def test_training_in_either_precision_returns_the_trained_weights_as_float32(numerics, monkeypatch):
    import trainer.train

    built, real_build_model = [], trainer.train.build_model

    def recording_build_model(*args):
        built.append(real_build_model(*args))
        return built[-1]

    monkeypatch.setattr(trainer.train, "build_model", recording_build_model)
    run = trainer.train.train(tiny_mnist(SHARED_MNIST, 512), epochs=1, batch_size=128, seed=1, precision=numerics)

    fitted = built[0]
    assert fitted.layers[0].dtype_policy.name == numerics  # the convolutions ran in the asked precision
    assert fitted.layers[-1].dtype_policy.name == "float32"  # the softmax output always in float32
    assert {layer.dtype_policy.name for layer in run.model.layers} == {"float32"}
    assert len(built) == (2 if numerics == "mixed_bfloat16" else 1)  # a float32 twin only when needed
    for trained, served in zip(fitted.get_weights(), run.model.get_weights(), strict=True):
        assert served.dtype == np.float32 and np.array_equal(trained, served)
    assert run.model.optimizer is fitted.optimizer  # RMSprop's state is saved with the model too
    assert len(run.history) == 1 and 0 < run.history[0]["loss"] < 10


@pytest.mark.parametrize("on_terminal", [True, False])
def test_training_shows_keras_progress_bar_only_on_a_terminal(on_terminal, capsys, monkeypatch):
    from trainer.train import train

    monkeypatch.setattr(sys.stdout, "isatty", lambda: on_terminal)
    run = train(tiny_mnist(SHARED_MNIST, 256), epochs=2, batch_size=128, seed=1)  # tiny: this is about the output
    output = capsys.readouterr().out
    assert (run.train_images, len(run.history)) == (256, 2)
    assert ("━" in output) is on_terminal  # Keras' bar
    assert ("epoch 2/2: loss" in output) is not on_terminal  # the plain per-epoch line


def test_the_accuracy_gate_publishes_nothing_and_logs_one_line_per_epoch(home_copy, mnist_http):
    store = ModelStore(home_copy / "mnist")
    requests_before = len(mnist_http.requests)
    result = run_trainer(home_copy, mnist_http.url(), EPOCHS="1", TRAIN_SUBSET="1000", MIN_ACCURACY="0.999")
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"trainer: not published: test accuracy 0\.\d{4} is below MIN_ACCURACY 0\.999", result.stderr)
    assert store.versions() == [1]  # the good model stays current
    assert hidden_entries(store) == []  # and no staging folder is left
    # Off a terminal (captured, as in container logs): one plain line per epoch, no progress bar.
    epoch_lines = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 1 and EPOCH_LINE.match(epoch_lines[0]), result.stdout
    assert "trainer: training on 1000 images for 1 epochs" in result.stdout
    assert "\r" not in result.stdout and "━" not in result.stdout
    assert mnist_http.requests[requests_before:] == []  # the cached dataset was used, not downloaded again


def test_skip_if_published_exits_0_without_training(home_copy, mnist_http):
    requests_before = len(mnist_http.requests)
    result = run_trainer(home_copy, mnist_http.url(), SKIP_IF_PUBLISHED="true", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "already holds version 1; not training (SKIP_IF_PUBLISHED)" in result.stdout
    assert "epoch" not in result.stdout
    assert ModelStore(home_copy / "mnist").versions() == [1]
    assert mnist_http.requests[requests_before:] == []


def test_a_dataset_failure_exits_1_with_one_line(tmp_path, mnist_http):
    url = mnist_http.url("truncated.npz")
    result = run_trainer(tmp_path, url)
    assert result.returncode == 1
    assert f"trainer: dataset error: {url}: SHA-256 does not match {SHARED_MNIST_SHA256}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "mnist").exists()


def manage(home, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainer.manage", *args],
        cwd=ROOT,
        env=trainer_env(home, "unused"),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_manage_status_lists_versions_with_their_accuracy(trained_home):
    accuracy = ModelStore(trained_home / "mnist").metadata(1)["test_accuracy"]
    result = manage(trained_home, "status")
    assert result.returncode == 0, result.stderr
    [header, row] = result.stdout.splitlines()
    assert header.split() == ["version", "created", "test_accuracy", "current"]
    assert row.split()[0] == "1" and row.split()[2] == f"{accuracy:.4f}" and row.endswith("*")


def test_manage_status_of_an_empty_store(tmp_path):
    result = manage(tmp_path, "status")
    assert result.returncode == 0
    assert "no model versions yet" in result.stdout


def test_manage_rollback(home_copy):
    store = ModelStore(home_copy / "mnist")
    result = manage(home_copy, "rollback")
    assert result.returncode == 1
    assert "nothing to roll back to (versions: [1])" in result.stderr
    assert "Traceback" not in result.stderr

    # A second version (a copy of the first, re-stamped) to roll back from.
    with store.staging() as staged:
        for name in (KERAS_FILE, ONNX_FILE):
            shutil.copy(store.version_dir(1) / name, staged / name)
        metadata = store.metadata(1)

        def stamp(folder, version):
            (folder / METADATA_FILE).write_text(json.dumps({**metadata, "version": version}))

        assert store.publish(staged, stamp) == 2

    result = manage(home_copy, "rollback")
    assert result.returncode == 0, result.stderr
    assert "retired version 2; version 1 is current again" in result.stdout
    assert store.versions() == [1]
    assert manage(home_copy, "status").stdout.splitlines()[1].endswith("*")
