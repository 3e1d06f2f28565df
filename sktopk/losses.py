"""Torch loss modules (``nn.Module``), usable on their own or as a skorch ``criterion``.

Each module has a functional twin in :mod:`sktopk.functional`.
"""

from ._focal import FocalLoss
from ._ldam import LDAMLoss
from ._logit_adjusted import LogitAdjustedCrossEntropyLoss
from ._perturbed import PerturbedTopK
from ._smooth_svm import SmoothTopKSVMLoss
from ._topk_hinge import ImbalancedTopKHingeLoss, TopKHingeLoss

__all__ = [
    "FocalLoss",
    "ImbalancedTopKHingeLoss",
    "LDAMLoss",
    "LogitAdjustedCrossEntropyLoss",
    "PerturbedTopK",
    "SmoothTopKSVMLoss",
    "TopKHingeLoss",
]
