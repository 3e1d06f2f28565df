"""Average-K prediction sets: a score threshold fitted so that sets hold K labels on average."""

import numbers
import warnings

import numpy as np
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.utils import get_tags
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, indexable

from ._predict_topk import class_scores, predict_topk
from ._temperature import (
    calibration_split,
    check_cv,
    check_fraction,
    check_has_scores,
    check_two_classes,
    encode_calibration_labels,
    fit_temperature,
    scores_as_logits,
)

__all__ = ["AverageKClassifier"]

_MODES = ("global", "classwise")


def _global_threshold(proba, average_k):
    """Threshold whose sets ``proba >= t`` hold closest to ``average_k`` labels on average.

    The candidates are the calibration probabilities themselves, and the mean
    size of ``proba >= t`` falls as ``t`` grows. Let ``t0`` be the
    ``ceil(average_k * n)``-th largest probability: the size at ``t0`` is at
    least ``average_k`` and the size at the next larger value is below it, so
    the nearest size is at one of the two (the larger set on a tie). Tied
    probabilities (k-NN, trees: many exact zeros) make the sizes jump, with a
    warning when the nearest is more than half a label away. Linear time: one
    partition and two counts.
    """
    n_rows = proba.shape[0]
    flat = proba.ravel()
    n_in = int(np.clip(np.ceil(average_k * n_rows), 1, flat.size))
    t0 = float(np.partition(flat, flat.size - n_in)[flat.size - n_in])
    count, target = np.count_nonzero(flat >= t0), average_k * n_rows
    best = t0
    above = flat[flat > t0]
    # Counts, not mean sizes: dividing by n_rows would round exact ties apart.
    if above.size and abs(above.size - target) < abs(count - target):
        best, count = float(above.min()), above.size
    size = count / n_rows
    if abs(size - average_k) > 0.5:
        warnings.warn(
            f"Tied calibration probabilities make a mean set size of average_k={average_k} "
            f"unreachable with one threshold; the nearest, {size:.3g} labels, is used. "
            "The estimator gives too few distinct probabilities (k-NN, trees); one with "
            "smoother probabilities gets closer.", UserWarning, stacklevel=3)
    return best


def _classwise_thresholds(proba, y_index, average_k):
    """One threshold per class: equal hit rate ``r`` for every class, ``r`` set by the size.

    ``t_j(r)`` is the ``1 - r`` quantile of the calibration probabilities of class
    ``j`` among its own samples (linear interpolation between order statistics,
    so that the mean set size moves by single labels as ``r`` grows), and ``r``
    is found by bisection so that the mean set size on the calibration data is
    ``average_k``.
    """
    n_classes = proba.shape[1]
    true_scores = [proba[y_index == j, j] for j in range(n_classes)]

    def thresholds(r):
        return np.array([np.quantile(values, 1.0 - r) for values in true_scores])

    def size(r):
        return float((proba >= thresholds(r)).sum(axis=1).mean())

    low, high = 0.0, 1.0
    if size(low) > average_k:
        warnings.warn(
            f"mode='classwise' cannot make sets this small: with every class at its highest "
            f"true-class calibration score, the sets hold {size(low):.3g} labels on average "
            f"(classes with few calibration samples get low thresholds), above "
            f"average_k={average_k}; using those thresholds. Use mode='global', or more "
            "calibration data.", UserWarning, stacklevel=3)
        return thresholds(low)
    if size(high) < average_k:
        warnings.warn(
            f"mode='classwise' reaches a mean set size of only {size(high):.3g} on the "
            f"calibration data (every class at its lowest true-class score), below "
            f"average_k={average_k}; using those thresholds.", UserWarning, stacklevel=3)
        return thresholds(high)
    for _ in range(60):
        mid = 0.5 * (low + high)
        if size(mid) < average_k:
            low = mid
        else:
            high = mid
    # The sizes at the two ends of the last step bracket average_k: keep the closer.
    best = min((low, high), key=lambda r: abs(size(r) - average_k))
    return thresholds(best)


