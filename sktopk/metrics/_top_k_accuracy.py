"""Top-K accuracy, micro- and macro-averaged, and its curve over K."""

import warnings

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_array, column_or_1d

from .._ranking import _check_k, binary_scores_to_2d, true_label_rank

_AVERAGES = ("micro", "macro")


def _check_average(average):
    if average not in _AVERAGES:
        raise ValueError(f"average must be one of {_AVERAGES}, got {average!r}.")
    return average


def _check_ks(ks):
    try:
        ks = np.asarray(list(ks))
    except TypeError:
        raise TypeError(f"ks must be an iterable of positive integers, got {ks!r}.") from None
    if ks.ndim != 1 or ks.size == 0:
        raise ValueError("ks must be a non-empty 1-D sequence of positive integers.")
    if ks.dtype.kind not in "iu":
        raise TypeError(f"ks must hold positive integers, got dtype {ks.dtype}.")
    if ks.min() < 1:
        raise ValueError(f"ks must hold positive integers, got {int(ks.min())}.")
    return ks.astype(np.int64)


def _encode(y, classes):
    """Index of each value of ``y`` in ``classes``; -1 where it is absent."""
    y = np.asarray(y)
    classes = np.asarray(classes)
    numeric = "biuf"
    comparable = (y.dtype.kind in numeric and classes.dtype.kind in numeric) or (
        y.dtype.kind in "US" and classes.dtype.kind == y.dtype.kind
    )
    if comparable and classes.size:
        sorter = np.argsort(classes, kind="stable")
        pos = np.searchsorted(classes, y, sorter=sorter)
        idx = sorter[np.minimum(pos, classes.size - 1)]
        return np.where(classes[idx] == y, idx, -1).astype(np.intp)
    # Object arrays or mixed kinds (e.g. str labels against int classes_).
    lookup = {}
    for i, c in enumerate(classes.tolist()):
        lookup.setdefault(c, i)
    return np.fromiter((lookup.get(v, -1) for v in y.tolist()), dtype=np.intp, count=y.size)


def _factorize(y):
    """Integer group code of each value of ``y`` and the number of groups."""
    try:
        uniques, inverse = np.unique(y, return_inverse=True)
        return inverse.reshape(-1), len(uniques)
    except TypeError:  # unorderable mixed objects
        lookup = {}
        codes = np.fromiter(
            (lookup.setdefault(v, len(lookup)) for v in np.asarray(y).tolist()),
            dtype=np.intp,
            count=len(y),
        )
        return codes, len(lookup)


def _check_y_true(y_true):
    y_true = check_array(y_true, ensure_2d=False, dtype=None, input_name="y_true")
    y_true = column_or_1d(y_true)
    y_type = type_of_target(y_true, input_name="y_true")
    if y_type not in ("binary", "multiclass"):
        raise ValueError(
            f"y_true must hold class labels (binary or multiclass), got target type {y_type!r}."
        )
    return y_true


def _check_sample_weight(sample_weight, n_samples):
    if sample_weight is None:
        return None
    sample_weight = np.asarray(sample_weight, dtype=np.float64)
    if sample_weight.shape != (n_samples,):
        raise ValueError(
            f"sample_weight must have shape ({n_samples},) to match y_true, got shape "
            f"{sample_weight.shape}."
        )
    if not np.isfinite(sample_weight).all() or (sample_weight < 0).any():
        raise ValueError("sample_weight must hold finite, non-negative weights.")
    if not sample_weight.sum() > 0:
        raise ValueError("sample_weight sums to zero: no sample has weight to average over.")
    return sample_weight


def _aggregate(hits, groups, n_groups, average, sample_weight):
    """Micro or macro average of the boolean ``hits`` (one row per k, or a vector)."""
    hits = np.atleast_2d(hits)
    if average == "micro":
        return np.array([np.average(row, weights=sample_weight) for row in hits])
    weight = np.ones(hits.shape[1]) if sample_weight is None else sample_weight
    class_weight = np.bincount(groups, weights=weight, minlength=n_groups)
    # A class is "present" when its samples carry positive total weight.
    present = class_weight > 0
    out = np.empty(hits.shape[0])
    for i, row in enumerate(hits):
        class_hits = np.bincount(groups, weights=weight * row, minlength=n_groups)
        out[i] = np.mean(class_hits[present] / class_weight[present])
    return out


