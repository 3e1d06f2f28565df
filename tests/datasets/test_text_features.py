"""Tests for sktopk.datasets.make_text_vectorizer."""

import pickle

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.utils.validation import check_is_fitted

from sktopk.datasets import make_text_vectorizer

NAMES = ["San Pedro", "San José", "Springfield", "Saint-Denis", "Sankt Gallen", "Spring Hill"]


def test_default_pipeline_is_unfitted_sparse_tfidf():
    vectorizer = make_text_vectorizer()
    assert isinstance(vectorizer, Pipeline)
    assert [name for name, _ in vectorizer.steps] == ["tfidf"]
    tfidf = vectorizer.named_steps["tfidf"]
    assert tfidf.analyzer == "char_wb" and tfidf.sublinear_tf and tfidf.ngram_range == (1, 4)
    assert tfidf.max_features == 50000
    with pytest.raises(Exception, match="not fitted"):
        check_is_fitted(tfidf)
    X = vectorizer.fit_transform(NAMES)
    assert sp.issparse(X) and X.shape[0] == len(NAMES)
    np.testing.assert_allclose(sp.linalg.norm(X, axis=1), 1.0)


def test_svd_gives_dense_unit_rows():
    vectorizer = make_text_vectorizer(n_components=3, random_state=0)
    assert [name for name, _ in vectorizer.steps] == ["tfidf", "svd", "normalize"]
    X = vectorizer.fit_transform(NAMES)
    assert isinstance(X, np.ndarray) and X.shape == (len(NAMES), 3)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0)
    again = make_text_vectorizer(n_components=3, random_state=0).fit_transform(NAMES)
    np.testing.assert_allclose(X, again)


def test_parameters_are_passed_through():
    vectorizer = make_text_vectorizer(
        analyzer="char", ngram_range=(2, 3), max_features=10, min_df=2, lowercase=False
    )
    params = vectorizer.get_params()
    assert params["tfidf__analyzer"] == "char"
    assert params["tfidf__ngram_range"] == (2, 3)
    assert params["tfidf__min_df"] == 2
    assert not params["tfidf__lowercase"]
    X = vectorizer.fit_transform(NAMES)
    assert X.shape[1] <= 10


def test_clone_pickle_and_grid_search():
    model = make_pipeline(make_text_vectorizer(max_features=500), LogisticRegression())
    y = ["PH", "CR", "US", "FR", "CH", "US"]
    cloned = clone(model).fit(NAMES, y)
    restored = pickle.loads(pickle.dumps(cloned))
    assert restored.predict(NAMES).tolist() == cloned.predict(NAMES).tolist()
    search = GridSearchCV(
        model, {"pipeline__tfidf__ngram_range": [(1, 2), (1, 3)]}, cv=2, error_score="raise"
    )
    search.fit(NAMES * 2, ["a", "b", "a", "b", "a", "b"] * 2)
    assert search.best_params_["pipeline__tfidf__ngram_range"] in [(1, 2), (1, 3)]


def test_unicode_scripts():
    texts = ["Всеки човек има право", "人人生而自由", "Toute personne a droit"]
    X = make_text_vectorizer().fit_transform(texts)
    assert X.shape[0] == 3 and X.nnz > 0


@pytest.mark.parametrize("n_components", [0, -1, 2.0, True, "3"])
def test_invalid_n_components(n_components):
    with pytest.raises(ValueError, match="n_components"):
        make_text_vectorizer(n_components=n_components)
