"""Torch loss modules (``nn.Module``), usable on their own or as a skorch ``criterion``.

Each module has a functional twin in :mod:`sktopk.functional`.
"""

from ._perturbed import PerturbedTopK
from ._topk_hinge import ImbalancedTopKHingeLoss, TopKHingeLoss

__all__ = [
    "ImbalancedTopKHingeLoss",
    "PerturbedTopK",
    "TopKHingeLoss",
]
