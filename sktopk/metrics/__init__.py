"""Top-K and set-valued metrics and scorers.

:func:`top_k_accuracy_score`, :func:`top_k_accuracy_curve` and
:func:`top_k_report` work on precomputed scores; :func:`set_accuracy_score` and
:func:`mean_set_size` on prediction sets; :func:`make_top_k_scorer` and
:func:`make_set_scorer` build scorers for ``GridSearchCV``, ``cross_validate``
and other ``scoring=`` arguments, robust to cross-validation folds that miss a
class.
"""

from ._report import top_k_report
from ._scorer import make_top_k_scorer
from ._set_accuracy import mean_set_size, set_accuracy_score
from ._set_scorer import make_set_scorer
from ._top_k_accuracy import top_k_accuracy_curve, top_k_accuracy_score

__all__ = [
    "make_set_scorer",
    "make_top_k_scorer",
    "mean_set_size",
    "set_accuracy_score",
    "top_k_accuracy_curve",
    "top_k_accuracy_score",
    "top_k_report",
]
