"""Focal loss (Lin et al., ICCV 2017), a baseline of Garcin et al. (2022) on Pl@ntNet-300K."""

import torch
import torch.nn.functional as F
from torch import nn

from ._validation import check_loss_inputs, check_non_negative_float, check_reduction, reduce_loss


def _focal(scores, target, gamma, weight, reduction):
    check_reduction(reduction)
    target, weight = check_loss_inputs(scores, target, weight)
    gamma = check_non_negative_float(gamma, "gamma")
    log_p = F.log_softmax(scores, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
    if gamma == 0.0:
        per_sample = -log_p
    else:
        # 1 - p_y without cancellation; the clamp keeps the gradient finite when
        # p_y rounds to 1 and gamma < 1 (the true gradient tends to 0 there).
        one_minus_p = (-torch.expm1(log_p)).clamp_min(torch.finfo(log_p.dtype).tiny)
        per_sample = one_minus_p.pow(gamma) * -log_p
    return reduce_loss(per_sample, reduction, weight)


def focal_loss(scores, target, gamma=2.0, weight=None, reduction="mean"):
    """Focal loss ``(1 - p_y) ** gamma * CE``, with ``p_y = softmax(scores)[y] = exp(-CE)``.

    Down-weights the samples the model already classifies well; ``gamma=0`` is the
    cross-entropy. Computed from ``log_softmax`` (stable for large scores).

    Parameters
    ----------
    scores : torch.Tensor of shape (N, C)
        Class scores (logits).
    target : torch.Tensor of shape (N,)
        Class indices in ``[0, C)``, of any integer dtype.
    gamma : float, default=2.0
        Focusing parameter (>= 0). Garcin et al. (2022) used 2 on Pl@ntNet-300K.
    weight : torch.Tensor of shape (N,), optional
        Non-negative per-sample weights (a weighted mean under ``reduction="mean"``).
    reduction : {"mean", "sum", "none"}, default="mean"

    Returns
    -------
    torch.Tensor
        A scalar, or shape (N,) with ``reduction="none"``.

    See Also
    --------
    FocalLoss : The module twin.
    ldam_loss : Another baseline for imbalanced classes.

    References
    ----------
    .. [1] T.-Y. Lin, P. Goyal, R. Girshick, K. He and P. Dollar, "Focal Loss for
       Dense Object Detection", ICCV 2017.

    Examples
    --------
    >>> import torch
    >>> from sktopk.functional import focal_loss
    >>> scores = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    >>> target = torch.tensor([0, 2])
    >>> [round(v, 4) for v in focal_loss(scores, target, reduction="none").tolist()]
    [0.0008, 0.4883]
    >>> [round(v, 4) for v in focal_loss(scores, target, gamma=0.0, reduction="none").tolist()]
    [0.0949, 1.0986]
    """
    return _focal(scores, target, gamma, weight, reduction)


class FocalLoss(nn.Module):
    """Focal loss, module twin of :func:`focal_loss`.

    Called as ``loss(scores, target)`` (optionally ``weight=``), like
    :class:`torch.nn.CrossEntropyLoss`, so it works as a skorch ``criterion``.

    Parameters
    ----------
    gamma : float, default=2.0
        Focusing parameter (>= 0); 0 gives the cross-entropy.
    reduction : {"mean", "sum", "none"}, default="mean"

    See Also
    --------
    focal_loss : The functional form.

    References
    ----------
    .. [1] T.-Y. Lin, P. Goyal, R. Girshick, K. He and P. Dollar, "Focal Loss for
       Dense Object Detection", ICCV 2017.

    Examples
    --------
    >>> import torch
    >>> from sktopk.losses import FocalLoss
    >>> criterion = FocalLoss(gamma=2.0)
    >>> criterion
    FocalLoss(gamma=2.0, reduction='mean')
    >>> scores = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    >>> round(criterion(scores, torch.tensor([0, 2])).item(), 4)
    0.2445
    """

    def __init__(self, gamma=2.0, reduction="mean"):
        super().__init__()
        self.gamma = check_non_negative_float(gamma, "gamma")
        self.reduction = check_reduction(reduction)

    def forward(self, scores, target, weight=None):
        """Loss of ``scores`` against ``target``, optionally weighted per sample.

        Parameters
        ----------
        scores : torch.Tensor of shape (N, C)
            Class scores (logits).
        target : torch.Tensor of shape (N,)
            Class indices in ``[0, C)``, of any integer dtype.
        weight : torch.Tensor of shape (N,), optional
            Non-negative per-sample weights (a weighted mean under ``reduction="mean"``).

        Returns
        -------
        torch.Tensor
            A scalar, or shape (N,) with ``reduction="none"``.
        """
        return _focal(scores, target, self.gamma, weight, self.reduction)

    def extra_repr(self):
        return f"gamma={self.gamma}, reduction={self.reduction!r}"
