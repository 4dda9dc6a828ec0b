"""Every figure the README and docs quote from a benchmark equals the one in its committed results file.

A figure is quoted as `<number><!-- figure: NAME.KEY -->` (the marker is invisible in rendered Markdown);
NAME.KEY names benchmarks/results/NAME.json and its `figures[KEY]`. The quoted number may be rounded: it must
equal the recorded value rounded to as many decimals as the quote shows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
MARKER = re.compile(r"(-?[0-9][0-9,]*(?:\.[0-9]+)?)\s*(%|x|×| ?dB| ?s| ?ms| ?MB| ?GB)?\*{0,2}"
                    r"<!-- figure: ([A-Za-z0-9_-]+)\.([A-Za-z0-9_.-]+) -->")
ANY_MARKER = re.compile(r"<!-- figure: [^>]*-->")


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def quotes() -> list[tuple[str, str, str, str]]:
    found = []
    for doc in documents():
        for match in MARKER.finditer(doc.read_text()):
            found.append((doc.relative_to(ROOT).as_posix(), match.group(1), match.group(3), match.group(4)))
    return found


def agrees(quoted: str, recorded: object) -> bool:
    if isinstance(recorded, bool) or not isinstance(recorded, (int, float)):
        return quoted == str(recorded)
    text = quoted.replace(",", "")
    decimals = len(text.split(".")[1]) if "." in text else 0
    return round(float(recorded), decimals) == float(text)


def test_every_marker_is_well_formed():
    for doc in documents():
        text = doc.read_text()
        assert len(ANY_MARKER.findall(text)) == len(MARKER.findall(text)), (
            f"{doc.name}: a `<!-- figure: ... -->` marker that does not follow a number or names no NAME.KEY")


@pytest.mark.parametrize("doc,quoted,name,key", quotes() or [pytest.param("", "", "", "", marks=pytest.mark.skip(
    reason="no figure is quoted yet"))])
def test_quoted_figure_equals_its_results_file(doc, quoted, name, key):
    path = RESULTS / f"{name}.json"
    assert path.is_file(), f"{doc} quotes {name}.{key}, but {path.relative_to(ROOT)} does not exist"
    record = json.loads(path.read_text())
    for field in ("command", "date", "commit", "machine", "figures"):
        assert field in record, f"{path.name} lacks {field!r}"
    assert key in record["figures"], f"{doc} quotes {name}.{key}, which {path.name} does not record"
    assert agrees(quoted, record["figures"][key]), (
        f"{doc} says {quoted} for {name}.{key}; {path.name} records {record['figures'][key]}")


def test_agreement_rounds_as_the_quote_does():
    assert agrees("2.16", 2.1634) and agrees("138", 137.6) and agrees("1,738", 1738)
    assert not agrees("2.17", 2.1634) and not agrees("46", 45)