class AverageKClassifier(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Prediction sets holding ``average_k`` labels on average (average-K classification).

    Top-K classification returns K labels for every sample. Average-K
    classification (Lorieul, 2020; Garcin et al., 2021, Pl@ntNet-300K) returns
    all labels whose probability reaches one global threshold, fitted on
    held-out data so that the sets hold K labels *on average*: ambiguous
    samples get more labels, easy ones fewer. At the same mean set size it is
    more accurate than top-K when the ambiguity varies between samples.

    ``fit`` trains (a clone of) the estimator on part of the data, then fits the
    threshold on the held-out ``calibration_fraction`` (stratified); with
    ``cv="prefit"`` it fits the threshold of an already fitted estimator on the
    given data. :meth:`predict_set` returns the sets; :meth:`predict`,
    :meth:`predict_topk` and :meth:`decision_function` are the estimator's.

    Which scores are thresholded: probabilities. A threshold on raw decision
    values compares numbers that are not on a common scale across samples: the
    top-K hinge losses of sktopk (and any softmax) are unchanged when a
    constant is added to a sample's scores, so the level of a row of scores is
    arbitrary and only differences within a row carry information. The
    probabilities ``softmax(scores / T)`` remove that arbitrary level. The
    estimator's own ``predict_proba`` is used when it has one; otherwise
    ``softmax(decision_function / T)``, with the temperature ``T`` fitted by log
    loss on the calibration part (the scale of hinge scores is also arbitrary).

    Parameters
    ----------
    estimator : classifier
        A classifier (or pipeline, or search object) with ``predict_proba`` or
        ``decision_function``.
    average_k : float, default=5
        Target mean set size, ``0 < average_k < n_classes`` (need not be an
        integer).
    calibration_fraction : float, default=0.2
        With ``cv=None``, the stratified share of the data held out from the
        estimator's training to fit the threshold (and the temperature).
    cv : {None, "prefit"}, default=None
        ``None``: fit a clone of the estimator on the rest of the data.
        ``"prefit"``: the estimator is already fitted (it is neither cloned nor
        refitted); ``fit(X, y)`` fits the threshold only, on data the estimator
        has not seen.
    mode : {"global", "classwise"}, default="global"
        ``"global"``: one threshold for all classes (micro average-K).
        ``"classwise"``: one threshold per class, chosen so that every class has
        the same hit rate on the calibration data, at the mean set size
        ``average_k`` (a macro variant: rare classes get lower thresholds).
        Rare classes' thresholds rest on few calibration samples. On long-tailed
        data it trades the frequent classes for the rare ones: on the cities
        data it multiplied the few-shot classes' accuracy by 8 but lowered the
        macro accuracy (see :ref:`set_valued`); it may also be unable to make
        sets as small as ``average_k`` (it warns).
    random_state : int, RandomState instance or None, default=None
        Seed of the calibration split (the estimator's own seed is its own
        parameter).

    Attributes
    ----------
    estimator_ : classifier
        The fitted estimator.
    classes_ : ndarray of shape (n_classes,)
        Class labels, from the estimator.
    threshold_ : float or ndarray of shape (n_classes,)
        The probability threshold (one per class with ``mode="classwise"``).
    temperature_ : float or None
        Temperature of the softmax over ``decision_function``; None when the
        estimator's ``predict_proba`` is used.
    calibration_set_size_ : float
        Mean set size on the calibration data.
    n_features_in_ : int
        Number of features, when the estimator has it.

    See Also
    --------
    sktopk.predict_topk : Fixed-size top-K sets.
    sktopk.metrics.set_accuracy_score, sktopk.metrics.mean_set_size : Evaluate sets.
    TemperatureScaledClassifier : Probabilities for conformal sets with MAPIE.

    Notes
    -----
    A set may be empty (no label reaches the threshold); it then counts as a
    miss. The mean size is met on the calibration data; on new data it is met
    up to sampling noise, if the data are exchangeable.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sktopk import AverageKClassifier
    >>> from sktopk.metrics import mean_set_size, set_accuracy_score
    >>> from sklearn.model_selection import train_test_split
    >>> X, y = load_digits(return_X_y=True)
    >>> X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    >>> model = AverageKClassifier(LogisticRegression(max_iter=2000), average_k=1.5,
    ...                            random_state=0).fit(X_train, y_train)
    >>> sets = model.predict_set(X_test)
    >>> sets.shape
    (450, 10)
    >>> print(f"{mean_set_size(None, sets):.2f}")  # 1.5 up to sampling noise
    1.61
    >>> print(f"{set_accuracy_score(y_test, sets):.3f}")
    0.996
    """

    def __init__(self, estimator, *, average_k=5, calibration_fraction=0.2, cv=None,
                 mode="global", random_state=None):
        self.estimator = estimator
        self.average_k = average_k
        self.calibration_fraction = calibration_fraction
        self.cv = cv
        self.mode = mode
        self.random_state = random_state

    def _check_params(self):
        check_cv(self.cv)
        if self.mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {self.mode!r}.")
        k = self.average_k
        if isinstance(k, bool) or not isinstance(k, numbers.Real) or not np.isfinite(k) or k <= 0:
            raise ValueError(f"average_k must be a positive number of labels per set, got {k!r}.")
        check_has_scores(self.estimator)

    def fit(self, X, y):
        """Fit the estimator (unless ``cv="prefit"``), then the threshold.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Whatever the estimator accepts.
        y : array-like of shape (n_samples,)
            Class labels.

        Returns
        -------
        self : AverageKClassifier
            The fitted meta-estimator.
        """
        self._check_params()
        X, y = indexable(X, y)
        y = column_or_1d(np.asarray(y), warn=True)
        check_classification_targets(y)
        n_classes = check_two_classes(y, type(self).__name__)
        if self.cv is None and self.average_k >= n_classes:
            raise ValueError(
                f"average_k={self.average_k} must be smaller than the number of classes "
                f"({n_classes}): sets of all classes say nothing."
            )
        if self.cv == "prefit":
            check_is_fitted(self.estimator)
            self.estimator_ = self.estimator
            X_cal, y_cal = X, y
        else:
            fraction = check_fraction(self.calibration_fraction, "calibration_fraction")
            X_fit, y_fit, X_cal, y_cal = calibration_split(X, y, fraction, self.random_state)
            self.estimator_ = clone(self.estimator).fit(X_fit, y_fit)
        self.classes_ = np.asarray(self.estimator_.classes_)
        n_classes = len(self.classes_)
        if self.average_k >= n_classes:
            raise ValueError(
                f"average_k={self.average_k} must be smaller than the number of classes "
                f"({n_classes}): sets of all classes say nothing."
            )
        y_index = encode_calibration_labels(y_cal, self.classes_)
        missing = np.setdiff1d(np.arange(n_classes), y_index)
        if missing.size:
            raise ValueError(
                f"The calibration data miss {missing.size} of the {n_classes} classes "
                f"({self.classes_[missing][:10].tolist()}...): the threshold would not "
                "reflect them. Give calibration data with every class (with cv=None, "
                "raise calibration_fraction)."
            )
        self.temperature_ = None
        if hasattr(self.estimator_, "predict_proba"):
            proba = self._proba(X_cal)
        else:
            logits, _ = scores_as_logits(self.estimator_, X_cal)
            self.temperature_ = fit_temperature(logits, y_index)
            proba = softmax(logits / self.temperature_, axis=1)
        if self.mode == "global":
            self.threshold_ = _global_threshold(proba, self.average_k)
        else:
            self.threshold_ = _classwise_thresholds(proba, y_index, self.average_k)
        self.calibration_set_size_ = float((proba >= self.threshold_).sum(axis=1).mean())
        if hasattr(self.estimator_, "n_features_in_"):
            self.n_features_in_ = self.estimator_.n_features_in_
        return self

    def _proba(self, X):
        if self.temperature_ is None:
            proba, _, _ = class_scores(self.estimator_, X, response_method="predict_proba")
            return proba
        logits, _ = scores_as_logits(self.estimator_, X)
        return softmax(logits / self.temperature_, axis=1)

    def predict_proba(self, X):
        """The probabilities that are thresholded (see the class description).

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Samples, as the wrapped estimator takes them.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Class probabilities, columns aligned with ``classes_``.
        """
        check_is_fitted(self)
        return self._proba(X)

    def predict_set(self, X):
        """The prediction set of each sample, one column per class of ``classes_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Samples, as the wrapped estimator takes them.

        Returns
        -------
        sets : ndarray of bool, shape (n_samples, n_classes)
            ``sets[i, j]`` is True when ``classes_[j]`` is in the set of sample
            ``i``. Sets may be empty.
        """
        check_is_fitted(self)
        return self._proba(X) >= self.threshold_

    def predict(self, X):
        """The estimator's prediction.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Samples, as the wrapped estimator takes them.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            The most likely label of each sample.
        """
        check_is_fitted(self)
        return self.estimator_.predict(X)

    def decision_function(self, X):
        """The estimator's scores (``predict_proba`` when it has no decision_function).

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Samples, as the wrapped estimator takes them.

        Returns
        -------
        scores : ndarray of shape (n_samples, n_classes), or (n_samples,) for binary
            The wrapped estimator's scores (for binary problems one score, where
            positive values favour ``classes_[1]``).
        """
        check_is_fitted(self)
        if hasattr(self.estimator_, "decision_function"):
            return self.estimator_.decision_function(X)
        proba = self._proba(X)
        return proba[:, 1] - proba[:, 0] if proba.shape[1] == 2 else proba

    def predict_topk(self, X, k=5):
        """The ``k`` best labels of the estimator, best first (:func:`sktopk.predict_topk`).

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Samples, as the wrapped estimator takes them.
        k : int, default=5
            Number of labels per sample.

        Returns
        -------
        labels : ndarray of shape (n_samples, k)
            The k best labels of each sample, best first.
        """
        check_is_fitted(self)
        return predict_topk(self.estimator_, X, k)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = get_tags(self.estimator)
        tags.input_tags = inner.input_tags
        tags.classifier_tags.multi_class = True
        return tags
