"""Temperature scaling: probabilities from any classifier's scores.

Also the two pieces shared with :mod:`sktopk._average_k`: the stratified
calibration split and the fitting of a temperature on held-out scores.
"""

import numbers

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.model_selection import train_test_split
from sklearn.utils import _safe_indexing, check_random_state, get_tags
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, indexable

from ._predict_topk import class_scores
from .metrics._top_k_accuracy import _encode

__all__ = ["TemperatureScaledClassifier"]

_SCORE_METHODS = ("decision_function", "predict_log_proba", "predict_proba")
_SMALLEST_PROBABILITY = 1e-300


def check_has_scores(estimator, name="estimator"):
    """TypeError unless the (possibly unfitted) estimator can give class scores."""
    if not any(hasattr(estimator, m) for m in _SCORE_METHODS):
        raise TypeError(
            f"{name} {type(estimator).__name__} has neither decision_function nor "
            "predict_proba: class scores are needed to build probabilities or sets."
        )


def check_two_classes(y, owner):
    n_classes = len(np.unique(y))
    if n_classes < 2:
        raise ValueError(f"{owner} needs at least 2 classes; got {n_classes} class.")
    return n_classes


def check_fraction(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}.")
    return float(value)


def check_cv(cv):
    if cv is not None and not (isinstance(cv, str) and cv == "prefit"):
        raise ValueError(f"cv must be None (fit the estimator on part of the data) or "
                         f"'prefit' (the estimator is already fitted), got {cv!r}.")
    return cv


def calibration_split(X, y, fraction, random_state):
    """Stratified (fit part, calibration part) of ``X, y``; every class in both."""
    y = np.asarray(y)
    classes, counts = np.unique(y, return_counts=True)
    if (counts < 2).any():
        rare = classes[counts < 2].tolist()[:10]
        raise ValueError(
            f"Classes {rare} have a single sample: they cannot be both in the fitted part and "
            "in the calibration part. Drop the rarest classes, or fit the estimator "
            "yourself and calibrate on separate data with cv='prefit'."
        )
    n_cal = int(np.ceil(fraction * len(y)))
    if n_cal < len(classes) or len(y) - n_cal < len(classes):
        raise ValueError(
            f"calibration_fraction={fraction} puts {n_cal} of {len(y)} samples in the "
            f"calibration part; both parts need at least one sample of each of the "
            f"{len(classes)} classes. Change calibration_fraction or use cv='prefit'."
        )
    index = np.arange(len(y))
    fit_idx, cal_idx = train_test_split(index, test_size=n_cal, stratify=y,
                                        random_state=check_random_state(random_state))
    fit_idx, cal_idx = _every_class_in_both(fit_idx, cal_idx, y)
    return (_safe_indexing(X, fit_idx), y[fit_idx], _safe_indexing(X, cal_idx), y[cal_idx])


def _every_class_in_both(fit_idx, cal_idx, y):
    """Swap samples between the parts until each holds every class.

    ``train_test_split`` rounds each class's share, so a class of two or three
    samples can land whole in one part. A class missing from a part receives one
    of its samples from the other part, which gives back a sample of the class it
    holds most of (at least two, since that part has at least one sample per
    class); both parts keep their sizes and a valid split is left unchanged.
    """
    parts = [list(fit_idx), list(cal_idx)]
    for receiver in (0, 1):
        giver = parts[1 - receiver]
        for label in np.setdiff1d(np.unique(y), y[parts[receiver]]):
            parts[receiver].append(giver.pop(int(np.flatnonzero(y[giver] == label)[0])))
            values, counts = np.unique(y[parts[receiver]], return_counts=True)
            spare = values[np.argmax(counts)]
            back = int(np.flatnonzero(y[parts[receiver]] == spare)[-1])
            giver.append(parts[receiver].pop(back))
    return np.asarray(parts[0]), np.asarray(parts[1])


