"""Two trainer runs in one home: the second refuses to start, saying why, and the first's backup survives.

Before (issue 23, item 4): the second run's prepare() deleted the first run's backup folder as "another
fingerprint" while the first was still training into it (or, with the same settings, both wrote one folder).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECOND_RUN = """
import sys
from pathlib import Path
from trainer import resume
try:
    resume.Backup(Path(sys.argv[1]), {"batch_size": 64}).prepare(1)
except resume.BackupInUse as error:
    print(error)
    sys.exit(3)
"""


def test_a_second_trainer_in_the_same_home_refuses_and_keeps_the_first_backup(tmp_path: Path):
    from trainer.resume import Backup

    first = Backup(tmp_path, {"batch_size": 128})
    first.prepare(2)
    (first.folder / "latest.weights.h5").write_bytes(b"epoch 1 of the first run")
    second = subprocess.run([sys.executable, "-c", SECOND_RUN, str(tmp_path)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert second.returncode == 3, second.stdout + second.stderr
    assert "another trainer" in second.stdout and str(tmp_path) in second.stdout
    assert (first.folder / "latest.weights.h5").read_bytes() == b"epoch 1 of the first run"
    assert json.loads((first.folder / "run.json").read_text())["batch_size"] == 128

    first.clear()  # the first run is over: a later run may start
    third = subprocess.run([sys.executable, "-c", SECOND_RUN, str(tmp_path)], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
    assert third.returncode == 0, third.stdout + third.stderr
