"""The top-K calibrated hinge losses smoothed by Gaussian perturbation (Garcin et al., 2022).

Balanced: ``relu(1 + T(s) - s_y)``; imbalanced: ``relu(scale * (m_y + T(s) - s_y))``,
where ``T(s)`` is the smoothed (K+1)-th largest score, ``s_y`` included. The hinge
is applied after the Monte-Carlo average of ``T``, as in the paper.
"""

import torch
from torch import nn

from ._margins import class_margins
from ._perturbed import (
    _PerturbedKthLargest,
    check_generator,
    check_noise,
    check_perturbation_params,
    check_sampler,
)
from ._sampler_plan import sampler_of
from ._validation import (
    check_loss_inputs,
    check_non_negative_float,
    check_positive_float,
    check_positive_int,
    check_reduction,
    reduce_loss,
)


def _check_k(k, n_classes):
    k = check_positive_int(k, "k")
    if k + 1 > n_classes:
        raise ValueError(
            f"k={k} needs at least k + 1 = {k + 1} classes, but scores have {n_classes} "
            "columns: choose k < n_classes."
        )
    return k


def _scores_checked_later(scores):
    """Whether the hinge leaves the scores' finiteness check to the sampler.

    On CPU it does: the compiled kernel reads every score anyway (the torch
    paths then check with one sum). Elsewhere :func:`check_loss_inputs` checks
    them within its one host sync, so a GPU call keeps a single sync.
    """
    return isinstance(scores, torch.Tensor) and scores.device.type == "cpu"


def _hinge_margin(scores, target, k, epsilon, n_perturbations, generator, noise, sampler):
    """``T_{k+1}(s) - s_y`` for each sample, differentiable in ``scores``."""
    check_generator(generator, scores)
    # scores were validated by the caller: skip perturbed_topk's own data checks.
    _, epsilon, n_perturbations = check_perturbation_params(
        k + 1, epsilon, n_perturbations, noise, scores.shape[1], sampler=sampler)
    # One autograd node for both terms: a single (N, C) gradient in the backward.
    return _PerturbedKthLargest.apply(scores, k + 1, epsilon, n_perturbations, generator, noise,
                                      sampler, target, _scores_checked_later(scores))


def topk_hinge_loss(scores, target, k=5, epsilon=1.0, n_perturbations=10, weight=None,
                    reduction="mean", generator=None, noise="independent", sampler="auto"):
    """Balanced smoothed top-K hinge loss ``relu(1 + T_{K+1}(s) - s_y)``.

    Parameters
    ----------
    scores : torch.Tensor of shape (N, C)
        Class scores (logits).
    target : torch.Tensor of shape (N,)
        Integer class indices.
    k : int, default=5
        The K of top-K accuracy; ``1 <= k < C``.
    epsilon : float, default=1.0
        Noise scale of the smoothing; 0 gives the exact top-K calibrated hinge.
    n_perturbations : int, default=10
        Monte-Carlo draws B.
    weight : torch.Tensor of shape (N,), optional
        Non-negative per-sample weights (a weighted mean under ``reduction="mean"``).
    reduction : {"mean", "sum", "none"}, default="mean"
    generator : torch.Generator, optional
        Source of the noise, for reproducible losses.
    noise : {"independent", "shared"}, default="independent"
        See :func:`perturbed_topk`.
    sampler : {"auto", "dense", "sparse"}, default="auto"
        Dense or exact sparse sampling of the perturbed (K+1)-th largest score
        (same distribution); "auto" picks the cheaper per call. See
        :func:`perturbed_topk`.

    Returns
    -------
    torch.Tensor
        A scalar, or shape (N,) with ``reduction="none"``.

    See Also
    --------
    TopKHingeLoss : The module twin.
    imbalanced_topk_hinge_loss : The variant with class-dependent margins.

    Examples
    --------
    >>> import torch
    >>> from sktopk.functional import topk_hinge_loss
    >>> scores = torch.tensor([[4.0, 3.0, 2.0, 0.0], [0.0, 3.0, 2.0, 4.0]])
    >>> target = torch.tensor([1, 0])
    >>> topk_hinge_loss(scores, target, k=2, epsilon=0.0, reduction="none")
    tensor([0., 3.])
    """
    check_reduction(reduction)
    target, weight = check_loss_inputs(scores, target, weight,
                                       check_scores=not _scores_checked_later(scores))
    k = _check_k(k, scores.shape[1])
    margin = _hinge_margin(scores, target, k, epsilon, n_perturbations, generator, noise,
                           sampler)
    return reduce_loss(torch.relu(1.0 + margin), reduction, weight)


