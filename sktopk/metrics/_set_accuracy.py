"""Metrics of prediction sets: accuracy (the truth is in the set) and mean size."""

import numpy as np
from sklearn.utils.validation import column_or_1d

from ._top_k_accuracy import (
    _aggregate,
    _check_average,
    _check_sample_weight,
    _check_y_true,
    _encode,
    _factorize,
)

__all__ = ["mean_set_size", "set_accuracy_score"]


def _check_sets(y_pred_set, n_samples):
    y_pred_set = np.asarray(y_pred_set)
    if y_pred_set.ndim == 3 and y_pred_set.shape[2] == 1:
        # MAPIE's predict_set returns (n_samples, n_classes, n_confidence_levels).
        y_pred_set = y_pred_set[:, :, 0]
    if y_pred_set.ndim != 2 or y_pred_set.shape[0] != n_samples:
        raise ValueError(
            f"y_pred_set must be a boolean array of shape ({n_samples}, n_classes) to match "
            f"y_true, got shape {y_pred_set.shape}. For several confidence levels of MAPIE, "
            "pass one level at a time (y_pred_set[:, :, i])."
        )
    if y_pred_set.dtype != bool:
        if y_pred_set.dtype.kind not in "biu" or not np.isin(y_pred_set, (0, 1)).all():
            raise TypeError(
                "y_pred_set must be boolean (or hold only 0 and 1): entry [i, j] says "
                f"whether labels[j] is in the set of sample i; got dtype {y_pred_set.dtype}."
            )
        y_pred_set = y_pred_set.astype(bool)
    return y_pred_set


def _prepare_sets(y_true, y_pred_set, labels, sample_weight):
    y_true = _check_y_true(y_true)
    n_samples = y_true.shape[0]
    y_pred_set = _check_sets(y_pred_set, n_samples)
    n_columns = y_pred_set.shape[1]
    if labels is None:
        labels = np.arange(n_columns)
        if not np.issubdtype(np.asarray(y_true).dtype, np.integer):
            raise ValueError(
                "y_true does not hold integer labels 0..n_classes-1: pass labels=, the "
                "label of each column of y_pred_set (e.g. estimator.classes_)."
            )
    labels = column_or_1d(np.asarray(labels))
    if len(labels) != n_columns:
        raise ValueError(
            f"labels has {len(labels)} entries but y_pred_set has {n_columns} columns; give "
            "one label per column."
        )
    if _factorize(labels)[1] != len(labels):
        raise ValueError("labels must not contain duplicates.")
    y_index = _encode(y_true, labels)
    unknown = y_index < 0
    if unknown.any():
        missing = list(dict.fromkeys(y_true[unknown].tolist()))
        raise ValueError(f"y_true contains labels not in labels: {missing[:10]}.")
    sample_weight = _check_sample_weight(sample_weight, n_samples)
    return y_true, y_pred_set, y_index, sample_weight


def set_accuracy_score(y_true, y_pred_set, *, average="micro", labels=None, sample_weight=None):
    """Fraction of samples whose true label is in their prediction set (coverage).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels.
    y_pred_set : array-like of bool, shape (n_samples, n_classes)
        ``y_pred_set[i, j]`` is True when ``labels[j]`` is in the set of sample
        ``i``, as returned by :meth:`sktopk.AverageKClassifier.predict_set`. The
        ``(n_samples, n_classes, 1)`` output of MAPIE's ``predict_set`` is
        accepted.
    average : {"micro", "macro"}, default="micro"
        ``"micro"``: (weighted) fraction of samples whose set holds their label
        (MAPIE's ``classification_coverage_score``). ``"macro"``: unweighted mean
        over the classes present in ``y_true`` of that fraction within each
        class (class-conditional coverage averaged over classes).
    labels : array-like of shape (n_classes,), default=None
        Label of each column of ``y_pred_set`` (e.g. ``estimator.classes_``).
        Defaults to ``0, ..., n_classes - 1``.
    sample_weight : array-like of shape (n_samples,), default=None
        Non-negative sample weights.

    Returns
    -------
    score : float
        In [0, 1]; higher is better, but compare sets only at equal mean size
        (:func:`mean_set_size`): the set of all classes always scores 1.

    See Also
    --------
    mean_set_size : The other half of a set-valued evaluation.
    top_k_accuracy_score : The accuracy of the fixed-size top-K sets.

    Examples
    --------
    >>> import numpy as np
    >>> from sktopk.metrics import set_accuracy_score
    >>> sets = np.array([[True, True, False],
    ...                  [False, True, False],
    ...                  [False, False, True],
    ...                  [True, False, False]])
    >>> set_accuracy_score([0, 1, 2, 2], sets)
    0.75
    >>> set_accuracy_score([0, 1, 2, 2], sets, average="macro")  # (1 + 1 + 1/2) / 3
    0.8333...
    """
    average = _check_average(average)
    _, y_pred_set, y_index, sample_weight = _prepare_sets(y_true, y_pred_set, labels,
                                                          sample_weight)
    hits = y_pred_set[np.arange(len(y_index)), y_index]
    return float(_aggregate(hits, y_index, y_pred_set.shape[1], average, sample_weight)[0])


def mean_set_size(y_true, y_pred_set, *, average="micro", labels=None, sample_weight=None):
    """Mean number of labels in the prediction sets.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or None
        True labels; only used by ``average="macro"`` (may be None otherwise).
    y_pred_set : array-like of bool, shape (n_samples, n_classes)
        Prediction sets, as in :func:`set_accuracy_score`.
    average : {"micro", "macro"}, default="micro"
        ``"micro"``: (weighted) mean over samples (MAPIE's
        ``classification_mean_width_score``). ``"macro"``: unweighted mean over
        the classes present in ``y_true`` of the mean set size of their samples.
    labels : array-like of shape (n_classes,), default=None
        As in :func:`set_accuracy_score`.
    sample_weight : array-like of shape (n_samples,), default=None
        Non-negative sample weights.

    Returns
    -------
    size : float
        Lower is better at equal accuracy.

    See Also
    --------
    set_accuracy_score : Whether the sets hold the truth.

    Examples
    --------
    >>> import numpy as np
    >>> from sktopk.metrics import mean_set_size
    >>> sets = np.array([[True, True, False],
    ...                  [False, True, False],
    ...                  [False, False, True],
    ...                  [True, False, False]])
    >>> mean_set_size(None, sets)
    1.25
    >>> mean_set_size([0, 1, 2, 2], sets, average="macro")  # (2 + 1 + 1) / 3
    1.333...
    """
    average = _check_average(average)
    if y_true is None and average == "macro":
        raise ValueError("average='macro' needs y_true, the classes to average over.")
    if average == "micro":  # the labels play no part: any y_true, no labels= needed
        y_pred_set = np.asarray(y_pred_set)
        if y_true is None:
            n_samples = y_pred_set.shape[0] if y_pred_set.ndim else 0
        else:
            n_samples = _check_y_true(y_true).shape[0]
        y_pred_set = _check_sets(y_pred_set, n_samples)
        sample_weight = _check_sample_weight(sample_weight, n_samples)
        return float(np.average(y_pred_set.sum(axis=1), weights=sample_weight))
    _, y_pred_set, y_index, sample_weight = _prepare_sets(y_true, y_pred_set, labels,
                                                          sample_weight)
    sizes = y_pred_set.sum(axis=1).astype(np.float64)
    return float(_aggregate(sizes, y_index, y_pred_set.shape[1], average, sample_weight)[0])
