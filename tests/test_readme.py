"""The README's results section is the one the report stage generated from results/."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start", "<!-- results:end -->"


def between_markers(text: str) -> str:
    _, sep, rest = text.partition(START)
    assert sep, "README.md has no results markers"
    block = rest.split("-->", 1)[1]
    body, sep, _ = block.partition(END)
    assert sep, "README.md's results section is not closed"
    return body.strip()


def test_readme_results_equal_the_generated_file():
    generated = (ROOT / "report" / "generated" / "results.md").read_text().strip()
    assert between_markers((ROOT / "README.md").read_text()) == generated
