"""numpydoc validation of sktopk's public API (as imbalanced-learn and scikit-learn do).

Every object in the ``__all__`` of the public modules, and every public method that
sktopk itself defines on a public class (on the class or on a private sktopk base;
not the methods inherited from scikit-learn or torch), passes
:func:`numpydoc.validate.validate`, except for the checks in ``IGNORED``.
``docs/conf.py`` switches on the same validation in the docs build
(``numpydoc_validation_checks``); ``test_docs_build_validates_the_same_checks``
keeps the two in step.
"""

import ast
import importlib
import inspect
import sys
import types
from pathlib import Path

import pytest

numpydoc_validate = pytest.importorskip("numpydoc.validate")

PUBLIC_MODULES = ("sktopk", "sktopk.losses", "sktopk.functional", "sktopk.metrics",
                  "sktopk.backends", "sktopk.datasets", "sktopk.parallel")

#: Checks not enforced, with why.
IGNORED = {
    "GL01": "the summary starts on the line of the opening quotes (PEP 257 allows both)",
    "GL02": "closing-quote placement is a formatter's business",
    "ES01": "a one-line summary is enough for a small function",
    "SA01": "not every object has a useful See Also",
    "SS05": "flags any summary whose first word ends in 's' (\"Margins ...\")",
    "RT02": "named returns, scikit-learn style (``self : object``)",
}
#: Also ignored for methods: the class docstring holds the examples.
IGNORED_FOR_METHODS = {
    "EX01": "a method is shown in its class's Examples",
}
#: torch hooks that sktopk's loss modules override; documented by torch.
SKIPPED_METHODS = {"extra_repr"}

#: Objects whose docstrings fail today, in files this test's author does not own:
#: name -> owning file. Each is an expected failure (strict: a fixed one must leave
#: the list), and ``docs/conf.py`` excludes the same names from the docs build's checks.
PENDING = {}


def public_objects():
    """(qualified name, is_method) of every object validated, in a stable order."""
    found = {}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if not callable(obj):  # constants (__version__, BACKENDS)
                continue
            found[f"{module_name}.{name}"] = False
            if not inspect.isclass(obj):
                continue
            for klass in obj.__mro__:
                if not klass.__module__.startswith("sktopk"):
                    continue
                for attr, value in vars(klass).items():
                    if attr.startswith("_") or attr in SKIPPED_METHODS:
                        continue
                    if callable(value) or isinstance(value, property):
                        found.setdefault(f"{module_name}.{name}.{attr}", True)
    return found


OBJECTS = public_objects()


def _params():
    for name, is_method in OBJECTS.items():
        marks = []
        if name in PENDING:
            marks = pytest.mark.xfail(strict=True,
                                      reason=f"owned by {PENDING[name]}, fixed at merge")
        yield pytest.param(name, is_method, id=name, marks=marks)


def failed_checks(name, is_method):
    ignored = set(IGNORED) | (set(IGNORED_FOR_METHODS) if is_method else set())
    result = numpydoc_validate.validate(name)
    return [f"{code}: {message}" for code, message in result["errors"] if code not in ignored]


@pytest.mark.parametrize(("name", "is_method"), list(_params()))
def test_docstring(name, is_method):
    errors = failed_checks(name, is_method)
    assert not errors, f"{name}:\n" + "\n".join(errors)


def test_the_list_covers_the_public_api():
    assert "sktopk.TopKClassifier.fit" in OBJECTS and OBJECTS["sktopk.TopKClassifier.fit"]
    assert "sktopk.losses.FocalLoss.forward" in OBJECTS
    assert "sktopk.parallel.make_local_cluster" in OBJECTS
    assert not any(name.endswith((".get_params", ".score", ".extra_repr")) for name in OBJECTS)
    assert set(PENDING) <= set(OBJECTS), "a pending name no longer exists: drop it"


def test_a_bad_docstring_fails():
    module = types.ModuleType("fake_module")

    def undocumented_parameter(x, y):
        """Add.

        Parameters
        ----------
        x : int
            The first.
        """
        return x + y

    module.f = undocumented_parameter
    undocumented_parameter.__module__ = "fake_module"
    sys.modules["fake_module"] = module
    try:
        errors = failed_checks("fake_module.f", is_method=False)
    finally:
        del sys.modules["fake_module"]
    assert any(error.startswith("PR01") for error in errors)  # y is not documented
    assert any(error.startswith("RT01") for error in errors)  # no Returns section
    assert any(error.startswith("EX01") for error in errors)  # no Examples


def _conf_value(name):
    tree = ast.parse((Path(__file__).resolve().parents[1] / "docs" / "conf.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"docs/conf.py does not set {name}")


def test_docs_build_validates_the_same_checks():
    # Sphinx's hook cannot tell a method from a function: it ignores EX01 for all.
    assert _conf_value("numpydoc_validation_checks") == {
        "all", *IGNORED, *IGNORED_FOR_METHODS}
    # conf.py excludes these names (as exact-match patterns) from the build's checks.
    assert _conf_value("_NUMPYDOC_PENDING") == set(PENDING)
