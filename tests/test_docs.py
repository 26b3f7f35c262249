"""The documentation's own checks: docs/benchmark.md shows what bench/report.py renders from the
bench/*.json files now, every relative link and #anchor of README.md and docs/*.md resolves, and
the README stays a short page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench import report

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 300
pytestmark = pytest.mark.fast

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: links reduced to their text, lower case, punctuation other
    than - and _ dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings (a repeated heading gets -1, -2, … as on GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        if m := re.match(r"#{1,6}\s+(.+?)\s*#*$", line):
            s = slug(m.group(1))
            n = seen[s] = seen.get(s, -1) + 1
            out.add(s if n == 0 else f"{s}-{n}")
    return out


def links(page: Path) -> list[str]:
    """The relative link targets of a page, outside code blocks and code spans."""
    text = re.sub(r"`[^`\n]*`", "", FENCE.sub("", page.read_text()))
    return [t for _, t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def broken(page: Path) -> list[str]:
    out = []
    for target in links(page):
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            out.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            out.append(f"{target}: no heading with that anchor")
    return out


def test_benchmark_page_shows_the_json_files():
    shown = report.block_in(report.DOC.read_text())
    assert shown, f"{report.DOC}: no block between {report.BEGIN!r} and {report.END!r}"
    assert shown == report.render(), (
        "docs/benchmark.md's figures differ from bench/*.json: run `python -m bench.report --write`"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    assert broken(page) == []


def test_the_checks_catch_a_broken_link_and_anchor(tmp_path):
    (tmp_path / "a.md").write_text("# A page\n\n## Its part\n\nsee [b](b.md) and [c](#its-part)\n")
    good = tmp_path / "a.md"
    assert broken(good) == ["b.md: no such file"]
    (tmp_path / "b.md").write_text("[back](a.md#its-part), [wrong](a.md#no-part), `[x](y.md)`\n")
    assert broken(tmp_path / "b.md") == ["a.md#no-part: no heading with that anchor"]


def test_readme_is_short():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES})"
