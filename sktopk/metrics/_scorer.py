"""A top-K accuracy scorer for ``GridSearchCV``, ``cross_validate`` and friends.

The scorer aligns the estimator's score columns with ``estimator.classes_``, so it
stays defined when a cross-validation training fold misses a class (the model then
has fewer columns than there are labels) or a test fold misses one.
"""

import numpy as np
from sklearn.metrics._scorer import _BaseScorer
from sklearn.utils.metadata_routing import MetadataRequest, get_routing_for_object
from sklearn.utils.validation import _check_response_method, column_or_1d

from .._ranking import (
    DEFAULT_RESPONSE,
    _check_k,
    binary_scores_to_2d,
    check_not_one_vs_one,
    check_response_methods,
    true_label_rank,
)
from ._top_k_accuracy import (
    _aggregate,
    _check_average,
    _check_sample_weight,
    _encode,
    _factorize,
    top_k_accuracy_score,
)


def _check_response(response_method):
    methods = check_response_methods(response_method)
    return methods[0] if len(methods) == 1 else methods


class _SampleWeightScorer(_BaseScorer):
    """Base of sktopk's scorers: ``sample_weight`` is the only metadata they consume."""

    def _accept_sample_weight(self):
        return True

    def _get_metadata_request(self):
        # By default sample_weight is unrequested (routing it raises until
        # ``set_score_request`` is called), like every scikit-learn scorer.
        if hasattr(self, "_metadata_request"):
            return get_routing_for_object(self._metadata_request)
        requests = MetadataRequest(owner=self)
        requests.score.add_request(param="sample_weight", alias=None)
        return requests

    def _sample_weight(self, metadata):
        """``sample_weight`` from the metadata passed to ``_score``; anything else is an error."""
        metadata = dict(metadata)
        sample_weight = metadata.pop("sample_weight", None)
        if metadata:
            raise TypeError(
                f"{self!r} only accepts sample_weight as metadata, got {sorted(metadata)}."
            )
        return sample_weight


class _TopKScorer(_SampleWeightScorer):
    """Top-K accuracy of an estimator's ranking of ``classes_``; see :func:`make_top_k_scorer`."""

    def __init__(self, k, average, response_method):
        super().__init__(
            score_func=top_k_accuracy_score,
            sign=1,
            kwargs={"k": k, "average": average},
            response_method=response_method,
        )

    @property
    def k(self):
        """Number of best-ranked classes that count as a hit."""
        return self._kwargs["k"]

    @property
    def average(self):
        """``"micro"`` or ``"macro"``."""
        return self._kwargs["average"]

    def __repr__(self):
        extra = ""
        if self._response_method != DEFAULT_RESPONSE:
            extra = f", response_method={self._response_method!r}"
        return f"make_top_k_scorer(k={self.k}, average={self.average!r}{extra})"

    def _score(self, method_caller, estimator, X, y_true, **kwargs):
        sample_weight = self._sample_weight(kwargs)
        classes = getattr(estimator, "classes_", None)
        if classes is None:
            raise ValueError(
                f"{self!r} needs a fitted classifier with a classes_ attribute, got "
                f"{type(estimator).__name__}."
            )
        classes = np.asarray(classes)
        if classes.ndim != 1:
            raise ValueError("The top-K scorer supports single-output classifiers only.")
        n_classes = len(classes)

        method = _check_response_method(estimator, self._response_method)
        name = method.__name__
        check_not_one_vs_one(estimator, name, n_classes)
        if n_classes > 2:
            # Shared (cached) call with the other scorers of a multi-metric dict.
            y_score = method_caller(estimator, name, X, pos_label=None)
        else:
            # Binary outputs in the shared cache may have been flipped for another
            # scorer's pos_label; call the estimator directly.
            y_score = method(X)
        y_score = np.asarray(y_score)
        if n_classes == 2 and (y_score.ndim == 1 or y_score.shape[1] == 1):
            y_score = binary_scores_to_2d(
                y_score, kind="proba" if name == "predict_proba" else "decision"
            )
        elif n_classes == 1 and y_score.ndim == 1:
            y_score = y_score[:, None]
        if y_score.ndim != 2 or y_score.shape[1] != n_classes:
            raise ValueError(
                f"{type(estimator).__name__}.{name} returned shape {y_score.shape}, but the "
                f"estimator has {n_classes} classes_: the top-K scorer needs one score "
                "column per class, in the order of classes_ (for SVC, keep "
                "decision_function_shape='ovr')."
            )
        if y_score.dtype.kind not in "fiub" or np.isnan(y_score).any():
            raise ValueError(
                f"{type(estimator).__name__}.{name} returned NaN (or non-numeric) scores; "
                "the model cannot be ranked (did its training diverge?)."
            )

        y_true = column_or_1d(np.asarray(y_true), warn=True)
        if y_true.shape[0] != y_score.shape[0]:
            raise ValueError(
                f"y_true has {y_true.shape[0]} samples but {name} returned {y_score.shape[0]} rows."
            )
        sample_weight = _check_sample_weight(sample_weight, y_true.shape[0])
        # A label absent from classes_ (unseen in the training fold) gets index -1:
        # its rank is larger than any k, a miss at every k.
        y_index = _encode(y_true, classes)
        rank = true_label_rank(y_score, y_index)
        groups, n_groups = _factorize(y_true)
        score = _aggregate(rank < self.k, groups, n_groups, self.average, sample_weight)
        return float(score[0])