def encode_calibration_labels(y, classes):
    """Column of each calibration label in ``classes``; ValueError for unknown labels."""
    y = column_or_1d(np.asarray(y))
    idx = _encode(y, classes)  # also for labels of mixed types (str against int)
    unknown = idx < 0
    if unknown.any():
        raise ValueError(
            f"The calibration data holds labels the estimator was not fitted on: "
            f"{list(dict.fromkeys(y[unknown].tolist()))[:10]}."
        )
    return idx


def fit_temperature(logits, y_index):
    """Temperature ``T > 0`` minimising the log loss of ``softmax(logits / T)``.

    The log loss is convex in ``1 / T``; it is minimised over ``log(1 / T)`` in a
    range wide enough for any score scale (``1e-4`` to ``1e4`` times
    ``1 / std(logits)``).
    """
    if not np.isfinite(logits).all():
        raise ValueError(
            "The estimator's scores hold infinite values: no temperature can scale them "
            "into probabilities. Check the estimator (did its training diverge?)."
        )
    logits = logits - logits.max(axis=1, keepdims=True)
    rows = np.arange(len(y_index))
    spread = float(np.std(logits)) or 1.0

    def nll(log_beta):
        z = logits * (np.exp(log_beta) / spread)
        return -np.mean(log_softmax(z, axis=1)[rows, y_index])

    best = minimize_scalar(nll, bounds=(np.log(1e-4), np.log(1e4)), method="bounded",
                           options={"xatol": 1e-6})
    return float(spread / np.exp(best.x))


def scores_as_logits(estimator, X):
    """Scores of the estimator on a logit scale, and its classes.

    ``decision_function`` values are taken as they are (sktopk's hinge and
    softmax scores are logits up to a scale the temperature absorbs); a model
    with only ``predict_proba`` gives ``log(proba)``.
    """
    with np.errstate(divide="ignore"):  # predict_log_proba's log(0), floored below
        scores, classes, method = class_scores(
            estimator, X, response_method=("decision_function", "predict_log_proba",
                                           "predict_proba"))
    if method == "predict_proba":
        with np.errstate(divide="ignore"):
            scores = np.log(scores)
    if method != "decision_function":
        scores = _finite_log_probabilities(scores)
    return scores, classes


def _finite_log_probabilities(log_proba):
    """``log_proba`` with each -inf (a probability of zero: trees, k-NN) made finite.

    A zero gets ``log(1e-300)`` below the smallest finite value of its row: it
    still ranks last, every finite value keeps its place (GaussianNB gives
    log-probabilities far below -690), and the temperature stays finite.
    """
    zero = np.isneginf(log_proba)
    if not zero.any():
        return log_proba  # (+inf is left for fit_temperature to refuse)
    finite = np.isfinite(log_proba)
    row_min = np.where(finite, log_proba, np.inf).min(axis=1, keepdims=True)
    row_min = np.where(np.isfinite(row_min), np.minimum(row_min, 0.0), 0.0)
    return np.where(zero, row_min + np.log(_SMALLEST_PROBABILITY), log_proba)


