"""Checks run after ``make docs`` has written the HTML pages (connected in docs/conf.py).

Kept apart from conf.py, which copies notebooks and sets environment variables when
imported, so that tests/test_docs_build_check.py can import these without side effects.
"""

from __future__ import annotations

import re
from pathlib import Path

# A Markdown table that was not parsed shows up in the HTML as text such as "|---|---|".
# Code blocks (<pre>) may hold such text on purpose; anything else fails the build.
_RAW_TABLE_RULE = re.compile(r"\|\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|")
_VERBATIM = re.compile(r"<(pre|script|style|textarea)\b.*?</\1>", re.DOTALL | re.IGNORECASE)


def raw_markdown_tables(html: str) -> list[str]:
    """The lines of a rendered page that look like an unparsed Markdown table rule, outside code blocks."""
    text = _VERBATIM.sub("", html)
    text = re.sub(r"<[^>]+>", "", text)  # tags out: a rule split by markup still matches
    return [line.strip() for line in text.splitlines() if _RAW_TABLE_RULE.search(line)]


def check_raw_tables(app, exception):
    """Fail the build if any page shows a Markdown table as raw text."""
    if exception is not None or app.builder.name != "html":
        return
    bad = {}
    for page in sorted(Path(app.outdir).rglob("*.html")):
        found = raw_markdown_tables(page.read_text(encoding="utf-8"))
        if found:
            bad[str(page.relative_to(app.outdir))] = found[0][:80]
    if bad:
        raise RuntimeError(f"pages with a raw (unrendered) Markdown table: {bad}")