def _imbalanced_from_margins(scores, target, margins, k, scale, epsilon, n_perturbations,
                             weight, reduction, generator, noise, sampler):
    check_reduction(reduction)
    target, weight = check_loss_inputs(scores, target, weight,
                                       check_scores=not _scores_checked_later(scores))
    k = _check_k(k, scores.shape[1])
    if margins.shape[0] != scores.shape[1]:
        raise ValueError(
            f"class_counts has {margins.shape[0]} entries but scores have "
            f"{scores.shape[1]} columns: give one count per class."
        )
    margin = _hinge_margin(scores, target, k, epsilon, n_perturbations, generator, noise,
                           sampler)
    class_margin = margins.to(device=scores.device, dtype=scores.dtype)[target]
    return reduce_loss(torch.relu(scale * (class_margin + margin)), reduction, weight)


def imbalanced_topk_hinge_loss(scores, target, class_counts, k=5, max_margin=0.2, scale=60.0,
                               epsilon=0.01, n_perturbations=5, weight=None, reduction="mean",
                               generator=None, noise="independent", sampler="auto"):
    """Imbalanced smoothed top-K hinge loss ``relu(scale * (m_y + T_{K+1}(s) - s_y))``.

    Meant for cosine-similarity scores from a normalised last layer (values in
    [-1, 1]); ``scale`` then plays the role of an inverse temperature, and
    ``epsilon`` is in cosine units (0.01 at scale 60 acts like 0.6 on logits).

    Parameters
    ----------
    scores : torch.Tensor of shape (N, C)
        Cosine similarities between the embeddings and the class weights.
    target : torch.Tensor of shape (N,)
        Integer class indices.
    class_counts : array-like of shape (C,)
        Training count of each class; margins ``m_c`` are proportional to
        ``n_c ** (-1/4)``, the rarest class getting ``max_margin``. Zero counts
        are treated as 1.
    k : int, default=5
        The K of top-K accuracy; ``1 <= k < C``.
    max_margin : float, default=0.2
        Margin of the rarest class.
    scale : float, default=60.0
        Multiplier of the cosine scores (an inverse temperature).
    epsilon : float, default=0.01
        Noise scale of the smoothing, in cosine units; 0 gives the exact hinge.
    n_perturbations : int, default=5
        Monte-Carlo draws B.
    weight : torch.Tensor of shape (N,), optional
        Non-negative per-sample weights (a weighted mean under ``reduction="mean"``).
    reduction : {"mean", "sum", "none"}, default="mean"
        How the per-sample losses are combined.
    generator : torch.Generator, optional
        Source of the noise, for reproducible losses.
    noise : {"independent", "shared"}, default="independent"
        See :func:`perturbed_topk`.
    sampler : {"auto", "dense", "sparse"}, default="auto"
        See :func:`topk_hinge_loss`.

    Returns
    -------
    torch.Tensor
        A scalar, or shape (N,) with ``reduction="none"``.

    See Also
    --------
    ImbalancedTopKHingeLoss : The module twin, which computes the margins once.
    class_margins : The margins.

    Examples
    --------
    >>> import torch
    >>> from sktopk.functional import imbalanced_topk_hinge_loss
    >>> scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.8]])
    >>> loss = imbalanced_topk_hinge_loss(scores, torch.tensor([0, 1]), class_counts=[100, 1, 5],
    ...                                   k=1, epsilon=0.0, scale=10.0, reduction="none")
    >>> loss  # sample 2: 10 * (m_1 + s_[2] - s_y) = 10 * (0.2 + 0.3 - 0.3)
    tensor([0., 2.])
    """
    margins = class_margins(class_counts, max_margin)
    scale = check_positive_float(scale, "scale")
    return _imbalanced_from_margins(scores, target, margins, k, scale, epsilon,
                                    n_perturbations, weight, reduction, generator, noise,
                                    sampler)


class _SmoothedTopKLossBase(nn.Module):
    def __init__(self, k, epsilon, n_perturbations, reduction, generator, noise, sampler):
        super().__init__()
        self.k = check_positive_int(k, "k")
        self.epsilon = check_non_negative_float(epsilon, "epsilon")
        self.n_perturbations = check_positive_int(n_perturbations, "n_perturbations")
        self.reduction = check_reduction(reduction)
        self.noise = check_noise(noise)
        self.sampler = check_sampler(sampler, noise)
        self.generator = generator


