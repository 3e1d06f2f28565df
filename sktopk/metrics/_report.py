"""Top-K accuracy of long-tailed data: overall and per frequency group of classes."""

import numbers

import numpy as np

from ._top_k_accuracy import _aggregate, _check_average, _check_ks, _prepare

__all__ = ["top_k_report"]


def _check_thresholds(thresholds):
    try:
        low, high = thresholds
    except (TypeError, ValueError):
        raise ValueError(
            f"thresholds must be a pair (low, high) of training counts, got {thresholds!r}."
        ) from None
    for value in (low, high):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
            raise ValueError(f"thresholds must hold non-negative numbers, got {thresholds!r}.")
    if low > high:
        raise ValueError(f"thresholds must be increasing (low <= high), got {thresholds!r}.")
    return low, high


def top_k_report(y_true, y_score, class_counts, *, ks=(1, 5), thresholds=(20, 100),
                 labels=None, group_average="macro", output_dict=False, digits=3):
    """Top-K accuracy overall and for the many-, medium- and few-shot classes.

    The report of long-tailed recognition (Liu et al., 2019, OLTR): the classes
    are split by their number of *training* samples into ``many`` (more than
    ``thresholds[1]``), ``medium`` (``thresholds[0]`` to ``thresholds[1]``) and
    ``few`` (fewer than ``thresholds[0]``), and top-K accuracy is given for
    each group, beside the micro and macro averages over all classes.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels of the evaluation samples.
    y_score : array-like of shape (n_samples, n_classes)
        Scores; column ``j`` belongs to ``labels[j]``.
    class_counts : array-like of shape (n_classes,)
        Number of training samples of each class, aligned with the columns of
        ``y_score`` (e.g. ``np.bincount(y_train)``, or
        ``ImbalancedTopKClassifier.class_counts_``).
    ks : iterable of int, default=(1, 5)
        The values of K.
    thresholds : (int, int), default=(20, 100)
        ``(low, high)``: many-shot classes have ``count > high``, medium-shot
        ``low <= count <= high``, few-shot ``count < low``.
    labels : array-like of shape (n_classes,), default=None
        Label of each column of ``y_score`` (e.g. ``estimator.classes_``);
        defaults to the sorted labels of ``y_true``, which must then hold every
        class.
    group_average : {"macro", "micro"}, default="macro"
        Average inside each group: over its classes present in ``y_true``
        (``"macro"``, each class counts the same) or over its samples.
    output_dict : bool, default=False
        Return a dict instead of a text table.
    digits : int, default=3
        Decimals of the text table.

    Returns
    -------
    report : str or dict
        Rows ``"micro"``, ``"macro"``, ``"many"``, ``"medium"``, ``"few"``; each
        row holds ``"n_classes"`` (classes with a column; for the groups, those
        in the group), ``"n_samples"`` (evaluation samples) and ``"top-K"`` for
        each K. A group without evaluation samples has NaN accuracies. The dict
        turns into a table with ``pandas.DataFrame.from_dict(report,
        orient="index")``.

    See Also
    --------
    top_k_accuracy_score : One number.

    Examples
    --------
    >>> import numpy as np
    >>> from sktopk.metrics import top_k_report
    >>> y_true = np.array([0, 0, 1, 2])
    >>> y_score = np.array([[0.6, 0.3, 0.1],
    ...                     [0.2, 0.5, 0.3],
    ...                     [0.1, 0.7, 0.2],
    ...                     [0.5, 0.1, 0.4]])
    >>> print(top_k_report(y_true, y_score, class_counts=[150, 50, 5], ks=(1, 2)))
                      classes  samples   top-1   top-2
    micro                   3        4   0.500   0.750
    macro                   3        4   0.500   0.833
    many (>100)             1        2   0.500   0.500
    medium (20-100)         1        1   1.000   1.000
    few (<20)               1        1   0.000   1.000
    """
    ks = _check_ks(ks)
    low, high = _check_thresholds(thresholds)
    group_average = _check_average(group_average)
    rank, y_index, n_classes, _ = _prepare(y_true, y_score, labels, None)
    counts = np.asarray(class_counts)
    if counts.shape != (n_classes,):
        raise ValueError(
            f"class_counts must have shape ({n_classes},), one training count per column of "
            f"y_score, got shape {counts.shape}."
        )
    if counts.dtype.kind not in "iuf" or not np.isfinite(counts).all() or (counts < 0).any():
        raise ValueError("class_counts must hold non-negative training sample counts.")
    hits = rank[None, :] < ks[:, None]
    names = [f"top-{k}" for k in ks]

    def row(mask_classes, average):
        in_group = mask_classes[y_index]
        entry = {"n_classes": int(mask_classes.sum()), "n_samples": int(in_group.sum())}
        if in_group.any():
            values = _aggregate(hits[:, in_group], y_index[in_group], n_classes, average, None)
        else:
            values = np.full(len(ks), np.nan)
        entry.update({name: float(v) for name, v in zip(names, values, strict=True)})
        return entry

    every = np.ones(n_classes, dtype=bool)
    report = {"micro": row(every, "micro"), "macro": row(every, "macro"),
              "many": row(counts > high, group_average),
              "medium": row((counts >= low) & (counts <= high), group_average),
              "few": row(counts < low, group_average)}
    if output_dict:
        return report
    titles = {"micro": "micro", "macro": "macro", "many": f"many (>{high:g})",
              "medium": f"medium ({low:g}-{high:g})", "few": f"few (<{low:g})"}
    width = max(len(t) for t in titles.values()) + 2
    cell = max(digits + 4, *(len(n) for n in names)) + 1
    lines = [" " * width + f"{'classes':>8} {'samples':>8}" + "".join(f"{n:>{cell}}"
                                                                       for n in names)]
    for key, entry in report.items():
        lines.append(f"{titles[key]:<{width}}{entry['n_classes']:>8} {entry['n_samples']:>8}"
                     + "".join(f"{entry[n]:>{cell}.{digits}f}" for n in names))
    return "\n".join(lines)
