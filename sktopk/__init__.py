"""sktopk: top-K classification for scikit-learn.

The estimators live here; the torch losses in :mod:`sktopk.losses` and
:mod:`sktopk.functional`, the metrics and scorers in :mod:`sktopk.metrics`, the
bundled real datasets in :mod:`sktopk.datasets`.
"""

from ._classifier import ImbalancedTopKClassifier, TopKClassifier

__version__ = "0.1.0"

__all__ = ["ImbalancedTopKClassifier", "TopKClassifier", "__version__"]