class TopKHingeLoss(_SmoothedTopKLossBase):
    """Balanced smoothed top-K hinge loss, module twin of :func:`topk_hinge_loss`.

    Called as ``loss(scores, target)`` (optionally ``weight=``), like
    :class:`torch.nn.CrossEntropyLoss`, so it works as a skorch ``criterion``.

    Parameters
    ----------
    k : int, default=5
        The K of top-K accuracy; ``1 <= k < C``.
    epsilon : float, default=1.0
        Noise scale of the smoothing; 0 gives the exact top-K calibrated hinge.
    n_perturbations : int, default=10
        Monte-Carlo draws B.
    reduction : {"mean", "sum", "none"}, default="mean"
        How the per-sample losses are combined.
    generator : torch.Generator, optional
        Source of the noise, for reproducible losses.
    noise : {"independent", "shared"}, default="independent"
        See :func:`perturbed_topk`.
    sampler : {"auto", "dense", "sparse"}, default="auto"
        See :func:`topk_hinge_loss`.

    Examples
    --------
    >>> import torch
    >>> from sktopk.losses import TopKHingeLoss
    >>> criterion = TopKHingeLoss(k=2, epsilon=0.5, generator=torch.Generator().manual_seed(0))
    >>> scores = torch.randn(8, 10, generator=torch.Generator().manual_seed(1), requires_grad=True)
    >>> loss = criterion(scores, torch.arange(8))
    >>> loss.backward()
    >>> scores.grad.shape
    torch.Size([8, 10])
    """

    def __init__(self, k=5, epsilon=1.0, n_perturbations=10, reduction="mean", generator=None,
                 noise="independent", sampler="auto"):
        super().__init__(k, epsilon, n_perturbations, reduction, generator, noise, sampler)

    def forward(self, scores, target, weight=None):
        """The loss of ``scores`` against ``target``.

        Parameters
        ----------
        scores : torch.Tensor of shape (N, C)
            Class scores.
        target : torch.Tensor of shape (N,)
            Integer class indices (any integer dtype).
        weight : torch.Tensor of shape (N,), optional
            Non-negative per-sample weights.

        Returns
        -------
        torch.Tensor
            A scalar, or shape (N,) with ``reduction="none"``.
        """
        return topk_hinge_loss(scores, target, self.k, self.epsilon, self.n_perturbations,
                               weight, self.reduction, self.generator, self.noise,
                               sampler_of(self))

    def extra_repr(self):
        return (f"k={self.k}, epsilon={self.epsilon}, n_perturbations={self.n_perturbations}, "
                f"reduction={self.reduction!r}, sampler={self.sampler!r}")


class ImbalancedTopKHingeLoss(_SmoothedTopKLossBase):
    """Imbalanced smoothed top-K hinge loss, module twin of :func:`imbalanced_topk_hinge_loss`.

    The margins are computed once from ``class_counts`` and kept as a buffer, so
    they follow the module across devices and into its ``state_dict``.

    Parameters
    ----------
    class_counts : array-like of shape (n_classes,)
        Training count of each class (zero counts are treated as 1).
    k : int, default=5
        The K of top-K accuracy; ``1 <= k < n_classes``.
    max_margin : float, default=0.2
        Margin of the rarest class.
    scale : float, default=60.0
        Multiplier of the cosine scores (an inverse temperature).
    epsilon : float, default=0.01
        Noise scale of the smoothing, in cosine units.
    n_perturbations : int, default=5
        Monte-Carlo draws B.
    reduction : {"mean", "sum", "none"}, default="mean"
        How the per-sample losses are combined.
    generator : torch.Generator, optional
        Source of the noise, for reproducible losses.
    noise : {"independent", "shared"}, default="independent"
        See :func:`perturbed_topk`.
    sampler : {"auto", "dense", "sparse"}, default="auto"
        See :func:`topk_hinge_loss`.

    Attributes
    ----------
    margins : torch.Tensor of shape (n_classes,)
        The class margins, float32.

    Examples
    --------
    >>> import torch
    >>> from sktopk.losses import ImbalancedTopKHingeLoss
    >>> criterion = ImbalancedTopKHingeLoss(class_counts=[50, 10, 2, 1], k=1)
    >>> criterion.margins
    tensor([0.0752, 0.1125, 0.1682, 0.2000])
    """

    def __init__(self, class_counts, k=5, max_margin=0.2, scale=60.0, epsilon=0.01,
                 n_perturbations=5, reduction="mean", generator=None, noise="independent",
                 sampler="auto"):
        super().__init__(k, epsilon, n_perturbations, reduction, generator, noise, sampler)
        self.max_margin = check_non_negative_float(max_margin, "max_margin")
        self.scale = check_positive_float(scale, "scale")
        self.register_buffer("margins", class_margins(class_counts, max_margin).float())

    def forward(self, scores, target, weight=None):
        """The loss of ``scores`` against ``target``.

        Parameters
        ----------
        scores : torch.Tensor of shape (N, C)
            Class scores.
        target : torch.Tensor of shape (N,)
            Integer class indices (any integer dtype).
        weight : torch.Tensor of shape (N,), optional
            Non-negative per-sample weights.

        Returns
        -------
        torch.Tensor
            A scalar, or shape (N,) with ``reduction="none"``.
        """
        return _imbalanced_from_margins(scores, target, self.margins, self.k, self.scale,
                                        self.epsilon, self.n_perturbations, weight,
                                        self.reduction, self.generator, self.noise,
                                        sampler_of(self))

    def extra_repr(self):
        return (f"n_classes={self.margins.shape[0]}, k={self.k}, max_margin={self.max_margin}, "
                f"scale={self.scale}, epsilon={self.epsilon}, "
                f"n_perturbations={self.n_perturbations}, reduction={self.reduction!r}, "
                f"sampler={self.sampler!r}")
