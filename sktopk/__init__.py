"""sktopk: top-K classification for scikit-learn.

The estimators live here; the torch losses in :mod:`sktopk.losses` and
:mod:`sktopk.functional`, the metrics and scorers in :mod:`sktopk.metrics`, the
bundled real datasets in :mod:`sktopk.datasets`.
"""

import importlib

__version__ = "0.2.0"

__all__ = ["ImbalancedTopKClassifier", "TopKClassifier", "__version__"]

_LAZY = {"ImbalancedTopKClassifier": "._classifier", "TopKClassifier": "._classifier"}


def __getattr__(name):
    # The estimators import torch (seconds); load them on first use so that
    # ``sktopk.metrics`` and ``sktopk.datasets`` import without it.
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sktopk' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