def make_top_k_scorer(k=5, *, average="micro", response_method=DEFAULT_RESPONSE):
    """Make a top-K accuracy scorer for model selection and evaluation.

    The scorer is called as ``scorer(estimator, X, y_true, sample_weight=None)`` and
    works wherever scikit-learn takes ``scoring=`` (``GridSearchCV``,
    ``RandomizedSearchCV``, ``cross_validate``, also inside a multi-metric dict,
    ``learning_curve``, ``permutation_importance``...), for any fitted classifier
    or pipeline ending in one.

    Unlike ``scoring="top_k_accuracy"``, it reads the estimator's ``classes_`` to
    know which label each score column belongs to, so it stays finite and
    meaningful when a cross-validation fold misses a class:

    - a label of ``y_true`` that is not in ``estimator.classes_`` (the training
      fold never saw it) can never be predicted: such a sample is a **miss at
      every k**;
    - classes absent from the test fold simply do not enter the average.

    Parameters
    ----------
    k : int, default=5
        Number of best-ranked classes that count as a hit. Keep it fixed while
        tuning the estimator (even the estimator's own ``k``) so that scores are
        comparable. When ``k >= len(classes_)`` every sample of a seen class is a
        hit; the scorer does not warn about it (it would warn on every split).
    average : {"micro", "macro"}, default="micro"
        ``"micro"``: fraction of test samples that are hits. ``"macro"``: mean over
        the classes present in the test fold of each class's hit rate (labels
        unseen in training included, with a rate of 0).
    response_method : str or tuple of str, default=("decision_function", "predict_proba")
        Estimator method giving the scores, or several tried in order. A binary
        classifier's 1-D ``decision_function`` (positive favours ``classes_[1]``)
        is handled.

    Returns
    -------
    scorer : callable
        A scikit-learn scorer (greater is better), picklable, with
        ``set_score_request(sample_weight=True)`` for metadata routing.

    See Also
    --------
    top_k_accuracy_score : The metric on precomputed scores.

    Notes
    -----
    Ties between scores rank the class that comes first in ``classes_`` first, the
    same rule as sktopk estimators' ``predict_topk``.

    With metadata routing (``sklearn.set_config(enable_metadata_routing=True)``
    and ``scorer.set_score_request(sample_weight=True)``) scikit-learn passes
    ``sample_weight`` to the scorer. Without it, ``GridSearchCV.fit(X, y,
    sample_weight=w)`` weighs the scores too in recent scikit-learn (checked with
    1.9), while ``cross_validate(params=...)`` passes the weights to ``fit`` only.
    Calling the scorer directly with ``sample_weight=`` always works.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.model_selection import cross_validate
    >>> from sktopk.metrics import make_top_k_scorer
    >>> X, y = load_iris(return_X_y=True)
    >>> scorer = make_top_k_scorer(2, average="macro")
    >>> scorer
    make_top_k_scorer(k=2, average='macro')
    >>> cv = cross_validate(LogisticRegression(max_iter=500), X, y, cv=3,
    ...                     scoring={"top1": make_top_k_scorer(1), "top2": scorer})
    >>> bool((cv["test_top2"] >= cv["test_top1"]).all())
    True
    """
    k = _check_k(k)
    average = _check_average(average)
    response_method = _check_response(response_method)
    return _TopKScorer(k, average, response_method)


__all__ = ["make_top_k_scorer"]
