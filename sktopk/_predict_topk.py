"""The k best labels of any fitted classifier, pipeline or search object."""

import warnings

import numpy as np
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import _check_response_method

from ._ranking import (
    DEFAULT_RESPONSE,
    _check_k,
    binary_scores_to_2d,
    check_not_one_vs_one,
    check_response_methods,
    top_k_indices,
)

__all__ = ["class_scores", "predict_topk"]


def _fitted_classes(estimator):
    try:
        classes = estimator.classes_
    except AttributeError as exc:
        raise NotFittedError(
            f"{type(estimator).__name__} has no classes_: fit it first (a search object "
            "needs refit=True). sktopk needs a fitted classifier whose score columns "
            "follow classes_."
        ) from exc
    classes = np.asarray(classes)
    if classes.ndim != 1:
        raise ValueError("Only single-output classifiers are supported (classes_ must be 1-D).")
    return classes


def class_scores(estimator, X, *, response_method=DEFAULT_RESPONSE):
    """Score matrix of a fitted classifier, one column per entry of ``classes_``.

    Returns ``(scores, classes, method_name)``. A binary classifier's 1-D output is
    turned into two columns (see :func:`sktopk._ranking.binary_scores_to_2d`).
    """
    methods = check_response_methods(response_method)
    classes = _fitted_classes(estimator)
    try:
        method = _check_response_method(estimator, methods)
    except AttributeError:
        raise TypeError(
            f"{type(estimator).__name__} has none of the methods {list(methods)}: sktopk "
            "needs class scores (decision_function or predict_proba) to rank the classes."
        ) from None
    name = method.__name__
    check_not_one_vs_one(estimator, name, len(classes))
    scores = np.asarray(method(X))
    n_classes = len(classes)
    if n_classes == 2 and (scores.ndim == 1 or (scores.ndim == 2 and scores.shape[1] == 1)):
        scores = binary_scores_to_2d(scores, kind="proba" if name == "predict_proba" else
                                     "decision")
    elif n_classes == 1 and scores.ndim == 1:
        scores = scores[:, None]
    if scores.ndim != 2 or scores.shape[1] != n_classes:
        raise ValueError(
            f"{type(estimator).__name__}.{name} returned shape {scores.shape}, but the "
            f"estimator has {n_classes} classes_: one score column per class is needed, in "
            "the order of classes_ (for SVC, keep decision_function_shape='ovr')."
        )
    if scores.dtype.kind not in "fiub":
        raise TypeError(f"{type(estimator).__name__}.{name} returned non-numeric scores.")
    scores = scores.astype(np.float64, copy=False)
    if np.isnan(scores).any():
        raise ValueError(
            f"{type(estimator).__name__}.{name} returned NaN scores; the model cannot rank "
            "the classes (did its training diverge?)."
        )
    return scores, classes, name


def predict_topk(estimator, X, k=5, *, response_method=DEFAULT_RESPONSE):
    """The ``k`` most likely labels of each sample, best first, for any classifier.

    Works with every fitted scikit-learn classifier that has ``classes_`` and
    ``decision_function`` or ``predict_proba`` (``LogisticRegression``, ``SVC``,
    random forests...), with a :class:`~sklearn.pipeline.Pipeline` ending in one,
    with a fitted ``GridSearchCV`` / ``RandomizedSearchCV`` (``refit=True``) and
    with sktopk's estimators, whose own ``predict_topk`` gives the same answer.

    Parameters
    ----------
    estimator : fitted classifier, pipeline or search object
        Its score columns must follow ``estimator.classes_``.
    X : array-like or sparse matrix of shape (n_samples, ...)
        Whatever the estimator accepts (a list of str for a text pipeline).
    k : int, default=5
        Number of labels to return. Values above the number of classes are
        clipped, with a warning.
    response_method : str or tuple of str, default=("decision_function", "predict_proba")
        Method giving the scores, or several tried in order (the default of
        :func:`sktopk.metrics.make_top_k_scorer`, so the two always agree). A
        binary classifier's 1-D ``decision_function`` (positive favours
        ``classes_[1]``) is handled.

    Returns
    -------
    labels : ndarray of shape (n_samples, k)
        Labels from ``estimator.classes_``; column 0 holds the best one.

    Raises
    ------
    NotFittedError
        If the estimator has no ``classes_``.
    TypeError
        If it has none of the methods in ``response_method``.

    See Also
    --------
    sktopk.metrics.make_top_k_scorer : Top-K accuracy of the same ranking.

    Notes
    -----
    Ties: among equal scores the class that comes first in ``classes_`` ranks
    first, the rule of :mod:`sktopk.metrics`.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sktopk import predict_topk
    >>> X, y = load_iris(return_X_y=True)
    >>> model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    >>> predict_topk(model, X[[0, 70]], k=2)
    array([[0, 1],
           [2, 1]])
    """
    k = _check_k(k)
    scores, classes, _ = class_scores(estimator, X, response_method=response_method)
    n_classes = len(classes)
    if k > n_classes:
        warnings.warn(f"k={k} is larger than the {n_classes} classes; returning all "
                      f"{n_classes} classes in order.", UserWarning, stacklevel=2)
        k = n_classes
    return classes[top_k_indices(scores, k)]
