"""The trainer CLI refuses bad settings with exit 2 and one line, before training (a real trainer process)."""

from __future__ import annotations

from conftest import run_trainer

# The trainer CLI answers most of these before importing TensorFlow, so they cost about a second each.

JOB = {"KERAS_BACKEND": "jax", "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
       "KERAS_DISTRIBUTION_JOB_ADDRESSES": "trainer-0:7777,trainer-1:7777"}


def test_trainer_exits_2_with_one_line_for_a_bad_environment_value(tmp_path):
    result = run_trainer(tmp_path, "unused", EPOCHS="ten")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["trainer: invalid configuration: EPOCHS='ten': must be a whole number,"
                     " or auto (empty) for the recipe's own count"]
    assert not (tmp_path / "mnist").exists()


def test_trainer_refuses_a_bad_flag_value_like_its_variable(tmp_path):
    result = run_trainer(tmp_path, "unused", "--epochs", "0")
    assert result.returncode == 2
    assert "argument --epochs: '0' must be at least 1" in result.stderr


def test_trainer_flags_override_the_environment(home_copy, tmp_path):
    # MNIST_HOME points at an empty volume and SKIP_IF_PUBLISHED is off; the flags point at a
    # volume holding version 1 and turn skipping on, so the trainer must skip without training.
    empty = tmp_path / "empty"
    result = run_trainer(
        empty, "unused", "--home", str(home_copy), "--skip-if-published", SKIP_IF_PUBLISHED="false"
    )
    assert result.returncode == 0, result.stderr
    assert "already holds version 1; not training" in result.stdout
    assert not empty.exists()


def test_multi_worker_settings_that_cannot_form_a_job_exit_2_before_training(tmp_path, mnist_http) -> None:
    result = run_trainer(tmp_path, mnist_http.url(), **{**JOB, "KERAS_BACKEND": "tensorflow"}, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "multi-worker training needs KERAS_BACKEND=jax" in result.stderr and "Traceback" not in result.stderr
    assert "epoch" not in result.stdout and not (tmp_path / "mnist").exists()


def test_an_unknown_backend_is_refused_before_training(tmp_path, mnist_http):
    result = run_trainer(tmp_path, mnist_http.url(), KERAS_BACKEND="theano")
    assert result.returncode == 2 and "KERAS_BACKEND='theano'" in result.stderr
    assert not (tmp_path / "mnist").exists()
