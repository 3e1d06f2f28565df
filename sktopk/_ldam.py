"""LDAM loss (Cao et al., NeurIPS 2019), a baseline of Garcin et al. (2022) on Pl@ntNet-300K."""

import torch
import torch.nn.functional as F
from torch import nn

from ._margins import class_margins
from ._validation import check_loss_inputs, check_positive_float, check_reduction, reduce_loss


def _ldam_from_margins(scores, target, margins, scale, weight, reduction):
    check_reduction(reduction)
    target, weight = check_loss_inputs(scores, target, weight)
    if margins.shape[0] != scores.shape[1]:
        raise ValueError(
            f"class_counts has {margins.shape[0]} entries but scores have "
            f"{scores.shape[1]} columns: give one count per class."
        )
    index = target.unsqueeze(1)
    margin_y = margins.to(device=scores.device, dtype=scores.dtype)[target].unsqueeze(1)
    shifted = scores.scatter(1, index, scores.gather(1, index) - margin_y)
    per_sample = F.cross_entropy(scale * shifted, target, reduction="none")
    return reduce_loss(per_sample, reduction, weight)


def ldam_loss(scores, target, class_counts, max_margin=0.5, scale=30.0, weight=None,
              reduction="mean"):
    """Label-distribution-aware margin (LDAM) loss of Cao et al. (2019).

    The cross-entropy of ``scale * (s - m_y e_y)``: the true class's score must beat
    the others by a margin ``m_y`` proportional to ``n_y ** (-1/4)``, so rare
    classes get larger margins. Meant for cosine-similarity scores from a
    normalised last layer, ``scale`` acting as an inverse temperature.

    Parameters
    ----------
    scores : torch.Tensor of shape (N, C)
        Class scores (cosine similarities, or logits).
    target : torch.Tensor of shape (N,)
        Class indices in ``[0, C)``, of any integer dtype.
    class_counts : array-like of shape (C,)
        Training count of each class. A zero count is treated as 1 (largest margin).
    max_margin : float, default=0.5
        Margin of the rarest class (>= 0). Garcin et al. (2022) used 0.2 on Pl@ntNet-300K.
    scale : float, default=30.0
        Multiplier of the shifted scores (> 0); they used 40.
    weight : torch.Tensor of shape (N,), optional
        Non-negative per-sample weights (a weighted mean under ``reduction="mean"``).
    reduction : {"mean", "sum", "none"}, default="mean"

    Returns
    -------
    torch.Tensor
        A scalar, or shape (N,) with ``reduction="none"``.

    See Also
    --------
    LDAMLoss : The module twin, which computes the margins once.
    class_margins : The margins.
    imbalanced_topk_hinge_loss : The top-K hinge with the same margins.

    References
    ----------
    .. [1] K. Cao, C. Wei, A. Gaidon, N. Arechiga and T. Ma, "Learning Imbalanced
       Datasets with Label-Distribution-Aware Margin Loss", NeurIPS 2019.

    Examples
    --------
    >>> import torch
    >>> from sktopk.functional import ldam_loss
    >>> scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.8]])
    >>> loss = ldam_loss(scores, torch.tensor([0, 1]), class_counts=[81, 1, 16],
    ...                  max_margin=0.3, scale=10.0, reduction="none")
    >>> [round(v, 4) for v in loss.tolist()]  # margins 0.1 and 0.3
    [0.0012, 8.0028]
    """
    margins = class_margins(class_counts, max_margin)
    scale = check_positive_float(scale, "scale")
    return _ldam_from_margins(scores, target, margins, scale, weight, reduction)


class LDAMLoss(nn.Module):
    """LDAM loss, module twin of :func:`ldam_loss`.

    The margins are computed once, from ``class_counts``, and kept in the buffer
    ``margins`` (so they follow ``.to(device)`` and the ``state_dict``).

    Parameters
    ----------
    class_counts : array-like of shape (C,)
        Training count of each class. A zero count is treated as 1.
    max_margin : float, default=0.5
        Margin of the rarest class (>= 0).
    scale : float, default=30.0
        Multiplier of the shifted scores (> 0).
    reduction : {"mean", "sum", "none"}, default="mean"

    See Also
    --------
    ldam_loss : The functional form.

    References
    ----------
    .. [1] K. Cao, C. Wei, A. Gaidon, N. Arechiga and T. Ma, "Learning Imbalanced
       Datasets with Label-Distribution-Aware Margin Loss", NeurIPS 2019.

    Examples
    --------
    >>> import torch
    >>> from sktopk.losses import LDAMLoss
    >>> criterion = LDAMLoss([81, 1, 16], max_margin=0.3, scale=10.0)
    >>> criterion
    LDAMLoss(n_classes=3, max_margin=0.3, scale=10.0, reduction='mean')
    >>> criterion.margins
    tensor([0.1000, 0.3000, 0.1500])
    >>> scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.8]])
    >>> round(criterion(scores, torch.tensor([0, 1])).item(), 4)
    4.002
    """

    def __init__(self, class_counts, max_margin=0.5, scale=30.0, reduction="mean"):
        super().__init__()
        margins = class_margins(class_counts, max_margin)
        self.max_margin = float(max_margin)
        self.scale = check_positive_float(scale, "scale")
        self.reduction = check_reduction(reduction)
        self.register_buffer("margins", margins.to(torch.get_default_dtype()))

    def forward(self, scores, target, weight=None):
        """Loss of ``scores`` against ``target``, optionally weighted per sample.

        Parameters
        ----------
        scores : torch.Tensor of shape (N, C)
            Class scores (cosine similarities, or logits).
        target : torch.Tensor of shape (N,)
            Class indices in ``[0, C)``, of any integer dtype.
        weight : torch.Tensor of shape (N,), optional
            Non-negative per-sample weights (a weighted mean under ``reduction="mean"``).

        Returns
        -------
        torch.Tensor
            A scalar, or shape (N,) with ``reduction="none"``.
        """
        return _ldam_from_margins(scores, target, self.margins, self.scale, weight,
                                  self.reduction)

    def extra_repr(self):
        return (f"n_classes={self.margins.shape[0]}, max_margin={self.max_margin}, "
                f"scale={self.scale}, reduction={self.reduction!r}")
