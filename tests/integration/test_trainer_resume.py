"""Resumable training (trainer/resume.py): a killed run resumes from its last finished epoch, and
only a backup made with the same settings is resumed."""

from __future__ import annotations

from conftest import QUICK_MIN_ACCURACY, SHARED_MNIST
from helpers import tiny_mnist
from trainer_process import TrainerProcess, backups, saved_epochs

from shared.model_store import ModelStore

SLICE = {"TRAIN_SUBSET": "1000", "EPOCHS": "4", "MIN_ACCURACY": str(QUICK_MIN_ACCURACY)}


def test_a_trainer_killed_after_epoch_2_of_4_resumes_at_epoch_3_and_publishes_once(tmp_path, mnist_http):
    first = TrainerProcess(tmp_path, mnist_http.url(), **SLICE)
    first.wait_for_line(r"^epoch 2/4:", timeout=300)
    # Keras writes the backup just after the line
    first.wait_for(lambda: saved_epochs(tmp_path) >= 2, "a backup of two epochs", timeout=60)
    first.kill()
    assert ModelStore(tmp_path / "mnist").versions() == []

    rerun = TrainerProcess(tmp_path, mnist_http.url(), **SLICE)
    assert rerun.finish() == 0, rerun.output()
    output = rerun.output()
    resumed_at = int(output.split("resuming from epoch ")[1].split()[0])
    assert resumed_at in (3, 4), output  # 3, unless the kill landed after epoch 3's backup too
    assert rerun.epochs_run() == list(range(resumed_at, 5)), output
    store = ModelStore(tmp_path / "mnist")
    assert store.versions() == [1]
    metadata = store.metadata(1)
    assert [entry["epoch"] for entry in metadata["history"]] == [1, 2, 3, 4]  # the killed run's epochs too
    assert metadata["test_accuracy"] >= QUICK_MIN_ACCURACY
    assert backups(tmp_path) == []


def test_only_a_backup_with_the_same_settings_is_resumed(tmp_path, capsys):
    from trainer.resume import Backup
    from trainer.train import train

    data = tiny_mnist(SHARED_MNIST, 256)
    settings = {"batch_size": 128, "seed": 1, "train_subset": 0, "precision": "float32"}

    def run(epochs: int, **changed):
        backup = Backup(tmp_path, {**settings, **changed})
        train(data, epochs, changed.get("batch_size", 128), seed=1, backup=backup)
        return backup, capsys.readouterr().out

    old, _ = run(2)  # a finished fit keeps its backup until the trainer publishes (or the gate refuses)
    assert backups(tmp_path) == [old.folder] and old.saved_epochs() == 2

    more, output = run(3)  # EPOCHS is not in the fingerprint: a longer run continues
    assert more.folder == old.folder
    assert "resuming from epoch 3 of 3" in output and "epoch 1/3" not in output and "epoch 3/3" in output

    other, output = run(1, batch_size=64)
    assert other.folder != old.folder
    assert f"not resuming the backup in {old.folder} (batch_size 128 -> 64); starting fresh" in output
    assert "resuming" not in output.replace("not resuming", "") and "epoch 1/1" in output
    assert backups(tmp_path) == [other.folder]

    same, output = run(1, batch_size=64)  # a run killed after its last epoch, before publishing
    assert "has finished all 1 epochs; evaluating and publishing it" in output and "epoch 1/1" not in output
    same.clear()
    assert backups(tmp_path) == []


def test_a_backup_that_trained_more_epochs_than_asked_is_not_resumed(tmp_path, capsys):
    from trainer.resume import Backup
    from trainer.train import train

    data = tiny_mnist(SHARED_MNIST, 256)
    backup = Backup(tmp_path, {"batch_size": 128})
    train(data, 2, 128, seed=1, backup=backup)
    capsys.readouterr()
    train(data, 1, 128, seed=1, backup=Backup(tmp_path, {"batch_size": 128}))
    output = capsys.readouterr().out
    assert "it has trained 2 epochs, more than EPOCHS=1; starting fresh" in output and "epoch 1/1" in output


def test_a_backup_cut_off_while_being_written_falls_back_or_starts_fresh(tmp_path, capsys):
    from trainer.resume import Backup
    from trainer.train import train

    data = tiny_mnist(SHARED_MNIST, 256)
    backup = Backup(tmp_path, {"batch_size": 128})
    train(data, 2, 128, seed=1, backup=backup)
    weights = backup.folder / "latest.weights.h5"
    weights.write_bytes(weights.read_bytes()[:1000])  # a kill in the middle of Keras' save
    train(data, 3, 128, seed=1, backup=Backup(tmp_path, {"batch_size": 128}))
    # Keras falls back to the previous epoch's copy (double_checkpoint)
    assert "resuming from epoch 2 of 3" in capsys.readouterr().out

    weights.write_bytes(weights.read_bytes()[:1000])
    (backup.folder / "latest.weights.h5.bkp").unlink()  # a kill during the very first save: no copy yet
    train(data, 1, 128, seed=1, backup=Backup(tmp_path, {"batch_size": 128}))
    output = capsys.readouterr().out
    assert "cut off while being written" in output and "epoch 1/1" in output and "resuming from" not in output
