"""The README is the front door: its configuration table and commands must match the code."""

from __future__ import annotations

import re

from conftest import ROOT

from shared.config import config_table

README = (ROOT / "README.md").read_text()


def test_configuration_table_matches_the_code() -> None:
    # Regenerate with: .venv/bin/python -c "from shared.config import config_table; print(config_table())"
    assert config_table() in README


def test_readme_gives_the_two_commands() -> None:
    assert "docker compose up" in README
    assert "make test" in README


def test_every_make_target_in_the_readme_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-zA-Z_-]+):", makefile, flags=re.MULTILINE))
    mentioned = set(re.findall(r"`make ([a-z-]+)", README))
    assert mentioned, "the README names no make targets"
    assert mentioned <= targets, f"README mentions missing targets: {sorted(mentioned - targets)}"