class TemperatureScaledClassifier(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Probabilities ``softmax(scores / T)`` for any classifier, ``T`` fitted on held-out data.

    Temperature scaling (Guo et al., 2017) turns the scores of a classifier
    without ``predict_proba`` (sktopk's hinge-loss models, ``LinearSVC``...)
    into probabilities with one parameter, fitted by minimising the log loss on
    data the estimator was not trained on. The ranking of the classes does not
    change, so top-K predictions and accuracy are those of the estimator. The
    softmax does not change when a constant is added to a row of scores, the
    invariance of the top-K hinge losses, so the probabilities depend only on
    what the training loss determines.

    Use it to give MAPIE's ``SplitConformalClassifier`` the ``predict_proba``
    it needs (see :ref:`set_valued`).

    Parameters
    ----------
    estimator : classifier
        A classifier (or pipeline) with ``decision_function`` or ``predict_proba``
        (then ``log(predict_proba)`` is scaled).
    calibration_fraction : float, default=0.2
        With ``cv=None``, the stratified share of the data held out from the
        estimator's training to fit the temperature.
    cv : {None, "prefit"}, default=None
        ``None``: ``fit`` trains a clone of the estimator on the rest of the data
        and fits the temperature on the held-out part. ``"prefit"``: the estimator
        is already fitted (it is not cloned nor refitted); ``fit(X, y)`` fits
        the temperature only, on data the estimator has not seen.
    random_state : int, RandomState instance or None, default=None
        Seed of the stratified calibration split.

    Attributes
    ----------
    estimator_ : classifier
        The fitted estimator (the given one with ``cv="prefit"``).
    classes_ : ndarray of shape (n_classes,)
        Class labels, from the estimator.
    temperature_ : float
        The fitted temperature.
    n_features_in_ : int
        Number of features, when the estimator has it.

    See Also
    --------
    sklearn.calibration.CalibratedClassifierCV : One-vs-rest calibrators; with
        many classes, a single temperature is cheaper and keeps the ranking.
    AverageKClassifier : Prediction sets of a fixed average size.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.svm import LinearSVC
    >>> from sktopk import TemperatureScaledClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> model = TemperatureScaledClassifier(LinearSVC(), random_state=0).fit(X, y)
    >>> model.predict_proba(X[[0, 70, 120]]).round(2)
    array([[1.  , 0.  , 0.  ],
           [0.  , 0.02, 0.98],
           [0.  , 0.  , 1.  ]])
    """

    def __init__(self, estimator, *, calibration_fraction=0.2, cv=None, random_state=None):
        self.estimator = estimator
        self.calibration_fraction = calibration_fraction
        self.cv = cv
        self.random_state = random_state

    def fit(self, X, y):
        """Fit the estimator (unless ``cv="prefit"``) and the temperature.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Whatever the estimator accepts.
        y : array-like of shape (n_samples,)
            Class labels.

        Returns
        -------
        self : TemperatureScaledClassifier
            The fitted wrapper.
        """
        check_cv(self.cv)
        check_has_scores(self.estimator)
        X, y = indexable(X, y)
        y = column_or_1d(np.asarray(y), warn=True)
        check_classification_targets(y)
        check_two_classes(y, type(self).__name__)
        if self.cv == "prefit":
            check_is_fitted(self.estimator)
            self.estimator_ = self.estimator
            X_cal, y_cal = X, y
        else:
            fraction = check_fraction(self.calibration_fraction, "calibration_fraction")
            X_fit, y_fit, X_cal, y_cal = calibration_split(X, y, fraction, self.random_state)
            self.estimator_ = clone(self.estimator).fit(X_fit, y_fit)
        logits, classes = scores_as_logits(self.estimator_, X_cal)
        self.classes_ = classes
        self.temperature_ = fit_temperature(logits, encode_calibration_labels(y_cal, classes))
        if hasattr(self.estimator_, "n_features_in_"):
            self.n_features_in_ = self.estimator_.n_features_in_
        return self

    def predict_proba(self, X):
        """Calibrated class probabilities, columns in the order of ``classes_``.

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
        logits, _ = scores_as_logits(self.estimator_, X)
        return softmax(logits / self.temperature_, axis=1)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Samples, as the wrapped estimator takes them.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            Logarithm of the class probabilities, columns aligned with ``classes_``.
        """
        check_is_fitted(self)
        logits, _ = scores_as_logits(self.estimator_, X)
        return log_softmax(logits / self.temperature_, axis=1)

    def predict(self, X):
        """Most likely class (ties go to the earlier class in ``classes_``).

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Samples, as the wrapped estimator takes them.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            The most likely label of each sample.
        """
        proba = self.predict_proba(X)  # checks that the model is fitted
        return self.classes_[np.argmax(proba, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = get_tags(self.estimator)
        tags.input_tags = inner.input_tags
        tags.classifier_tags.multi_class = True
        return tags
