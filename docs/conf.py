"""Sphinx configuration for the kfac_ref documentation site.

Built by ``make docs`` into docs/_build/html, offline: no intersphinx, no
remote images, every notebook executed at build time by myst-nb.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS))

from build_checks import check_raw_tables  # noqa: E402 - needs DOCS on sys.path

project = "kfac_ref"
author = "the kfac_ref developers"
copyright = "the kfac_ref developers"  # noqa: A001 - Sphinx's name
release = version = "0.1.0"

extensions = [
    "myst_nb",  # Markdown (myst-parser) and notebooks, executed at build time
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # numpy-style docstring sections
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax 3 copied into _static: the pages render math without a network
]

# ---- sources --------------------------------------------------------------------------
# The notebooks live in notebooks/ (stored without outputs); Sphinx only reads files
# under docs/, so each build copies them into docs/notebooks/ (ignored by git).
NB_SRC, NB_DST = ROOT / "notebooks", DOCS / "notebooks"
NB_DST.mkdir(exist_ok=True)
for stale in NB_DST.glob("*.ipynb"):
    if not (NB_SRC / stale.name).exists():
        stale.unlink()
for nb in sorted(NB_SRC.glob("*.ipynb")):
    dst = NB_DST / nb.name
    if not dst.exists() or dst.read_bytes() != nb.read_bytes():
        shutil.copyfile(nb, dst)

# Sliders (kfac_ref.experiments.widgets) need a live front end; the pages show the static figures.
os.environ["KFAC_REF_WIDGETS"] = "0"  # inherited by the kernels that execute the notebooks

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = [
    "_build",
    "**/.ipynb_checkpoints",
]

# ---- Markdown ------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3  # "math.md#8-cases-where…" style anchors for the headings
suppress_warnings = [
    # The same notebook cell may produce a figure and a text repr; myst-nb picks one.
    "mystnb.unknown_mime_type",
]

# ---- notebooks -----------------------------------------------------------------------
# The kernels inherit this process's environment.  Matplotlib's inline backend makes every
# figure (plt.show() included) a PNG output of its cell; with MPLBACKEND=Agg, as the tests use,
# plt.show() would draw nothing and the pages would have no figures.
os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
nb_execution_mode = "force"  # stored without outputs: execute each one on every build
nb_execution_timeout = 120  # seconds per cell; the test suite holds each notebook under 60 s
nb_execution_raise_on_error = True  # a failing cell fails the build
nb_execution_show_tb = True
nb_merge_streams = True
# display(Markdown(...)) in a notebook: parse it as MyST, so its tables render as tables
# (the default, CommonMark, leaves "| a | b |" and "|---|" as raw text on the page)
nb_render_markdown_format = "myst"

# ---- API reference -------------------------------------------------------------------
autosummary_generate = True
# ignore-module-all: a package's __init__ re-exports names from its modules (kfac_ref.fisher.dense
# is both a module and the function it defines); each object is documented once, where it is defined.
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True, "ignore-module-all": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
add_module_names = False

# ---- HTML ----------------------------------------------------------------------------
html_theme = "furo"
html_title = "kfac_ref"
html_static_path = ["_static"]
html_css_files = ["kfac_ref.css"]  # wide equations scroll instead of being cut off


# ---- citations in docstrings become links --------------------------------------------
# "docs/math.md §8.8" (or the old "MATH.md §8.8") in a docstring links to the heading labelled
# (math-8-8)= in docs/math.md; tests/test_docs_citations.py guarantees that the heading exists.
_CITATION = re.compile(r"(docs/math\.md|MATH\.md|docs/style\.md|STYLE\.md) §(\d+(?:\.\d+)*)")
_PAGES = {"docs/math.md": "math", "MATH.md": "math", "docs/style.md": "style", "STYLE.md": "style"}
_LABELS = {
    page: set(
        re.findall(r"^\((" + page + r"-[\d-]+)\)=$", (DOCS / f"{page}.md").read_text(encoding="utf-8"), re.MULTILINE)
    )
    for page in ("math", "style")
}


def _link_citations(app, what, name, obj, options, lines):
    def link(m):
        page = _PAGES[m.group(1)]
        label = f"{page}-{m.group(2).replace('.', '-')}"
        if label not in _LABELS[page]:
            return m.group(0)
        return f":ref:`docs/{page}.md §{m.group(2)} <{label}>`"

    in_literal = False
    for i, line in enumerate(lines):
        if in_literal and line.strip() and not line.startswith((" ", "\t")):
            in_literal = False
        if not in_literal:
            lines[i] = _CITATION.sub(link, line)
        if line.rstrip().endswith("::"):
            in_literal = True  # leave literal blocks as they are


# ---- a check after the build ----------------------------------------------------------
def _check_notebook_figures(app, exception):
    """Fail the build if a notebook that draws figures shows none on its page."""
    if exception is not None or app.builder.name != "html":
        return
    missing = []
    for nb in sorted(NB_SRC.glob("*.ipynb")):
        draws = any(key in nb.read_text(encoding="utf-8") for key in ("plt.", "display("))
        page = Path(app.outdir) / "notebooks" / f"{nb.stem}.html"
        if draws and page.exists() and "<img" not in page.read_text(encoding="utf-8"):
            missing.append(nb.name)
    if missing:
        raise RuntimeError(f"notebook pages without figures (is the inline backend in use?): {missing}")


def setup(app):
    app.connect("autodoc-process-docstring", _link_citations)
    app.connect("build-finished", _check_notebook_figures)
    app.connect("build-finished", check_raw_tables)
