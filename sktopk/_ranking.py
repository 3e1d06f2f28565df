"""Ranking of class scores: the one tie rule shared by predictions and metrics.

Every place in sktopk that turns a score matrix into "the k best classes" goes
through this module, so that an estimator's ``predict_topk`` and the top-K scorers
of :mod:`sktopk.metrics` can never disagree about which classes are in the top k.

Tie rule
--------
Classes are ranked by decreasing score; among equal scores the class with the
**lower column index ranks first**. This is the order of a stable sort of
``-scores`` (``np.argsort(-scores, kind="stable")``). ``-0.0`` and ``0.0`` are
equal scores. NaN has no place in an order and is rejected.

(:func:`sklearn.metrics.top_k_accuracy_score` uses the opposite rule: among equal
scores the *higher* column index ranks first. The two agree whenever there are no
ties at the k-th position.)
"""

import numbers

import numpy as np

__all__ = ["binary_scores_to_2d", "top_k_indices", "true_label_rank"]

# Rank given to a true label that has no column (a class the model never saw): it
# is larger than any k, so such a sample is a miss at every k.
UNSEEN_RANK = np.iinfo(np.int64).max


def _check_k(k, name="k"):
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {k!r}.")
    if k < 1:
        raise ValueError(f"{name} must be a positive integer, got {k}.")
    return int(k)


def _as_score_matrix(scores, name="scores"):
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(
            f"{name} must have shape (n_samples, n_classes), got shape {scores.shape}. "
            "For the 1-D decision_function of a binary classifier, convert it first "
            "with binary_scores_to_2d."
        )
    if scores.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers, got dtype {scores.dtype}.")
    if scores.dtype.kind != "f":
        # Negating unsigned integers wraps around; rank on floats instead.
        scores = scores.astype(np.float64)
    if np.isnan(scores).any():
        raise ValueError(f"{name} contains NaN; NaN scores cannot be ranked.")
    return scores


def binary_scores_to_2d(scores, *, kind="decision"):
    """Turn the 1-D scores of a binary classifier into one column per class.

    scikit-learn binary classifiers return a 1-D ``decision_function`` whose
    positive values favour ``classes_[1]``. This helper returns the equivalent
    ``(n_samples, 2)`` matrix whose columns follow ``classes_``.

    Parameters
    ----------
    scores : array-like of shape (n_samples,)
        Decision values (``kind="decision"``, positive favours the second class)
        or probabilities of the second class (``kind="proba"``).
    kind : {"decision", "proba"}, default="decision"
        ``"decision"`` gives columns ``[-d, d]``; ``"proba"`` gives ``[1 - p, p]``.
        In both cases a score exactly at the boundary (``d == 0``, ``p == 0.5``)
        is a tie, which ranks the first class first.

    Returns
    -------
    scores_2d : ndarray of shape (n_samples, 2)

    Examples
    --------
    >>> from sktopk._ranking import binary_scores_to_2d
    >>> binary_scores_to_2d([1.5, -0.5])
    array([[-1.5,  1.5],
           [ 0.5, -0.5]])
    >>> binary_scores_to_2d([0.25], kind="proba")
    array([[0.75, 0.25]])
    """
    scores = np.asarray(scores)
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.ndim != 1:
        raise ValueError(f"binary scores must have shape (n_samples,), got shape {scores.shape}.")
    scores = scores.astype(np.float64, copy=False)
    if kind == "decision":
        return np.column_stack([-scores, scores])
    if kind == "proba":
        return np.column_stack([1.0 - scores, scores])
    raise ValueError(f"kind must be 'decision' or 'proba', got {kind!r}.")


def top_k_indices(scores, k):
    """Column indices of the ``k`` highest scores of each row, best first.

    Ties are broken towards the lower column index: the result equals
    ``np.argsort(-scores, axis=1, kind="stable")[:, :k]``, but costs
    ``O(n_classes)`` per row (plus ``O(k log k)`` to order the winners) instead of
    a full sort when ``k`` is small.

    Parameters
    ----------
    scores : array-like of shape (n_samples, n_classes)
        Real-valued class scores (any monotone transform gives the same answer).
        Infinite values are ranked as usual; NaN raises ``ValueError``.
    k : int
        Number of classes to return, ``1 <= k <= n_classes``.

    Returns
    -------
    indices : ndarray of shape (n_samples, k), dtype intp
        ``indices[i, 0]`` is the best column of row ``i``.

    Examples
    --------
    >>> import numpy as np
    >>> from sktopk._ranking import top_k_indices
    >>> top_k_indices(np.array([[0.1, 0.7, 0.2], [0.5, 0.5, 0.9]]), k=2)
    array([[1, 2],
           [2, 0]])
    """
    scores = _as_score_matrix(scores)
    k = _check_k(k)
    n_samples, n_classes = scores.shape
    if k > n_classes:
        raise ValueError(f"k={k} is larger than the number of classes ({n_classes}).")
    neg = -scores
    if n_samples == 0:
        return np.empty((0, k), dtype=np.intp)
    if 4 * k >= n_classes:
        return np.argsort(neg, axis=1, kind="stable")[:, :k]

    # Value of the k-th best score of each row. Every column with a strictly
    # better score is in the top k; the remaining places go to the columns tied
    # with the k-th value, lowest index first. (A bare argpartition could pick any
    # of the tied columns.)
    kth = np.partition(neg, k - 1, axis=1)[:, k - 1 : k]
    better = neg < kth
    tied = neg == kth
    n_free = k - better.sum(axis=1, keepdims=True)
    chosen = better | (tied & (np.cumsum(tied, axis=1) <= n_free))
    # nonzero walks row-major, so each row's k columns come out in increasing order.
    cols = np.nonzero(chosen)[1].reshape(n_samples, k)
    order = np.argsort(np.take_along_axis(neg, cols, axis=1), axis=1, kind="stable")
    return np.take_along_axis(cols, order, axis=1)