def _prepare(y_true, y_score, labels, sample_weight):
    """Validate the inputs; return (rank of the true label, its column, n_classes, weights)."""
    y_true = _check_y_true(y_true)
    try:
        y_score = np.asarray(y_score, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError("y_score must be an array of real-valued scores.") from None
    n_samples = y_true.shape[0]
    if y_score.ndim not in (1, 2) or y_score.shape[0] != n_samples:
        raise ValueError(
            f"y_score must have shape ({n_samples},) or ({n_samples}, n_classes) to match "
            f"y_true, got shape {y_score.shape}."
        )
    if not np.isfinite(y_score).all():
        raise ValueError("y_score contains NaN or infinite values.")
    sample_weight = _check_sample_weight(sample_weight, n_samples)
    binary = y_score.ndim == 1 or y_score.shape[1] == 1
    n_columns = 2 if binary else y_score.shape[1]

    if labels is None:
        classes = np.unique(y_true)
        if len(classes) != n_columns:
            raise ValueError(
                f"y_true holds {len(classes)} distinct labels but y_score has {n_columns} "
                f"{'(binary) ' if binary else ''}columns. When y_true does not contain every "
                "class, pass labels=, the label of each column of y_score "
                "(e.g. estimator.classes_)."
            )
    else:
        classes = column_or_1d(np.asarray(labels))
        if _factorize(classes)[1] != len(classes):
            raise ValueError("labels must not contain duplicates.")
        if len(classes) != n_columns:
            raise ValueError(
                f"labels has {len(classes)} entries but y_score has {n_columns} "
                f"{'(binary) ' if binary else ''}columns; give one label per column."
            )

    y_index = _encode(y_true, classes)
    unknown = y_index < 0
    if unknown.any():
        missing = list(dict.fromkeys(y_true[unknown].tolist()))
        raise ValueError(f"y_true contains labels not in labels: {missing[:10]}.")

    if binary:
        # Same reading as sklearn.metrics.top_k_accuracy_score: scores all in [0, 1]
        # are probabilities of the second class, anything else decision values.
        y_score = y_score.reshape(-1)
        in_unit = y_score.min() >= 0 and y_score.max() <= 1
        y_score = binary_scores_to_2d(y_score, kind="proba" if in_unit else "decision")
    rank = true_label_rank(y_score, y_index)
    return rank, y_index, len(classes), sample_weight


def top_k_accuracy_score(y_true, y_score, *, k=5, average="micro", labels=None, sample_weight=None):
    """Fraction of samples whose true label is among the ``k`` highest scores.

    ``average="micro"`` is the usual top-K accuracy and agrees with
    :func:`sklearn.metrics.top_k_accuracy_score` wherever that one is defined and
    the scores have no tie at the k-th place. ``average="macro"`` is the mean,
    over the classes present in ``y_true``, of each class's top-K hit rate, the
    model-selection metric for long-tailed data (Garcin et al., 2022).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels.
    y_score : array-like of shape (n_samples, n_classes) or (n_samples,)
        Scores, probabilities or decision values; higher means more likely. Column
        ``j`` belongs to ``labels[j]``. A 1-D array is a binary problem's score of
        the second label; as in scikit-learn, it is read as a probability
        (boundary 0.5) when all values lie in [0, 1], and as a decision value
        (boundary 0) otherwise. NaN or infinite values raise ``ValueError``.
    k : int, default=5
        Number of best-ranked classes that count as a hit. For ``k >= n_classes``
        every sample is a hit: the score is 1.0 and an
        :class:`~sklearn.exceptions.UndefinedMetricWarning` is emitted.
    average : {"micro", "macro"}, default="micro"
        ``"micro"``: (weighted) fraction of all samples that are hits.
        ``"macro"``: unweighted mean over the classes present in ``y_true`` of the
        (sample-weighted) fraction of that class's samples that are hits. A class
        whose samples all have zero weight counts as absent.
    labels : array-like of shape (n_classes,), default=None
        Label of each column of ``y_score``, in column order (unlike scikit-learn,
        any order is accepted). Defaults to the sorted unique labels of
        ``y_true``, in which case ``y_true`` must contain every class; when
        ``y_score`` has more columns than ``y_true`` has labels, pass ``labels``
        (e.g. ``estimator.classes_``).
    sample_weight : array-like of shape (n_samples,), default=None
        Non-negative sample weights.

    Returns
    -------
    score : float
        In [0, 1]; higher is better.

    See Also
    --------
    top_k_accuracy_curve : The score for several values of ``k`` at once.
    make_top_k_scorer : A scorer for ``GridSearchCV``, ``cross_validate``...
    sklearn.metrics.top_k_accuracy_score : The micro-averaged version in scikit-learn.

    Notes
    -----
    Ties: among equal scores the class of the lower column index ranks first
    (the order of a stable sort of ``-y_score``), the rule used by every sktopk
    estimator's ``predict_topk``. scikit-learn's function ranks the *higher*
    column index first among ties, so the two can differ when the true label is
    tied with other classes at the k-th place, and only then.

    Examples
    --------
    >>> import numpy as np
    >>> from sktopk.metrics import top_k_accuracy_score
    >>> y_true = np.array([0, 1, 2, 2])
    >>> y_score = np.array([[0.5, 0.2, 0.2],
    ...                     [0.3, 0.4, 0.2],
    ...                     [0.2, 0.4, 0.3],
    ...                     [0.7, 0.2, 0.1]])
    >>> top_k_accuracy_score(y_true, y_score, k=2)
    0.75
    >>> top_k_accuracy_score(y_true, y_score, k=2, average="macro")  # (1 + 1 + 1/2) / 3
    0.8333...
    """
    k = _check_k(k)
    average = _check_average(average)
    rank, y_index, n_classes, sample_weight = _prepare(y_true, y_score, labels, sample_weight)
    if k >= n_classes:
        warnings.warn(
            f"k={k} is not smaller than the number of classes ({n_classes}): every sample "
            "counts as a hit, so the score is 1.0 and says nothing about the model.",
            UndefinedMetricWarning,
            stacklevel=2,
        )
    score = _aggregate(rank < k, y_index, n_classes, average, sample_weight)
    return float(score[0])


def top_k_accuracy_curve(
    y_true, y_score, *, ks=range(1, 11), average="micro", labels=None, sample_weight=None
):
    """Top-K accuracy for each ``k`` in ``ks``, ranking the scores only once.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels.
    y_score : array-like of shape (n_samples, n_classes) or (n_samples,)
        Scores, as in :func:`top_k_accuracy_score`.
    ks : iterable of int, default=range(1, 11)
        Positive values of ``k``, in any order. Values ``>= n_classes`` give 1.0
        (without the warning of :func:`top_k_accuracy_score`: a curve naturally
        reaches 1).
    average : {"micro", "macro"}, default="micro"
        As in :func:`top_k_accuracy_score`.
    labels : array-like of shape (n_classes,), default=None
        As in :func:`top_k_accuracy_score`.
    sample_weight : array-like of shape (n_samples,), default=None
        As in :func:`top_k_accuracy_score`.

    Returns
    -------
    scores : ndarray of shape (len(ks),), float64
        ``scores[i] == top_k_accuracy_score(..., k=ks[i])``; non-decreasing in k.

    See Also
    --------
    top_k_accuracy_score : One value of ``k``.

    Examples
    --------
    >>> import numpy as np
    >>> from sktopk.metrics import top_k_accuracy_curve
    >>> y_true = np.array([0, 1, 2, 2])
    >>> y_score = np.array([[0.5, 0.2, 0.2],
    ...                     [0.3, 0.4, 0.2],
    ...                     [0.2, 0.4, 0.3],
    ...                     [0.7, 0.2, 0.1]])
    >>> top_k_accuracy_curve(y_true, y_score, ks=[1, 2, 3])
    array([0.5 , 0.75, 1.  ])
    """
    ks = _check_ks(ks)
    average = _check_average(average)
    rank, y_index, n_classes, sample_weight = _prepare(y_true, y_score, labels, sample_weight)
    return _aggregate(rank[None, :] < ks[:, None], y_index, n_classes, average, sample_weight)
