"""Every Python code block of README.md and of the documentation pages runs.

One test per page (``README.md``, ``docs/*.rst``, ``docs/user_guide/*.rst``): the
page's Python blocks run in order, in one namespace, as a reader pasting them
one after the other would run them. A block is Python when it is

- in reStructuredText, a ``.. code-block:: python`` (or ``pycon``, ``.. code::
  python``) directive, or a ``::`` literal block (Sphinx highlights those as
  Python; write ``.. code-block:: bash`` or ``text`` for anything else);
- in Markdown, a fenced block opened with ```` ```python ````.

A block made of ``>>>`` prompts runs as a doctest: its printed output is checked.

The pages speak of the reader's data as ``X, y`` (and ``X_train``, ``y_train``,
``X_test``, ``y_test``, ``X_new``, sample weights ``w``), the way scikit-learn's
guides do; before a page's first block the namespace holds small data of that
name (:func:`user_data`: 240 samples, 10 features, 12 classes). A page that
defines its own data replaces them.

A block that cannot run here is marked, on the line before it, with a comment
that says why; the test skips that block (and reports the reason) and runs the
others::

    .. skip-test: needs a machine with 4 GPUs            (reStructuredText)
    <!-- skip-test: needs a Dask scheduler at scheduler-host -->   (Markdown)

A skipped block is still compiled, and every name it reads must be bound by
the page's earlier blocks or by itself (a fragment that lacks its imports fails).

A block whose ``if __name__ == "__main__":`` guard protects a script runs with
``__name__ == "__main__"``, as the script would.

What is tested is that the code runs, not the numbers it prints (except in
doctest blocks). To keep the test short, sktopk's estimators train for at most
``MAX_EPOCHS`` epochs here, whatever their ``max_epochs``, and joblib runs
``n_jobs=`` work in threads of this process (where that cap applies); a page that
asks for another joblib backend (Dask) gets it. scikit-learn's global
configuration is restored after each page.
"""

import ast
import builtins
import doctest
import functools
import os
import re
import textwrap
import time
from pathlib import Path

import joblib
import numpy as np
import pytest
import sklearn

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.rst")),
         *sorted((ROOT / "docs" / "user_guide").glob("*.rst"))]

MAX_EPOCHS = 2

# Pages whose blocks need something that lands elsewhere: page -> reason.
EXPECTED_FAILURES = {}

_PYTHON_LANGUAGES = {"python", "python3", "py", "pycon", "ipython"}
_DIRECTIVE = re.compile(r"^(\s*)\.\. (?:code-block|code|sourcecode)::\s*(\S*)\s*$")
_SKIP_RST = re.compile(r"^\s*\.\. skip-test:\s*(.+?)\s*$")
_SKIP_MD = re.compile(r"^\s*<!--\s*skip-test:\s*(.+?)\s*-->\s*$")
_FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")


class Block:
    def __init__(self, page, line, code, skip=None):
        self.page, self.line, self.code, self.skip = page, line, code, skip

    def __repr__(self):
        return f"{self.page}:{self.line}"


def _indent(line):
    return len(line) - len(line.lstrip())


def _indented_body(lines, start, base_indent):
    """The lines after ``start`` indented deeper than ``base_indent``: (first line, text)."""
    i = start + 1
    while (i < len(lines) and lines[i].strip().startswith(":")
           and _indent(lines[i]) > base_indent):
        i += 1  # the directive's options (":linenos:", ...)
    while i < len(lines) and not lines[i].strip():
        i += 1
    body_start, body = i, []
    while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base_indent):
        body.append(lines[i])
        i += 1
    return body_start + 1, textwrap.dedent("\n".join(body)).strip("\n") + "\n"


def _previous_text_line(lines, index):
    for j in range(index - 1, -1, -1):
        if lines[j].strip():
            return lines[j]
    return ""


