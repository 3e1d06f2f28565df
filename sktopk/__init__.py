"""sktopk: top-K classification for scikit-learn.

The estimators live here, with :func:`predict_topk` (the k best labels of any
classifier), :class:`AverageKClassifier` (prediction sets of K labels on
average) and :class:`TemperatureScaledClassifier` (probabilities from any
classifier's scores, e.g. for conformal prediction with MAPIE); the torch
losses in :mod:`sktopk.losses` and :mod:`sktopk.functional`, the metrics and
scorers in :mod:`sktopk.metrics`, the bundled real datasets in
:mod:`sktopk.datasets`.
"""

import importlib

__version__ = "0.12.1"

__all__ = [
    "AverageKClassifier",
    "ImbalancedTopKClassifier",
    "TemperatureScaledClassifier",
    "TopKClassifier",
    "__version__",
    "predict_topk",
]

_LAZY = {
    "AverageKClassifier": "._average_k",
    "ImbalancedTopKClassifier": "._classifier",
    "TemperatureScaledClassifier": "._temperature",
    "TopKClassifier": "._classifier",
    "predict_topk": "._predict_topk",
}


def __getattr__(name):
    # The torch estimators take seconds to import; load every public name on first
    # use so that
    # ``sktopk.metrics`` and ``sktopk.datasets`` import without it.
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sktopk' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
