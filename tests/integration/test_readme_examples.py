"""Every shell example of the README's API quick reference runs as written against a live server.

The examples are read from README.md (the ```bash blocks under "## API quick reference"), the address
http://127.0.0.1:8000 becomes the test server's, and they run in order in one bash, as a reader would
paste them: each must exit 0 and give a sane answer (JSON without an error, the digit's own label).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
README_ADDRESS = "http://127.0.0.1:8000"
MARK = "@@README-EXAMPLE %d@@"  # printf format: each command's output ends with its number


def quick_reference_commands(readme: str) -> list[str]:
    section = readme.split("\n## API quick reference", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def run_examples(commands: list[str], url: str, cwd: Path) -> list[str]:
    """Runs the commands in one bash (set -euo pipefail); returns each command's output."""
    script = ["set -euo pipefail"]
    for number, command in enumerate(commands):
        script += [command.replace(README_ADDRESS, url), f"printf '\\n{MARK}\\n' {number}"]
    result = subprocess.run(["bash", "-c", "\n".join(script)], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    outputs = re.split(r"\n@@README-EXAMPLE \d+@@\n", result.stdout)
    assert len(outputs) == len(commands) + 1, result.stdout[-2000:]
    return outputs[:-1]


def predicted_labels(answer: dict) -> list[int]:
    """The labels in any of the three wire formats' prediction answers."""
    if "predictions" in answer:  # native: [{"label": ...}]; TF Serving: [[10 probabilities]]
        return [item["label"] if isinstance(item, dict) else int(np.argmax(item)) for item in answer["predictions"]]
    return [int(label) for output in answer["outputs"] if output["name"] == "label" for label in output["data"]]


def test_every_quick_reference_example_runs(trained_home, start_module_server, tmp_path):
    commands = quick_reference_commands((ROOT / "README.md").read_text())
    assert any("/predict" in command for command in commands) and any("/infer" in command for command in commands)
    server = start_module_server(trained_home)

    outputs = run_examples(commands, server.url, tmp_path)

    digit = json.loads((tmp_path / "digit.json").read_text())
    assert (tmp_path / "digit.png").read_bytes().startswith(b"\x89PNG")
    predictions = 0
    for command, output in zip(commands, outputs, strict=True):
        written = re.search(r"-o (\S+)", command)
        if written:
            assert (tmp_path / written.group(1)).stat().st_size > 0, command
        if not command.startswith("curl") or written:
            continue
        assert output.strip(), f"no answer: {command}"
        if command.endswith("/metrics"):
            assert "# TYPE mnist_" in output, output[:300]
            continue
        answer = json.loads(output)
        assert "error" not in answer, (command, answer)
        if "/predict" in command or ":predict" in command or "/infer" in command:
            assert predicted_labels(answer) == [digit["label"]], (command, answer)
            predictions += 1
    assert predictions == sum("predict" in command or "/infer" in command for command in commands) >= 5
