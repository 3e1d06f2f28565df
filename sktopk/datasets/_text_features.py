"""A ready-made character n-gram featurizer for the text datasets."""

import numbers

from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer


def make_text_vectorizer(
    *,
    analyzer="char_wb",
    ngram_range=(1, 4),
    max_features=50000,
    min_df=1,
    lowercase=True,
    n_components=None,
    random_state=None,
):
    """Build an unfitted character n-gram tf-idf featurizer for short texts.

    A factory, not a new estimator: it returns a plain scikit-learn
    :class:`~sklearn.pipeline.Pipeline` that turns an iterable of str (city
    names, text chunks) into a feature matrix, to be chained with a classifier,
    e.g. ``make_pipeline(make_text_vectorizer(), TopKClassifier())``. Every
    step is a standard scikit-learn transformer, so the pipeline clones,
    pickles and grid-searches as usual (step names: ``'tfidf'``, and with
    ``n_components`` also ``'svd'`` and ``'normalize'``, e.g.
    ``tfidf__ngram_range``).

    The steps are:

    1. ``tfidf``: :class:`~sklearn.feature_extraction.text.TfidfVectorizer`
       with sublinear term frequency (``1 + log(tf)``) and L2-normalised rows.
       The default analyzer ``'char_wb'`` takes character n-grams inside word
       boundaries (padded with spaces), which suits names and text in any
       script; accents are kept (they are informative).
    2. Only if ``n_components`` is set: ``svd``
       (:class:`~sklearn.decomposition.TruncatedSVD`, latent semantic analysis)
       to a dense ``n_components``-dimensional matrix, then ``normalize``
       (:class:`~sklearn.preprocessing.Normalizer`, L2) to unit-norm rows.

    Without ``n_components`` the output is a sparse CSR matrix, which linear
    scikit-learn models accept directly; use ``n_components`` for a model that
    needs dense input or to keep a torch model small.

    Parameters
    ----------
    analyzer : {'char_wb', 'char', 'word'}, default='char_wb'
        Passed to ``TfidfVectorizer``.
    ngram_range : tuple (min_n, max_n), default=(1, 4)
        Range of n-gram lengths, passed to ``TfidfVectorizer``.
    max_features : int or None, default=50000
        Keep only the most frequent n-grams of the training texts (None: all).
    min_df : int or float, default=1
        Ignore n-grams found in fewer training texts (a float is a fraction).
    lowercase : bool, default=True
        Lowercase the texts before extracting n-grams.
    n_components : int or None, default=None
        If set, add TruncatedSVD to this many dimensions and L2 normalisation.
    random_state : int, RandomState instance or None, default=None
        Seed of the randomized SVD; only used with ``n_components``.

    Returns
    -------
    vectorizer : :class:`~sklearn.pipeline.Pipeline`
        Unfitted; its ``fit_transform`` takes an iterable of str of length
        n_samples and returns a matrix of shape (n_samples, n_features).

    Notes
    -----
    The tf-idf parameters are checked by scikit-learn when the pipeline is
    fitted; only ``n_components`` is checked here, as it decides the steps.

    Examples
    --------
    >>> from sktopk.datasets import make_text_vectorizer
    >>> names = ["San Pedro", "San José", "Springfield", "Saint-Denis"]
    >>> vectorizer = make_text_vectorizer()
    >>> [name for name, _ in vectorizer.steps]
    ['tfidf']
    >>> X = vectorizer.fit_transform(names)
    >>> X.shape
    (4, 114)
    >>> lsa = make_text_vectorizer(n_components=2, random_state=0)
    >>> lsa.fit_transform(names).shape
    (4, 2)

    In a classification pipeline:

    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> model = make_pipeline(make_text_vectorizer(), LogisticRegression())
    >>> model.fit(names, ["PH", "CR", "US", "FR"]).predict(["San Pedro"]).tolist()
    ['PH']
    """
    if n_components is not None and (
        isinstance(n_components, bool)
        or not isinstance(n_components, numbers.Integral)
        or n_components < 1
    ):
        raise ValueError(f"n_components must be None or an integer >= 1, got {n_components!r}.")
    steps = [
        (
            "tfidf",
            TfidfVectorizer(
                analyzer=analyzer,
                ngram_range=ngram_range,
                max_features=max_features,
                min_df=min_df,
                lowercase=lowercase,
                sublinear_tf=True,
            ),
        )
    ]
    if n_components is not None:
        steps.append(
            ("svd", TruncatedSVD(n_components=int(n_components), random_state=random_state))
        )
        steps.append(("normalize", Normalizer()))
    return Pipeline(steps)
