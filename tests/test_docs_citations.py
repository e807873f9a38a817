"""Every citation of the math reference resolves to a heading that exists.

Docstrings, comments, tests, notebooks and READMEs cite ``docs/math.md §N`` (and
``docs/style.md §N``).  This test collects every such citation in the tree —
ranges like "§4–6" and lists like "§3, §10" included — and fails on one whose
section has no heading in the cited page.  During the move from the team's
``MATH.md`` / ``STYLE.md`` (not in the repository) to ``docs/``, citations of the old
names are checked against the new pages too: their numbering is the same.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = {"math": ROOT / "docs" / "math.md", "style": ROOT / "docs" / "style.md"}
#: the cited name → the page that resolves it (old names map to the new pages)
NAMES = {"docs/math.md": "math", "MATH.md": "math", "docs/style.md": "style", "STYLE.md": "style"}

SEARCHED = ["kfac_ref", "tests", "benchmarks", "notebooks", "docs"]
SKIPPED_DIRS = {"_build", "generated", "__pycache__", ".ipynb_checkpoints"}
SUFFIXES = {".py", ".md", ".ipynb", ".rst", ".txt"}

_NUM = r"\d+(?:\.\d+)*"
_REF = rf"§\s*{_NUM}(?:\s*[–-]\s*{_NUM})?"
CITATION = re.compile(rf"(docs/math\.md|MATH\.md|docs/style\.md|STYLE\.md)\s*((?:{_REF})(?:\s*(?:,|and)\s*{_REF})*)")
REF = re.compile(rf"§\s*({_NUM})(?:\s*[–-]\s*({_NUM}))?")
HEADING = re.compile(rf"^#{{1,6}}\s+({_NUM})\.?\s", re.MULTILINE)


def headings(text: str) -> set[str]:
    """Section numbers of a Markdown page: '## 8. …' → '8', '### 8.4. …' → '8.4'."""
    return set(HEADING.findall(text))


def cited_sections(refs: str) -> list[str]:
    """'§4–6' → ['4', '5', '6'];  '§3, §8.6' → ['3', '8.6'];  a range of subsections gives its ends."""
    out = []
    for start, stop in REF.findall(refs):
        if stop and start.isdigit() and stop.isdigit():
            out += [str(k) for k in range(int(start), int(stop) + 1)]
        else:
            out += [start] + ([stop] if stop else [])
    return out


def citations(text: str) -> list[tuple[int, str, str]]:
    """(line number, page, section) for every citation in ``text``."""
    out = []
    for m in CITATION.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        out += [(line, NAMES[m.group(1)], sec) for sec in cited_sections(m.group(2))]
    return out


def unresolved(text: str, sections: dict[str, set[str]]) -> list[str]:
    """The citations in ``text`` whose section is not a heading of the cited page."""
    return [f"line {line}: {page} §{sec}" for line, page, sec in citations(text) if sec not in sections[page]]


def searched_files() -> list[Path]:
    files = list(ROOT.glob("*.md"))
    for top in SEARCHED:
        for p in (ROOT / top).rglob("*"):
            rel = p.relative_to(ROOT)
            if (
                p.is_file()
                and p.suffix in SUFFIXES
                and not SKIPPED_DIRS & set(rel.parts)
                and rel.parts[:2] != ("docs", "notebooks")
            ):  # the build's copies of notebooks/
                files.append(p)
    return sorted(files)


@pytest.fixture(scope="module")
def sections():
    return {page: headings(path.read_text(encoding="utf-8")) for page, path in PAGES.items()}


def test_the_pages_have_the_numbered_sections_that_code_cites(sections):
    assert {str(k) for k in range(1, 11)} <= sections["math"]
    assert {f"8.{k}" for k in range(1, 11)} <= sections["math"]
    assert {str(k) for k in range(1, 13)} <= sections["style"]


def test_the_tree_cites_the_math_reference(sections):
    found = [c for p in searched_files() for c in citations(p.read_text(encoding="utf-8"))]
    assert len(found) > 50, "the citation pattern no longer finds the tree's citations"


@pytest.mark.parametrize("path", searched_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_citation_resolves_to_a_heading(path, sections):
    bad = unresolved(path.read_text(encoding="utf-8"), sections)
    assert not bad, f"{path.relative_to(ROOT)} cites sections that docs/ does not have: {bad}"


def test_math_page_internal_section_references_resolve(sections):
    """'(§6.1)' inside docs/math.md points at its own headings; '[MG15 §6.3]' is the paper's."""
    text = re.sub(r"\[[^\]]*\]", "", PAGES["math"].read_text(encoding="utf-8"))  # drop [paper §x] spans
    refs = [sec for m in re.finditer(rf"{_REF}(?:\s*,\s*{_REF})*", text) for sec in cited_sections(m.group(0))]
    assert refs
    assert sorted(set(refs) - sections["math"]) == []


# --- the checker itself can fail -------------------------------------------------------
# (The made-up citations are assembled from pieces so that this file does not cite them.)
FAKE_MATH, FAKE_STYLE, OLD = "docs/math.md", "docs/style.md", "MATH.md"


def test_a_made_up_citation_is_reported(sections):
    text = f"ok ({FAKE_MATH} §8.4)\nbroken ({FAKE_MATH} " + "§42)\n"
    assert unresolved(text, sections) == ["line 2: math §42"]


def test_made_up_subsections_ranges_and_old_names_are_reported(sections):
    assert unresolved(f"{FAKE_MATH} " + "§8.11", sections) == ["line 1: math §8.11"]
    assert unresolved(f"{FAKE_MATH} " + "§12–15", sections) == ["line 1: math §14", "line 1: math §15"]
    assert unresolved(f"{FAKE_MATH} " + "§3, §99", sections) == ["line 1: math §99"]
    assert unresolved(f"{OLD} " + "§0", sections) == ["line 1: math §0"]
    assert unresolved(f"{FAKE_STYLE} " + "§13", sections) == ["line 1: style §13"]


def test_a_made_up_citation_in_a_file_fails_the_file_check(tmp_path, sections):
    bad = tmp_path / "module.py"
    bad.write_text(f'"""The formula (MATH.md §6) and one that is not there ({FAKE_MATH} ' + '§6.99)."""\n')
    assert unresolved(bad.read_text(), sections) == ["line 1: math §6.99"]


def test_the_parser_reads_the_citation_forms_the_tree_uses():
    assert cited_sections("§4–6") == ["4", "5", "6"]
    assert cited_sections("§3, §8.6") == ["3", "8.6"]
    assert [c[2] for c in citations(f"see {FAKE_MATH} §3–8 and {OLD} §8.10.")] == ["3", "4", "5", "6", "7", "8", "8.10"]
    assert headings("# Title\n## 8. Oracles\n### 8.4. Least squares\n#### not numbered\n") == {"8", "8.4"}
