"""Tests for sktopk.datasets.load_languages (UDHR samples via gflanguages)."""

import sys
from importlib import metadata
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("gflanguages")

from sktopk.datasets import _languages, load_languages  # noqa: E402
from sktopk.datasets._languages import _chunk, _segments  # noqa: E402


@pytest.fixture
def languages():
    return load_languages()


def _by_class(bunch):
    groups = {}
    for chunk, label in zip(bunch.data, bunch.target, strict=True):
        groups.setdefault(int(label), []).append(chunk)
    return groups


def test_structure(languages):
    n = len(languages.data)
    assert isinstance(languages.data, list) and all(isinstance(x, str) for x in languages.data)
    assert languages.target.shape == (n,) and languages.target.dtype == np.int64
    n_classes = len(languages.target_names)
    assert languages.target_names == sorted(set(languages.target_names))
    assert len(languages.language_names) == n_classes
    np.testing.assert_array_equal(languages.class_counts, np.bincount(languages.target))
    assert languages.feature_names == ["text"]
    assert np.all(np.diff(languages.target) >= 0)  # ordered by language id


def test_many_balanced_classes(languages):
    assert len(languages.target_names) > 300
    assert np.all(languages.class_counts == 20)
    for name in ("en_Latn", "hr_Latn", "bs_Latn", "sr_Latn", "sr_Cyrl", "id_Latn", "zh_Hans"):
        assert name in languages.target_names
    names = dict(zip(languages.target_names, languages.language_names, strict=True))
    assert names["en_Latn"] == "English"


@pytest.mark.skipif(
    metadata.version("gflanguages") != "0.7.11", reason="counts stated for gflanguages 0.7.11"
)
def test_counts_stated_in_descr(languages):
    assert len(languages.data) == 6700
    assert len(languages.target_names) == 335
    assert "6700 chunks, 335 classes of exactly 20 chunks" in languages.DESCR
    assert "Dropped: too little text           420" in languages.DESCR
    X, y = load_languages(chunk_length=60, max_chunks_per_language=10, return_X_y=True)
    assert (len(X), len(np.unique(y))) == (3640, 364)


def test_chunk_lengths(languages):
    lengths = np.array([len(chunk) for chunk in languages.data])
    assert lengths.min() >= 20 and lengths.max() <= 40
    assert all(chunk == " ".join(chunk.split()) for chunk in languages.data)


def test_no_repeated_text_within_a_language(languages):
    """No chunk repeats, or is contained in, another chunk of its language.

    So no split of a language's chunks puts the same text in train and test.
    """
    for chunks in _by_class(languages).values():
        assert len(set(chunks)) == len(chunks)
        for i, chunk in enumerate(chunks):
            assert not any(chunk in other for j, other in enumerate(chunks) if j != i)


def test_no_chunk_shared_between_splits_of_a_language(languages):
    from sklearn.model_selection import train_test_split

    train, test, y_train, y_test = train_test_split(
        languages.data, languages.target, test_size=0.5, stratify=languages.target, random_state=0
    )
    seen = set(zip(train, y_train.tolist(), strict=True))
    assert not any(
        (chunk, label) in seen for chunk, label in zip(test, y_test.tolist(), strict=True)
    )


def test_segments_dedupe_overlapping_fields():
    sentence_1 = "Everyone has the right to life, liberty and security of person."
    sentence_2 = "No one shall be held in slavery or servitude."
    sample = SimpleNamespace(
        specimen_16=f"{sentence_1}\n{sentence_2}",
        specimen_21=f"{sentence_1} {sentence_2}",
        specimen_32=sentence_2,
        specimen_36="No one shall be held in slavery or servitude",  # near duplicate
        specimen_48="Everyone has the right to life,",  # fragment
        tester="A  different   sentence.",
        styles="Everyone has",
    )
    assert _segments(sample) == [sentence_1, sentence_2, "A different sentence."]


def test_chunk_whole_words_and_scripts_without_spaces():
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    chunks = _chunk([" ".join(words)], 16)
    assert chunks == ["alpha beta gamma", "delta epsilon", "zeta eta theta"]
    assert " ".join(chunks).split() == words  # whole words, nothing lost
    cjk = "人人生而自由在尊严和权利上一律平等他们赋有理性和良心"
    pieces = _chunk([cjk], 10)
    assert "".join(pieces) == cjk and all(len(p) == 10 for p in pieces[:-1])
    assert _chunk(["tiny"], 10) == []  # shorter than half a chunk: dropped


def test_parameters_change_the_selection():
    loose = load_languages(chunk_length=40, max_chunks_per_language=20, min_chunks_per_language=10)
    assert loose.class_counts.min() >= 10 and loose.class_counts.max() == 20
    assert len(loose.target_names) > 335
    long = load_languages(chunk_length=80, max_chunks_per_language=5)
    assert all(40 <= len(c) <= 80 for c in long.data)
    assert np.all(long.class_counts == 5)


def test_deterministic_and_independent_copies():
    first = load_languages()
    second = load_languages()
    assert first.data == second.data
    np.testing.assert_array_equal(first.target, second.target)
    first.data[0] = "mutated"
    first.target[:] = -1
    first.target_names[0] = "??"
    first.class_counts[:] = 0
    third = load_languages()
    assert third.data == second.data
    np.testing.assert_array_equal(third.target, second.target)
    assert third.target_names == second.target_names
    np.testing.assert_array_equal(third.class_counts, second.class_counts)


def test_return_X_y_and_as_frame(languages):
    X, y = load_languages(return_X_y=True)
    assert X == languages.data
    np.testing.assert_array_equal(y, languages.target)
    pd = pytest.importorskip("pandas")
    framed = load_languages(as_frame=True)
    assert isinstance(framed.data, pd.Series)
    assert list(framed.frame.columns) == ["text", "target"]
    assert framed.frame["text"].tolist() == languages.data


def test_descr(languages):
    assert "Apache" in languages.DESCR and "gflanguages" in languages.DESCR
    assert "Universal" in languages.DESCR
    assert f"Classes (language/script ids)      {len(languages.target_names)}" in languages.DESCR


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"chunk_length": 0}, ValueError),
        ({"chunk_length": 1}, ValueError),  # half a chunk is 0 characters: it never ended
        ({"chunk_length": 40.0}, TypeError),
        ({"max_chunks_per_language": 0}, ValueError),
        ({"min_chunks_per_language": 0}, ValueError),
        ({"return_X_y": None}, TypeError),
        ({"as_frame": "no"}, TypeError),
    ],
)
def test_invalid_parameters(kwargs, error):
    with pytest.raises(error):
        load_languages(**kwargs)


@pytest.fixture
def fresh_cache():
    _languages._read_languages.cache_clear()
    _languages._build.cache_clear()
    yield
    _languages._read_languages.cache_clear()
    _languages._build.cache_clear()


def test_missing_package_error(monkeypatch, fresh_cache):
    monkeypatch.setitem(sys.modules, "gflanguages", None)
    message = (
        r"load_languages needs the optional package gflanguages: pip install 'sktopk\[datasets\]'"
    )
    with pytest.raises(ImportError, match=message):
        load_languages()