def rst_blocks(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    for i, line in enumerate(lines):
        directive = _DIRECTIVE.match(line)
        literal = (line.rstrip().endswith("::") and not line.lstrip().startswith("..")
                   and line.strip() != "")
        if directive:
            if directive.group(2).lower() not in _PYTHON_LANGUAGES:
                continue
            base = len(directive.group(1))
        elif literal:
            base = _indent(line)
        else:
            continue
        first, code = _indented_body(lines, i, base)
        if not code.strip():
            continue
        skip = _SKIP_RST.match(_previous_text_line(lines, i))
        blocks.append(Block(path.name, first, code, skip and skip.group(1)))
    return blocks


def md_blocks(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        marker, language = fence.group(2), fence.group(3).lower()
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(marker):
            j += 1
        if language in _PYTHON_LANGUAGES:
            skip = _SKIP_MD.match(_previous_text_line(lines, i))
            code = textwrap.dedent("\n".join(lines[i + 1:j])) + "\n"
            blocks.append(Block(path.name, i + 2, code, skip and skip.group(1)))
        i = j + 1
    return blocks


def page_blocks(path):
    return md_blocks(path) if path.suffix == ".md" else rst_blocks(path)


def user_data():
    """The small ``X, y`` (and splits) that the pages call the reader's data."""
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split

    X, y = make_classification(n_samples=240, n_features=10, n_informative=8, n_redundant=0,
                               n_classes=12, n_clusters_per_class=1, class_sep=2.0,
                               random_state=0)
    X_train, X_test, y_train, y_test = train_test_split(X, y, stratify=y, random_state=0)
    w = np.random.default_rng(0).uniform(0.5, 2.0, size=len(y))
    return {"X": X, "y": y, "X_train": X_train, "X_test": X_test, "y_train": y_train,
            "y_test": y_test, "X_new": X_test[:5], "w": w}


def run_block(block, namespace):
    source = f"<{block.page}, block at line {block.line}>"
    if block.code.lstrip().startswith(">>>"):
        test = doctest.DocTestParser().get_doctest(block.code, namespace, source, source,
                                                   block.line)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS
                                       | doctest.NORMALIZE_WHITESPACE)
        out = []
        runner.run(test, out=out.append, clear_globs=False)
        if runner.failures:
            raise AssertionError("".join(out))
        return
    code = compile(block.code, source, "exec")
    exec(code, namespace)


def _page_params():
    for path in PAGES:
        name = str(path.relative_to(ROOT))
        if not any(True for _ in page_blocks(path)):
            continue
        marks = []
        if name in EXPECTED_FAILURES:
            error, reason = EXPECTED_FAILURES[name]
            marks = pytest.mark.xfail(strict=False, raises=error, reason=reason)
        yield pytest.param(path, id=name, marks=marks)


def test_the_extractor_finds_the_blocks(tmp_path):
    page = tmp_path / "page.rst"
    page.write_text(textwrap.dedent("""\
        Title
        =====

        .. code-block:: python

           a = 1

        Some text::

            b = a + 1

        .. code-block:: bash

           pip install sktopk

        .. skip-test: needs a GPU

        .. code-block:: python
           :linenos:
           :emphasize-lines: 2

           c = b + 1
           if c:
               d = 2

        .. code-block:: python

           >>> a + 1
           2
        """))
    blocks = rst_blocks(page)
    assert [b.code for b in blocks] == ["a = 1\n", "b = a + 1\n",
                                        "c = b + 1\nif c:\n    d = 2\n", ">>> a + 1\n2\n"]
    assert [b.skip for b in blocks] == [None, None, "needs a GPU", None]
    md = tmp_path / "page.md"
    md.write_text("x\n\n```bash\nls\n```\n\n<!-- skip-test: no -->\n```python\nz = 1\n```\n")
    assert [(b.code, b.skip) for b in md_blocks(md)] == [("z = 1\n", "no")]
    with pytest.raises(AssertionError, match="Expected"):
        run_block(Block("p", 1, ">>> 1 + 1\n3\n"), {})


def test_a_skipped_block_is_compiled_and_its_names_checked():
    known = check_skipped_block(Block("p", 1, "import os\nfrom a import b as c\nd = c(os)\n"),
                                {"X"})
    assert {"os", "c", "d"} <= known
    check_skipped_block(Block("p", 2, "for i in X:\n    print(i, d)\n"), {"X", "d"})
    with pytest.raises(AssertionError, match=r"reads \['StratifiedKFold', 'client'\]"):
        check_skipped_block(Block("p", 3, "s = StratifiedKFold(5)\nclient.amm.stop()\n"), {"X"})
    with pytest.raises(SyntaxError):
        check_skipped_block(Block("p", 4, "pip install sktopk\n"), set())


def _capped_fit(fit):
    @functools.wraps(fit)
    def wrapper(self, *args, **kwargs):
        max_epochs = self.max_epochs
        self.max_epochs = min(max_epochs, MAX_EPOCHS)
        try:
            return fit(self, *args, **kwargs)
        finally:
            self.max_epochs = max_epochs

    return wrapper


def _bound_names(tree):
    """Names a module binds anywhere (assignments, imports, defs, loop and ``as`` targets)."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            bound.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
            bound.update(a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg))
        elif isinstance(node, ast.Lambda):
            bound.update(a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg))
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return bound


def check_skipped_block(block, known):
    """Compile a block that does not run; return the names it binds, or raise on a name
    it reads that neither ``known`` (the page so far) nor the block itself binds."""
    source = f"<{block.page}, block at line {block.line}>"
    tree = ast.parse(block.code, source)
    bound = _bound_names(tree)
    read = {node.id for node in ast.walk(tree)
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
    unknown = sorted(read - bound - set(known) - set(dir(builtins)))
    assert not unknown, f"{block} reads {unknown}, which nothing on the page defines"
    compile(tree, source, "exec")
    return bound


@pytest.mark.parametrize("path", list(_page_params()))
def test_page_code_runs(path, tmp_path, monkeypatch):
    import sktopk

    for estimator in (sktopk.TopKClassifier, sktopk.ImbalancedTopKClassifier):
        monkeypatch.setattr(estimator, "fit", _capped_fit(estimator.fit))
    monkeypatch.chdir(tmp_path)  # files a block writes land in a temporary folder
    environ = dict(os.environ)  # a Dask nanny sets OMP_NUM_THREADS & co. in this process
    namespace = {"__name__": "__main__", **user_data()}
    known, skipped = set(namespace), []
    try:
        with sklearn.config_context(), joblib.parallel_config(backend="threading"):
            for block in page_blocks(path):
                if block.skip:
                    known |= check_skipped_block(block, known)
                    skipped.append(f"{block}: {block.skip}")
                    continue
                start = time.perf_counter()
                run_block(block, namespace)
                known |= set(namespace)
                print(f"{block}: {time.perf_counter() - start:.1f} s")
    finally:
        for name in set(os.environ) - set(environ):
            del os.environ[name]
        os.environ.update(environ)
    for reason in skipped:
        print(f"skipped {reason}")