def true_label_rank(scores, y_index):
    """Rank of each row's true column under the tie rule (0 = best).

    ``rank < k`` exactly when ``y_index`` is among :func:`top_k_indices` of the row,
    for every ``k``. The rank is the number of columns with a strictly higher score
    plus the number of lower-index columns with an equal score.

    Parameters
    ----------
    scores : array-like of shape (n_samples, n_classes)
        Real-valued class scores.
    y_index : array-like of int, shape (n_samples,)
        Column of the true class of each row, or ``-1`` for a class without a
        column (never seen by the model): its rank is :data:`UNSEEN_RANK`, larger
        than any ``k``, so it is a miss at every ``k``.

    Returns
    -------
    rank : ndarray of shape (n_samples,), dtype int64

    Examples
    --------
    >>> import numpy as np
    >>> from sktopk._ranking import true_label_rank
    >>> true_label_rank(np.array([[0.5, 0.5, 0.9], [0.3, 0.2, 0.1]]), [1, 0])
    array([2, 0])
    """
    scores = _as_score_matrix(scores)
    y_index = np.asarray(y_index, dtype=np.intp)
    n_samples, n_classes = scores.shape
    if y_index.shape != (n_samples,):
        raise ValueError(f"y_index must have shape ({n_samples},), got shape {y_index.shape}.")
    if n_samples and (y_index.min() < -1 or y_index.max() >= n_classes):
        raise ValueError(f"y_index must lie in [-1, {n_classes}).")
    seen = y_index >= 0
    rank = np.full(n_samples, UNSEEN_RANK, dtype=np.int64)
    if not seen.any():
        return rank
    s = scores[seen]
    y = y_index[seen]
    true_score = np.take_along_axis(s, y[:, None], axis=1)
    before = s > true_score
    before |= (s == true_score) & (np.arange(n_classes) < y[:, None])
    rank[seen] = before.sum(axis=1)
    return rank


#: Estimator methods that give per-class scores, and the default order to try them in.
RESPONSE_METHODS = ("decision_function", "predict_proba", "predict_log_proba")
DEFAULT_RESPONSE = ("decision_function", "predict_proba")


def check_response_methods(response_method):
    """``response_method`` as a tuple of names from :data:`RESPONSE_METHODS`, tried in order."""
    methods = (response_method,) if isinstance(response_method, str) else response_method
    try:
        methods = tuple(methods)
    except TypeError:
        methods = ()
    if not methods or any(m not in RESPONSE_METHODS for m in methods):
        raise ValueError(
            f"response_method must be one of {RESPONSE_METHODS} or a tuple of them "
            f"(tried in order), got {response_method!r}."
        )
    return methods


def check_not_one_vs_one(estimator, method_name, n_classes):
    """ValueError if ``decision_function`` gives one-vs-one pair scores, not class scores.

    ``SVC(decision_function_shape="ovo")`` returns one column per pair of
    classes; with 3 classes that is 3 columns, the shape of class scores, so
    the shape check alone would rank pairs as if they were classes (with 2
    classes both shapes give one column, and more classes fail the shape
    check). Looks through pipelines, search objects and meta-estimators to the
    final model.
    """
    if method_name != "decision_function" or n_classes != 3:
        return
    model = estimator
    for _ in range(20):  # a chain of wrappers, never a cycle
        steps = getattr(model, "steps", None)
        if isinstance(steps, list) and steps and isinstance(steps[-1], tuple):
            model = steps[-1][-1]
        elif hasattr(model, "final_estimator_"):  # stacking: its scores are the final model's
            model = model.final_estimator_
        elif hasattr(model, "best_estimator_"):
            model = model.best_estimator_
        elif hasattr(model, "estimator_"):
            # Wrappers that pass (SelfTraining) or average (Bagging) the
            # estimator's scores; one that turns predictions into class scores
            # (AdaBoost) is refused too, and 'ovr' serves it as well.
            model = model.estimator_
        else:
            break
    if getattr(model, "decision_function_shape", None) == "ovo":
        raise ValueError(
            f"{type(model).__name__} has decision_function_shape='ovo': its "
            "decision_function scores pairs of classes, not classes, so it cannot rank "
            "them. Use decision_function_shape='ovr' (the default), or "
            "response_method='predict_proba' with probability=True."
        )
