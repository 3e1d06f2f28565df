"""Top-K metrics and scorers.

:func:`top_k_accuracy_score` and :func:`top_k_accuracy_curve` work on precomputed
scores; :func:`make_top_k_scorer` builds a scorer for ``GridSearchCV``,
``cross_validate`` and other ``scoring=`` arguments, robust to cross-validation
folds that miss a class.
"""

from ._scorer import make_top_k_scorer
from ._top_k_accuracy import top_k_accuracy_curve, top_k_accuracy_score

__all__ = ["make_top_k_scorer", "top_k_accuracy_curve", "top_k_accuracy_score"]
