"""Scorers for set-valued classifiers (anything with ``predict_set`` and ``classes_``)."""

import numpy as np
from sklearn.utils.validation import column_or_1d

from ._scorer import _SampleWeightScorer
from ._set_accuracy import mean_set_size, set_accuracy_score
from ._top_k_accuracy import _aggregate, _check_average, _check_sample_weight, _encode, _factorize

_METRICS = {"accuracy": set_accuracy_score, "size": mean_set_size}

__all__ = ["make_set_scorer"]


class _SetScorer(_SampleWeightScorer):
    """Accuracy or mean size of ``estimator.predict_set(X)``; see :func:`make_set_scorer`."""

    def __init__(self, metric, average):
        super().__init__(score_func=_METRICS[metric], sign=1 if metric == "accuracy" else -1,
                         kwargs={"average": average}, response_method="predict_set")
        self._metric = metric

    def __repr__(self):
        return f"make_set_scorer({self._metric!r}, average={self._kwargs['average']!r})"

    def _score(self, method_caller, estimator, X, y_true, **kwargs):
        sample_weight = self._sample_weight(kwargs)
        if not hasattr(estimator, "predict_set") or not hasattr(estimator, "classes_"):
            raise TypeError(
                f"{self!r} needs a fitted estimator with predict_set and classes_ (e.g. "
                f"sktopk.AverageKClassifier), got {type(estimator).__name__}."
            )
        classes = np.asarray(estimator.classes_)
        sets = np.asarray(estimator.predict_set(X), dtype=bool)
        if sets.ndim != 2 or sets.shape[1] != len(classes):
            raise ValueError(f"{type(estimator).__name__}.predict_set returned shape "
                             f"{sets.shape}; expected (n_samples, {len(classes)}).")
        y_true = column_or_1d(np.asarray(y_true))
        sample_weight = _check_sample_weight(sample_weight, y_true.shape[0])
        # A label unseen in training (absent from classes_) is never in a set: a miss,
        # and its sample's set still counts for the size.
        y_index = _encode(y_true, classes)
        rows = np.arange(len(y_index))
        if self._metric == "accuracy":
            values = np.where(y_index >= 0, sets[rows, np.maximum(y_index, 0)], False)
        else:
            values = sets.sum(axis=1).astype(np.float64)
        groups, n_groups = _factorize(y_true)
        score = _aggregate(values, groups, n_groups, self._kwargs["average"], sample_weight)
        return self._sign * float(score[0])


def make_set_scorer(metric="accuracy", *, average="micro"):
    """Make a scorer of prediction sets for ``GridSearchCV``, ``cross_validate``...

    The scorer calls ``estimator.predict_set(X)`` (a boolean array aligned with
    ``estimator.classes_``, as :class:`sktopk.AverageKClassifier` returns) and
    measures :func:`set_accuracy_score` or :func:`mean_set_size`.

    Parameters
    ----------
    metric : {"accuracy", "size"}, default="accuracy"
        ``"accuracy"``: fraction of samples whose set holds the true label
        (greater is better). ``"size"``: mean set size, returned negated as
        scikit-learn's ``neg_*`` scorers are (greater is better).
    average : {"micro", "macro"}, default="micro"
        Mean over samples, or unweighted mean over the classes present in the
        test fold of the per-class means. A test label unseen in training is a
        miss.

    Returns
    -------
    scorer : callable
        A scikit-learn scorer, picklable, with
        ``set_score_request(sample_weight=True)`` for metadata routing.

    See Also
    --------
    set_accuracy_score, mean_set_size : The metrics on precomputed sets.
    make_top_k_scorer : The accuracy of fixed-size top-K sets.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.model_selection import cross_validate
    >>> from sktopk import AverageKClassifier
    >>> from sktopk.metrics import make_set_scorer
    >>> X, y = load_iris(return_X_y=True)
    >>> model = AverageKClassifier(LogisticRegression(), average_k=1.2, random_state=0)
    >>> cv = cross_validate(model, X, y, cv=3, scoring={
    ...     "accuracy": make_set_scorer("accuracy"), "size": make_set_scorer("size")})
    >>> bool((cv["test_accuracy"] > 0.9).all()), bool((-cv["test_size"] < 2).all())
    (True, True)
    """
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {sorted(_METRICS)}, got {metric!r}.")
    return _SetScorer(metric, _check_average(average))
