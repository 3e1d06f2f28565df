r"""Sphinx configuration for the sktopk documentation.

Build (from the repository root, in the venv of the README with the ``docs``
extra installed, ``.venv/bin/pip install -e ".[docs]"``)::

    # what CI runs: warnings are errors; the fast examples are executed (about
    # two minutes on 2 CPU cores), the long ones shown as code and text
    .venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html

    # execute every example (several more minutes; needs the "examples" extra)
    SKTOPK_DOCS_RUN_GALLERY=1 \
        .venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html

    # execute none (a quick check of the text)
    SKTOPK_DOCS_RUN_GALLERY=0 .venv/bin/python -m sphinx -b html docs docs/_build/html

The API pages under ``docs/generated/`` are written by this file at each build
from the ``__all__`` of the public modules (see ``API_MODULES``), so a public
name added to or removed from a module shows up or disappears without editing
``api.rst``. No network access is needed (intersphinx is off).
"""

import importlib
import importlib.util
import inspect
import os
import re
import shutil
import sys
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import sktopk  # noqa: E402

# -- Project -----------------------------------------------------------------
project = "sktopk"
author = "the sktopk developers"
copyright = "the sktopk developers, BSD-3-Clause"
version = release = sktopk.__version__

# -- General -----------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]
templates_path = []
exclude_patterns = ["_build", "README.md", "Thumbs.db", ".DS_Store",
                    "auto_examples/*.ipynb", "auto_examples/*.py", "auto_examples/*.zip",
                    "auto_examples/*.md5", "auto_examples/*.pickle", "auto_examples/*.json"]
root_doc = "index"
nitpicky = False
default_role = "literal"
add_module_names = False
pygments_style = "sphinx"

autosummary_generate = True
autodoc_typehints = "none"
autodoc_member_order = "bysource"
# A method without a docstring stays undocumented instead of showing its base
# class's text (torch.nn.Module.forward's, for every loss module).
autodoc_inherit_docstrings = False

numpydoc_show_class_members = False
numpydoc_show_inherited_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# numpydoc validation of every documented object: a failed check is a warning, so
# an error under -W. The same set as tests/test_docstrings.py (which says why each
# check is ignored, and also requires Examples outside methods, which this hook
# cannot tell apart).
numpydoc_validation_checks = {"all", "GL01", "GL02", "ES01", "SA01", "SS05", "RT02", "EX01"}
# Objects whose docstrings still fail, listed in tests/test_docstrings.py's PENDING.
_NUMPYDOC_PENDING = set()
numpydoc_validation_exclude = {rf"^{re.escape(name)}$" for name in _NUMPYDOC_PENDING}
numpydoc_attributes_as_param_list = True

# -- Gallery -----------------------------------------------------------------
# The fast examples (about a minute or less each on 2 CPU cores) are executed at
# every build, so the gallery shows their figures and output; the long ones
# (minutes each) are rendered as code and text unless SKTOPK_DOCS_RUN_GALLERY=1.
# SKTOPK_DOCS_RUN_GALLERY=0 executes none.
FAST_EXAMPLES = ("plot_smoothed_topk.py", "plot_custom_torch_model.py", "plot_set_valued.py")
_run_gallery = os.environ.get("SKTOPK_DOCS_RUN_GALLERY", "fast").lower()
plot_gallery = str(_run_gallery not in ("0", "false"))
if _run_gallery in ("1", "true"):
    _executed = r"plot_"
else:
    _executed = r"[\\/](" + "|".join(re.escape(name) for name in FAST_EXAMPLES) + r")$"

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": _executed,
    # Helper modules (examples/_common.py) are not examples.
    "ignore_pattern": r"__init__\.py|(^|[\\/])_[^\\/]*\.py$",
    "within_subsection_order": "FileNameSortKey",
    "remove_config_comments": True,
    "download_all_examples": False,
    "show_signature": False,
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    # Reproducible pages: do not write the per-build timing table.
    "write_computation_times": False,
}

# -- HTML --------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"sktopk {release}"
html_static_path = []
html_show_sourcelink = False
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_align": "left",
    "header_links_before_dropdown": 7,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_sidebars = {"index": [], "getting_started": [], "references": [], "benchmarks": []}
# The examples set their own thread counts; keep BLAS to one thread as well.
os.environ.setdefault("OMP_NUM_THREADS", "1")


# -- API pages ---------------------------------------------------------------
#: Public modules documented in api.rst, in the order of the page.
API_MODULES = ("sktopk", "sktopk.losses", "sktopk.functional", "sktopk.metrics",
               "sktopk.datasets")
#: Public modules that may not exist yet in a checkout: module -> section title.
#: Each gets a section at the end of api.rst, with its module docstring and a
#: table of its ``__all__``, once it is importable.
OPTIONAL_API_MODULES = {"sktopk.parallel": "Dask clusters: ``sktopk.parallel``",
                        "sktopk.backends": "Operator backends: ``sktopk.backends``"}
GENERATED = DOCS / "generated"

# Methods that sklearn adds to every estimator for metadata routing: documented
# by scikit-learn, noise on sktopk's pages.
_ROUTING_METHODS = ("get_metadata_routing", "set_fit_request", "set_partial_fit_request",
                    "set_predict_request", "set_score_request")


