"""The README shows no figure that bench/results.md does not hold, and its one table is generated.

Figures drift when typed by hand (the README once disagreed with itself on image sizes and speed-ups), so the
only figures allowed in the README's prose are ones found in bench/results.md, and the headline table must be
exactly what `python -m bench.headline` renders from bench/results.json.
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.headline import headline_table, load_results, readme_block

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
RESULTS_MD = (ROOT / "bench" / "results.md").read_text()

# A measured figure: a number with a decimal part, or a number followed by a unit of time, rate, size or ratio.
FIGURE = re.compile(
    r"(?<![\w.])(\d[\d,]*\.\d+(?:\s?(?:ms|s|min|MiB|MB|GB|GiB|KB|x|%))?"
    r"|\d[\d,]*\s?(?:ms|us|µs|s|min|req/s|images/s|MiB|MB|GB|GiB|KB|x|%)(?![\w/]))"
)


def prose(text: str) -> str:
    """The README without code blocks, inline code, links' targets and table rows of the config table."""
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    text = re.sub(r"`[^`]*`", "", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return re.sub(r"https?://\S+", "", text)


def figures_missing_from_results(text: str, results_md: str) -> list[str]:
    """Figures of `text`'s prose whose number does not appear in bench/results.md."""
    missing = []
    for match in FIGURE.finditer(prose(text)):
        figure = match.group(1)
        number = re.match(r"[\d,.]+", figure).group(0).rstrip(".,")
        # A decimal must appear as a whole number; a whole number only with its unit (a bare "2" is everywhere).
        wanted = [number, number.replace(",", "")] if "." in number else [figure, figure.replace(",", "")]
        if not any(re.search(rf"(?<![\d.]){re.escape(form)}(?![\d])", results_md) for form in wanted):
            missing.append(figure)
    return missing


def test_every_readme_figure_is_in_bench_results() -> None:
    assert figures_missing_from_results(README, RESULTS_MD) == []


def test_a_typed_figure_is_caught() -> None:
    # The check above must be able to fail: figures the old README carried that no bench run wrote, beside
    # ones a (made-up, fixed) results text holds; the live results.md could hold any number by chance.
    results = "| training | 2.41 s/epoch | 1,234 images/s | p99 15.3 ms |"
    text = ("The trainer image is 1.88 GB and the server's 426 MB; the suite ran in 11.2 min, 379 tests in 15 s;"
            " an epoch takes 2.41 s, 1,234 images/s at p99 15.3 ms.")
    assert figures_missing_from_results(text, results) == ["1.88 GB", "426 MB", "11.2 min", "15 s"]


def test_the_headline_table_is_generated_from_results_json() -> None:
    # Regenerate with: .venv/bin/python -m bench.headline
    assert readme_block(README) == headline_table(load_results())


def test_every_headline_figure_is_in_results_md() -> None:
    block = readme_block(README)
    numbers = re.findall(r"(?<![\w.])\d+\.\d+", block.split("\n", 1)[1])
    assert len(numbers) >= 10, block
    assert [number for number in numbers if number not in RESULTS_MD] == []


def test_every_docs_link_exists() -> None:
    links = re.findall(r"\]\(((?:docs|bench)/[^)#]+)", README)
    assert links, "the README links to no docs page"
    assert [link for link in links if not (ROOT / link).exists()] == []
