"""Logit adjustment for long tails (Menon et al., ICLR 2021): the loss and the post-hoc rule."""

import torch
import torch.nn.functional as F
from torch import nn

from ._validation import (
    check_class_counts,
    check_loss_inputs,
    check_non_negative_float,
    check_reduction,
    reduce_loss,
)


def log_class_prior(class_counts):
    """``log(n_c / n)`` as a float64 tensor (zero counts are treated as 1)."""
    counts = check_class_counts(class_counts)
    return torch.log(counts / counts.sum())


def _adjusted_ce(scores, target, log_prior, tau, weight, reduction):
    check_reduction(reduction)
    target, weight = check_loss_inputs(scores, target, weight)
    if log_prior.shape[0] != scores.shape[1]:
        raise ValueError(
            f"class_counts has {log_prior.shape[0]} entries but scores have "
            f"{scores.shape[1]} columns: give one count per class."
        )
    shift = tau * log_prior.to(device=scores.device, dtype=scores.dtype)
    per_sample = F.cross_entropy(scores + shift, target, reduction="none")
    return reduce_loss(per_sample, reduction, weight)


def logit_adjusted_cross_entropy(scores, target, class_counts, tau=1.0, weight=None,
                                 reduction="mean"):
    """Logit-adjusted cross-entropy of Menon et al. (2021).

    The cross-entropy of ``s + tau * log(pi)``, with ``pi_c = n_c / n`` the
    training class priors. Adding the log-prior during training makes the
    network's own scores ``s`` estimate the class-balanced posterior, so the
    ranking of ``s`` targets the balanced (macro-averaged) error. ``tau=1`` is
    the "balanced softmax" of Ren et al. (2020); ``tau=0`` is plain cross-entropy.

    Parameters
    ----------
    scores : torch.Tensor of shape (N, C)
        Class scores (logits).
    target : torch.Tensor of shape (N,)
        Integer class indices.
    class_counts : array-like of shape (C,)
        Training count of each class. A zero count is treated as 1.
    tau : float, default=1.0
        Strength of the adjustment (>= 0).
    weight : torch.Tensor of shape (N,), optional
        Non-negative per-sample weights (a weighted mean under ``reduction="mean"``).
    reduction : {"mean", "sum", "none"}, default="mean"

    Returns
    -------
    torch.Tensor
        A scalar, or shape (N,) with ``reduction="none"``.

    See Also
    --------
    LogitAdjustedCrossEntropyLoss : The module twin.

    References
    ----------
    .. [1] A. K. Menon, S. Jayasumana, A. S. Rawat, H. Jain, A. Veit and S. Kumar,
       "Long-tail learning via logit adjustment", ICLR 2021.

    Examples
    --------
    >>> import torch
    >>> from sktopk.functional import logit_adjusted_cross_entropy
    >>> scores = torch.zeros(1, 2)
    >>> loss = logit_adjusted_cross_entropy(scores, torch.tensor([1]), class_counts=[3, 1])
    >>> round(loss.item(), 4)  # -log(1/4): the prior alone ranks class 1 last
    1.3863
    """
    tau = check_non_negative_float(tau, "tau")
    return _adjusted_ce(scores, target, log_class_prior(class_counts), tau, weight, reduction)


class LogitAdjustedCrossEntropyLoss(nn.Module):
    """Logit-adjusted cross-entropy, module twin of :func:`logit_adjusted_cross_entropy`.

    The log-priors are computed once and kept in the buffer ``log_prior``.

    Parameters
    ----------
    class_counts : array-like of shape (C,)
        Training count of each class. A zero count is treated as 1.
    tau : float, default=1.0
        Strength of the adjustment (>= 0).
    reduction : {"mean", "sum", "none"}, default="mean"

    See Also
    --------
    logit_adjusted_cross_entropy : The functional form.

    Examples
    --------
    >>> import torch
    >>> from sktopk.losses import LogitAdjustedCrossEntropyLoss
    >>> criterion = LogitAdjustedCrossEntropyLoss([3, 1])
    >>> round(criterion(torch.zeros(1, 2), torch.tensor([0])).item(), 4)  # -log(3/4)
    0.2877
    """

    def __init__(self, class_counts, tau=1.0, reduction="mean"):
        super().__init__()
        self.tau = check_non_negative_float(tau, "tau")
        self.reduction = check_reduction(reduction)
        self.register_buffer("log_prior",
                             log_class_prior(class_counts).to(torch.get_default_dtype()))

    def set_class_counts(self, class_counts):
        """Refresh the priors in place from new class counts.

        Parameters
        ----------
        class_counts : array-like of shape (C,)
            Training count of each class. A zero count is treated as 1.
        """
        self.log_prior.copy_(log_class_prior(class_counts))

    def forward(self, scores, target, weight=None):
        """Loss of ``scores`` against ``target``, optionally weighted per sample.

        Parameters
        ----------
        scores : torch.Tensor of shape (N, C)
            Class scores (logits).
        target : torch.Tensor of shape (N,)
            Class indices in ``[0, C)``.
        weight : torch.Tensor of shape (N,), optional
            Non-negative per-sample weights (a weighted mean under ``reduction="mean"``).

        Returns
        -------
        torch.Tensor
            A scalar, or shape (N,) with ``reduction="none"``.
        """
        return _adjusted_ce(scores, target, self.log_prior, self.tau, weight, self.reduction)

    def extra_repr(self):
        return (f"n_classes={self.log_prior.shape[0]}, tau={self.tau}, "
                f"reduction={self.reduction!r}")


def posthoc_logit_adjust(scores, class_counts, tau):
    """Post-hoc logit adjustment: ``scores - tau * log(pi)`` (numpy or torch scores).

    Rare classes move up the ranking by ``tau`` times their negative log-prior;
    ``tau=0`` returns the scores unchanged.
    """
    shift = tau * log_class_prior(class_counts).numpy()
    if isinstance(scores, torch.Tensor):
        return scores - torch.as_tensor(shift, dtype=scores.dtype, device=scores.device)
    return scores - shift