def _public_names(module_name):
    module = importlib.import_module(module_name)
    return module, [name for name in getattr(module, "__all__", []) if not name.startswith("_")]


def _stub(module_name, name, obj):
    full = f"{module_name}.{name}"
    lines = [full, "=" * len(full), "", f".. currentmodule:: {module_name}", ""]
    if inspect.isclass(obj):
        lines.append(f".. autoclass:: {name}")
        from sklearn.base import BaseEstimator

        if issubclass(obj, BaseEstimator):
            # sktopk's own methods, including those of its private base class;
            # scikit-learn's (score, get_params, ...) are documented by sklearn,
            # whose docstrings link to labels of its own site.
            lines += ["   :members:", "   :inherited-members: BaseEstimator, ClassifierMixin",
                      "   :exclude-members: " + ", ".join(_ROUTING_METHODS)]
        else:
            # torch modules: the class docstring says how to call them; do not
            # pull in the hundred members of torch.nn.Module.
            lines.append("   :members:")
    elif callable(obj):
        lines.append(f".. autofunction:: {name}")
    else:
        lines.append(f".. autodata:: {name}")
        lines.append("   :no-value:")
    return "\n".join(lines) + "\n"


def _present_optional_modules():
    return [name for name in OPTIONAL_API_MODULES if importlib.util.find_spec(name) is not None]


def write_api_stubs():
    """Write one page per public object to ``docs/generated/``; delete stale ones.

    Unchanged pages are not rewritten, so incremental builds stay incremental.
    """
    GENERATED.mkdir(exist_ok=True)
    wanted = {}
    for module_name in (*API_MODULES, *_present_optional_modules()):
        module, names = _public_names(module_name)
        for name in names:
            obj = getattr(module, name)
            if isinstance(obj, str):  # __version__ and the like
                continue
            wanted[f"{module_name}.{name}.rst"] = _stub(module_name, name, obj)
    for path in GENERATED.iterdir():
        if path.name not in wanted:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    for filename, text in wanted.items():
        path = GENERATED / filename
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")


write_api_stubs()


class APITable(SphinxDirective):
    """An autosummary table of a module's public objects, robust to API changes.

    ``.. api-table:: sktopk.losses`` followed by names lists those names, in that
    order, skipping any that the module no longer exports. With ``:remaining:``
    it lists, in ``__all__`` order, every public object of the module not listed
    by an earlier table of the page, so new public names always appear. A table
    with nothing to list renders nothing.
    """

    required_arguments = 1
    has_content = True
    option_spec = {"remaining": directives.flag}

    def run(self):
        module_name = self.arguments[0]
        module, public = _public_names(module_name)
        public = [name for name in public if not isinstance(getattr(module, name), str)]
        shown = self.env.temp_data.setdefault("sktopk_api_shown", set())
        if "remaining" in self.options:
            names = [name for name in public if f"{module_name}.{name}" not in shown]
        else:
            wanted = [line.strip() for line in self.content if line.strip()]
            names = [name for name in wanted if name in public]
        shown.update(f"{module_name}.{name}" for name in names)
        if not names:
            return []
        rst = [f".. currentmodule:: {module_name}", "", ".. autosummary::",
               "   :toctree: generated/", "   :nosignatures:", ""]
        rst += [f"   {name}" for name in names]
        container = nodes.container()
        self.state.nested_parse(StringList(rst, source=self.get_source_info()[0]),
                                self.content_offset, container)
        return container.children


# -- Benchmark results -------------------------------------------------------
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def add_optional_api_sections(app, docname, source):
    """Append a section to api.rst for each optional public module that exists."""
    if docname != "api":
        return
    for module_name in _present_optional_modules():
        title = OPTIONAL_API_MODULES[module_name]
        source[0] += (
            f"\n\n{title}\n{'=' * len(title)}\n\n"
            f".. automodule:: {module_name}\n   :no-members:\n   :no-index:\n\n"
            f".. api-table:: {module_name}\n   :remaining:\n"
        )


def add_benchmark_results(app, docname, source):
    """Append benchmarks/RESULTS.md, verbatim, to the benchmarks page when it exists."""
    if docname != "benchmarks" or not RESULTS.is_file():
        return
    source[0] += (
        "\n\nLatest results\n==============\n\n"
        "The content of ``benchmarks/RESULTS.md``, as committed:\n\n"
        ".. literalinclude:: ../benchmarks/RESULTS.md\n"
        "   :language: text\n"
    )


# -- Pages written by others that may not exist yet --------------------------
#: toctree document -> pages appended to its (last) toctree when their file exists.
OPTIONAL_PAGES = {"user_guide/index": ["/scaling_out"]}


def add_optional_pages(app, docname, source):
    for page in OPTIONAL_PAGES.get(docname, []):
        if (DOCS / f"{page.lstrip('/')}.rst").is_file():
            source[0] = source[0].rstrip("\n") + f"\n   {page}\n"


def reread_generated_content(app, env, added, changed, removed):
    # RESULTS.md or an optional page may have appeared since the last build.
    return [doc for doc in ("api", "benchmarks", *OPTIONAL_PAGES) if doc in env.found_docs]


def setup(app):
    app.add_directive("api-table", APITable)
    app.connect("source-read", add_optional_api_sections)
    app.connect("source-read", add_benchmark_results)
    app.connect("source-read", add_optional_pages)
    app.connect("env-get-outdated", reread_generated_content)
