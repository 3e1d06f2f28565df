"""A top-K hinge plus a cross-entropy term: ``hinge + ce_weight * CE``."""

import torch
import torch.nn.functional as F
from torch import nn

from ._validation import reduce_loss


class HingeWithCrossEntropy(nn.Module):
    """``loss(s, y) + ce_weight * cross_entropy(scale * s, y)``, with the same sample weights.

    The cross-entropy term keeps pulling the true class towards rank 1 once the
    hinge is satisfied (the hinge alone stops at rank K), which users of top-K
    losses add to keep top-1 accuracy. ``scale`` turns cosine scores into logits.

    Parameters
    ----------
    loss : torch.nn.Module
        The top-K loss, called as ``loss(scores, target, weight=weight)``; the
        cross-entropy term is reduced as it is (its ``reduction``, "mean" if it
        has none).
    ce_weight : float
        The lambda of the cross-entropy term (>= 0).
    scale : float, default=1.0
    """

    def __init__(self, loss, ce_weight, scale=1.0):
        super().__init__()
        self.loss = loss
        self.ce_weight = float(ce_weight)
        self.scale = float(scale)

    def forward(self, scores, target, weight=None):
        # The top-K loss first: it checks target and weight (any integer dtype, a
        # clear error out of range), so the cross-entropy term, on every training
        # batch, needs no second check.
        hinge = self.loss(scores, target, weight=weight)
        ce = F.cross_entropy(self.scale * scores, target.long(), reduction="none")
        if weight is not None:
            weight = torch.as_tensor(weight, dtype=ce.dtype, device=ce.device)
        reduction = getattr(self.loss, "reduction", "mean")
        return hinge + self.ce_weight * reduce_loss(ce, reduction, weight)

    def extra_repr(self):
        return f"ce_weight={self.ce_weight}, scale={self.scale}"
