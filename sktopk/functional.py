"""Functional forms of sktopk's torch losses and operators.

Each function has a :mod:`torch.nn.Module` twin in :mod:`sktopk.losses` with the
same parameters; both call one implementation.
"""

from ._focal import focal_loss
from ._ldam import ldam_loss
from ._logit_adjusted import logit_adjusted_cross_entropy
from ._margins import class_margins
from ._perturbed import perturbed_topk
from ._smooth_svm import smooth_topk_svm_loss
from ._topk_hinge import imbalanced_topk_hinge_loss, topk_hinge_loss

__all__ = [
    "class_margins",
    "focal_loss",
    "imbalanced_topk_hinge_loss",
    "ldam_loss",
    "logit_adjusted_cross_entropy",
    "perturbed_topk",
    "smooth_topk_svm_loss",
    "topk_hinge_loss",
]
