"""The documentation build's check for raw Markdown tables (docs/build_checks.py).

``make docs`` runs it after writing the pages: a table that was not parsed (for example
``display(Markdown(...))`` rendered as CommonMark) appears as "|---|" text and fails the build.
"""

import importlib.util
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _checks():
    spec = importlib.util.spec_from_file_location("build_checks", DOCS / "build_checks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_raw_table_text_in_a_paragraph_is_found():
    html = "<p>| method | loss |\n|---|---:|\n| sgd | 0.1 |</p>"
    assert _checks().raw_markdown_tables(html) == ["|---|---:|"]


def test_rendered_tables_and_code_blocks_are_not_flagged():
    html = (
        "<table><thead><tr><th>a</th><th>b</th></tr></thead><tbody><tr><td>1</td><td>2</td></tr></tbody></table>"
        '<div class="highlight"><pre>| a | b |\n|---|---|\n</pre></div>'
        "<p>p(y | f) and a rule ---- in prose</p>"
    )
    assert _checks().raw_markdown_tables(html) == []


def test_the_rule_split_by_inline_markup_is_still_found():
    assert _checks().raw_markdown_tables("<p>|<em>---</em>|:---:|</p>") == ["|---|:---:|"]


def test_the_build_fails_on_a_page_with_a_raw_table(tmp_path):
    (tmp_path / "good.html").write_text("<table><tr><td>1</td></tr></table>", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "bad.html").write_text("<p>| a |\n|---|\n| 1 |</p>", encoding="utf-8")
    app = SimpleNamespace(outdir=str(tmp_path), builder=SimpleNamespace(name="html"))
    with pytest.raises(RuntimeError, match=r"sub/bad\.html"):
        _checks().check_raw_tables(app, None)
    (tmp_path / "sub" / "bad.html").unlink()
    _checks().check_raw_tables(app, None)  # the good page alone passes


def test_a_table_rendered_as_commonmark_is_caught_and_as_myst_is_not():
    """What a notebook's display(Markdown(...)) becomes without and with nb_render_markdown_format = "myst"."""
    markdown_it = pytest.importorskip("markdown_it")
    table = "| a | b |\n|---|---:|\n| 1 | 2 |"
    assert _checks().raw_markdown_tables(markdown_it.MarkdownIt("commonmark").render(table)) == ["|---|---:|"]
    assert _checks().raw_markdown_tables(markdown_it.MarkdownIt("commonmark").enable("table").render(table)) == []


def test_the_docs_render_notebook_markdown_as_myst():
    assert re.search(r'^nb_render_markdown_format\s*=\s*"myst"', (DOCS / "conf.py").read_text(), re.MULTILINE)
