"""Functional forms of sktopk's torch losses and operators.

Each function has a :mod:`torch.nn.Module` twin in :mod:`sktopk.losses` with the
same parameters; both call one implementation.
"""

from ._margins import class_margins
from ._perturbed import perturbed_topk
from ._topk_hinge import imbalanced_topk_hinge_loss, topk_hinge_loss

__all__ = [
    "class_margins",
    "imbalanced_topk_hinge_loss",
    "perturbed_topk",
    "topk_hinge_loss",
]
