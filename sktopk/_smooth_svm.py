"""Smooth top-k SVM loss of Berrada, Zisserman & Kumar (ICLR 2018).

With ``z_j = exp(s_j / (k tau))`` and ``e_m`` the elementary symmetric polynomial
of degree ``m`` of the ``z_j`` with ``j != y``, the loss is::

    L = tau * log(exp(alpha / tau) e_k + z_y e_{k-1}) - tau * log(z_y e_{k-1})
      = tau * softplus(alpha / tau + log e_k - log e_{k-1} - s_y / (k tau)),

and its gradient is ``sigmoid(u) / k * (p_k - p_{k-1} - onehot(y))``, where
``p_m[j] = z_j e_{m-1}(z without z_j) / e_m`` is the probability that class ``j``
belongs to a subset of size ``m`` drawn with probability proportional to the
product of its ``z`` (the derivative of ``log e_m``).

How it is computed (float64 inside, whatever the input dtype):

* The ``k`` largest non-target scores form a *top block*, handled in log space
  (``O(k^2)`` per row). Every other class has ``z_j <= z_[k]``, so its
  ``w_j = z_j / z_[k]`` lies in ``[0, 1]`` and the polynomials of the *rest* are
  computed in linear space by ``k`` cumulative sums over the classes (``O(kC)``,
  no exp or log per step). Values too small to represent are provably negligible
  next to the top block's contribution.
* The gradient of a rest class is a polynomial of degree ``k - 1`` in its own
  ``w_j`` whose per-row coefficients are computed in log space; it is evaluated
  by Horner's rule. Every term of that polynomial is bounded by a constant that
  depends on ``k`` only (because the top block dominates the rest), so the
  alternating sum loses no more than a few digits of float64 precision; where
  that constant could grow (few classes per ``k``) or the polynomials could
  overflow, an all-log-space path with prefix and suffix products is used
  instead. Neither path subtracts nearly equal quantities in float32.
* The per-sample gradient is formed in the forward pass and stored (``N x C``);
  the backward pass only rescales it.
"""

import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ._validation import (
    check_loss_inputs,
    check_non_negative_float,
    check_positive_float,
    check_positive_int,
    check_reduction,
    reduce_loss,
)

_NEG_INF = float("-inf")
# Rows per chunk are chosen so that a chunk holds about this many scores: the
# k passes over a chunk then run from cache, and memory stays O(chunk * C).
_CHUNK_ELEMENTS = 1 << 18
# The linear-space scan is used while binom(C - 1, k) stays far from overflow.
_MAX_LOG_BINOM = 500.0


def _check_k(k, n_classes):
    k = check_positive_int(k, "k")
    if k >= n_classes:
        raise ValueError(
            f"k={k} must be smaller than the number of classes ({n_classes} columns in "
            "scores): choose 1 <= k < n_classes."
        )
    return k


def _log_binom(n, k):
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _use_scan(n_classes, k):
    """Whether the linear-space scan is well conditioned for this (C, k)."""
    n_other = n_classes - 1
    return n_other >= 2 * k and _log_binom(n_other, k) < _MAX_LOG_BINOM


def _log_block(items, outer, degree):
    """Log elementary symmetric polynomials of a block of items, joined with outside items.

    Parameters
    ----------
    items : tensor (n, M)
        Log-values of the block's items (``-inf`` for an absent item).
    outer : tensor (n, degree + 1)
        ``log e_m`` of the items outside the block, ``m = 0..degree``.
    degree : int

    Returns
    -------
    prefix : tensor (n, degree, M + 1)
        ``prefix[:, a, j] = log e_a(items[:, :j])`` for ``a < degree``.
    suffix : tensor (n, degree + 1, M + 1)
        ``suffix[:, m, j] = log e_m(items[:, j:] and the outside items)``.
    """
    n, m_items = items.shape
    prefix = items.new_full((n, degree, m_items + 1), _NEG_INF)
    prefix[:, 0] = 0.0
    for a in range(1, degree):
        prefix[:, a, 1:] = torch.logcumsumexp(items + prefix[:, a - 1, :-1], dim=1)
    suffix = items.new_empty((n, degree + 1, m_items + 1))
    suffix[:, 0] = 0.0
    reversed_items = items.flip(1)
    for m in range(1, degree + 1):
        terms = reversed_items + suffix[:, m - 1, 1:].flip(1)
        tail = torch.logcumsumexp(terms, dim=1).flip(1)
        suffix[:, m, :m_items] = torch.logaddexp(tail, outer[:, m : m + 1])
        suffix[:, m, m_items] = outer[:, m]
    return prefix, suffix


def _block_marginals(items, prefix, suffix, order, log_total):
    """``p_order`` of each block item: ``z_i e_{order-1}(all but i) / e_order(all)``."""
    lower = prefix[:, :order, :-1]  # a = 0..order-1, item i: e_a(items before i)
    upper = suffix[:, :order, 1:].flip(1)  # degrees order-1-a of the items after i
    log_excl = torch.logsumexp(lower + upper, dim=1)
    return torch.exp(items + log_excl - log_total.unsqueeze(1))


def _log_path(items, k, need_grad):
    """All-log-space computation: O(kC) log-add-exp work, always stable."""
    n = items.shape[0]
    outer = items.new_full((n, k + 1), _NEG_INF)
    outer[:, 0] = 0.0
    prefix, suffix = _log_block(items, outer, k)
    log_e_k, log_e_km1 = suffix[:, k, 0], suffix[:, k - 1, 0]
    grad = None
    if need_grad:
        grad = _block_marginals(items, prefix, suffix, k, log_e_k)
        if k > 1:
            grad = grad - _block_marginals(items, prefix, suffix, k - 1, log_e_km1)
    return log_e_k, log_e_km1, grad


def _horner_coefficients(prefix_top, log_rest, log_total, order):
    """Per-row coefficients ``c_t`` of ``p_order(w) = w * sum_t c_t (-w)^t`` for rest items.

    ``c_t = sum_{a=0}^{order-1-t} gamma_a e_{order-1-a-t}(w)``, with
    ``gamma_a = e_a(top) z_[k]^(order-a) / e_order(all)`` (in log space, all in
    units of ``z_[k]``, so ``prefix_top[:, a] = log e_a(top / z_[k])``).
    """
    n = log_rest.shape[0]
    a = torch.arange(order, device=log_rest.device)
    t = torch.arange(order, device=log_rest.device)
    b = order - 1 - a.unsqueeze(0) - t.unsqueeze(1)  # (t, a) -> degree of the rest
    valid = b >= 0
    log_gamma = prefix_top[:, :order] - log_total.unsqueeze(1)  # (n, order)
    terms = log_gamma.unsqueeze(1) + log_rest[:, b.clamp_min(0)]  # (n, t, a)
    terms = terms.masked_fill(~valid, _NEG_INF)
    return torch.exp(torch.logsumexp(terms, dim=2)).reshape(n, order)


def _scan_path(items, k, need_grad):
    """Top block in log space, the rest by linear-space cumulative sums (see module doc).

    ``items`` (overwritten) holds ``log z`` with ``-inf`` at the target class.
    """
    n, n_classes = items.shape
    top, top_idx = items.topk(k, dim=1)  # sorted, descending
    ref = top[:, -1:]
    top = top - ref  # log(z / z_[k]) >= 0
    w = items.scatter_(1, top_idx, _NEG_INF).sub_(ref).exp_()  # rest, in [0, 1]

    # e_b(w) for b = 0..k: T_b[:, i] = e_b(w[:, :i+1]) = cumsum(w * T_{b-1}[:, i-1]).
    esp = w.new_empty((n, k + 1))
    esp[:, 0] = 1.0
    prefix_sums = torch.cumsum(w, dim=1)
    esp[:, 1] = prefix_sums[:, -1]
    if k > 1:
        buf = torch.empty_like(w)
        buf[:, 0] = 0.0
        for b in range(2, k + 1):
            torch.mul(w[:, 1:], prefix_sums[:, :-1], out=buf[:, 1:])
            torch.cumsum(buf, dim=1, out=prefix_sums)
            esp[:, b] = prefix_sums[:, -1]
    log_rest = esp.log()  # log e_b(rest / z_[k]); -inf where the rest has < b items

    prefix, suffix = _log_block(top, log_rest, k)
    log_e_k, log_e_km1 = suffix[:, k, 0], suffix[:, k - 1, 0]  # in units of z_[k]
    grad = None
    if need_grad:
        # Rest classes: p_k - p_{k-1} = w * sum_t d_t (-w)^t, by Horner's rule.
        coef = _horner_coefficients(prefix[:, :, -1], log_rest, log_e_k, k)
        if k > 1:
            coef[:, : k - 1] -= _horner_coefficients(prefix[:, :, -1], log_rest, log_e_km1,
                                                     k - 1)
        acc = coef[:, k - 1 :].expand(n, n_classes)
        if k == 1:
            grad = acc * w
        else:
            buffers = (buf, prefix_sums)
            for i, t in enumerate(range(k - 2, -1, -1)):
                acc = torch.addcmul(coef[:, t : t + 1], w, acc, value=-1.0, out=buffers[i % 2])
            grad = acc.mul_(w)
        # Top classes, from prefix and suffix products of the top block.
        top_grad = _block_marginals(top, prefix, suffix, k, log_e_k)
        if k > 1:
            top_grad = top_grad - _block_marginals(top, prefix, suffix, k - 1, log_e_km1)
        grad.scatter_(1, top_idx, top_grad)
    # Back to absolute units: log e_m = log e_m(relative) + m * log z_[k].
    log_e_k = log_e_k + k * ref.squeeze(1)
    log_e_km1 = log_e_km1 + (k - 1) * ref.squeeze(1)
    return log_e_k, log_e_km1, grad


def _forward_chunk(scores, target, k, tau, alpha, need_grad, path):
    """Per-sample loss (float64) and, if asked, d loss / d scores (float64) of a chunk of rows."""
    x = torch.empty(scores.shape, dtype=torch.float64, device=scores.device)
    x.copy_(scores).mul_(1.0 / (k * tau))  # in float64: no rounding of the scaled scores
    index = target.unsqueeze(1)
    x_y = x.gather(1, index).squeeze(1)
    log_e_k, log_e_km1, grad = path(x.scatter_(1, index, _NEG_INF), k, need_grad)
    u = alpha / tau + log_e_k - log_e_km1 - x_y
    loss = tau * torch.logaddexp(u, torch.zeros_like(u))
    if need_grad:
        grad.scatter_(1, index, -1.0)
        grad.mul_((torch.sigmoid(u) / k).unsqueeze(1))
    return loss, grad


class _SmoothTopKSVMFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores, target, k, tau, alpha, method, grad_enabled):
        n, n_classes = scores.shape
        if method is None:
            method = "scan" if _use_scan(n_classes, k) else "log"
        path = _scan_path if method == "scan" else _log_path
        # Under torch.no_grad, needs_input_grad is still set: the caller passes grad mode.
        need_grad = ctx.needs_input_grad[0] and grad_enabled
        scores = scores.detach()
        loss = scores.new_empty((n,))
        ctx.grad = torch.empty_like(scores) if need_grad else None
        chunk = max(1, _CHUNK_ELEMENTS // n_classes)
        for i in range(0, n, chunk):
            rows = slice(i, i + chunk)
            loss_rows, grad_rows = _forward_chunk(scores[rows], target[rows], k, tau, alpha,
                                                  need_grad, path)
            loss[rows] = loss_rows
            if need_grad:
                ctx.grad[rows] = grad_rows
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        return grad_output.unsqueeze(1) * ctx.grad, None, None, None, None, None, None


def _smooth_topk_svm(scores, target, k, tau, alpha, weight, reduction, method=None):
    check_reduction(reduction)
    target, weight = check_loss_inputs(scores, target, weight)
    k = _check_k(k, scores.shape[1])
    tau = check_positive_float(tau, "tau")
    alpha = check_non_negative_float(alpha, "alpha")
    per_sample = _SmoothTopKSVMFunction.apply(scores, target, k, tau, alpha, method,
                                              torch.is_grad_enabled())
    return reduce_loss(per_sample, reduction, weight)


def smooth_topk_svm_loss(scores, target, k=5, tau=1.0, alpha=1.0, weight=None,
                         reduction="mean"):
    """Smooth top-k SVM loss of Berrada, Zisserman & Kumar (2018).

    A log-sum-exp smoothing, at temperature ``tau``, of the top-k hinge
    ``max(alpha * [y not in ybar] + mean(s_ybar)) - max(mean(s_ybar) : y in ybar)``
    over the subsets ``ybar`` of ``k`` classes::

        L = tau * log sum_ybar exp((alpha * [y not in ybar] + mean_{j in ybar} s_j) / tau)
            - tau * log sum_{ybar containing y} exp(mean_{j in ybar} s_j / tau).

    With ``k=1, tau=1, alpha=0`` it is the cross-entropy. It is computed exactly
    through elementary symmetric polynomials (``O(kC)`` work per sample, float64
    inside, stable for large scores and small ``tau``), not by enumerating subsets.

    Parameters
    ----------
    scores : torch.Tensor of shape (N, C)
        Class scores (logits).
    target : torch.Tensor of shape (N,)
        Class indices in ``[0, C)``, of any integer dtype.
    k : int, default=5
        Size of the subsets, the K of top-K accuracy; ``1 <= k < C``.
    tau : float, default=1.0
        Temperature of the smoothing (> 0); the loss tends to the top-k hinge
        as ``tau`` tends to 0. The authors used 1 on CIFAR-100 and 0.1 on Pl@ntNet.
    alpha : float, default=1.0
        Margin (>= 0) asked of the subsets that contain the true class.
    weight : torch.Tensor of shape (N,), optional
        Non-negative per-sample weights (a weighted mean under ``reduction="mean"``).
    reduction : {"mean", "sum", "none"}, default="mean"

    Returns
    -------
    torch.Tensor
        A scalar, or shape (N,) with ``reduction="none"``; same dtype as ``scores``.

    See Also
    --------
    SmoothTopKSVMLoss : The module twin.
    topk_hinge_loss : The stochastically smoothed top-K hinge of Garcin et al.

    Notes
    -----
    The gradient is computed in the forward pass and stored (``N x C``); the loss
    supports first derivatives only. ``C - 1 < 2k`` (few classes per ``k``) uses
    a slower all-log-space path.

    References
    ----------
    .. [1] L. Berrada, A. Zisserman and M. P. Kumar, "Smooth Loss Functions for
       Deep Top-k Classification", ICLR 2018.

    Examples
    --------
    >>> import torch
    >>> from sktopk.functional import smooth_topk_svm_loss
    >>> scores = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 3.0, 1.0]], requires_grad=True)
    >>> target = torch.tensor([1, 0])
    >>> loss = smooth_topk_svm_loss(scores, target, k=2, reduction="none")
    >>> [round(v, 4) for v in loss.tolist()]
    [1.0633, 1.8171]
    >>> loss.sum().backward()
    >>> scores.grad.sum(dim=1).abs().max() < 1e-6  # invariant to a constant shift
    tensor(True)
    """
    return _smooth_topk_svm(scores, target, k, tau, alpha, weight, reduction)


class SmoothTopKSVMLoss(nn.Module):
    """Smooth top-k SVM loss, module twin of :func:`smooth_topk_svm_loss`.

    Called as ``loss(scores, target)`` (optionally ``weight=``), like
    :class:`torch.nn.CrossEntropyLoss`, so it works as a skorch ``criterion``.

    Parameters
    ----------
    k : int, default=5
        Size of the subsets, the K of top-K accuracy; ``1 <= k < C``.
    tau : float, default=1.0
        Temperature of the smoothing (> 0).
    alpha : float, default=1.0
        Margin (>= 0).
    reduction : {"mean", "sum", "none"}, default="mean"

    See Also
    --------
    smooth_topk_svm_loss : The functional form, with the formula.

    References
    ----------
    .. [1] L. Berrada, A. Zisserman and M. P. Kumar, "Smooth Loss Functions for
       Deep Top-k Classification", ICLR 2018.

    Examples
    --------
    >>> import torch
    >>> from sktopk.losses import SmoothTopKSVMLoss
    >>> criterion = SmoothTopKSVMLoss(k=3, tau=0.5)
    >>> criterion
    SmoothTopKSVMLoss(k=3, tau=0.5, alpha=1.0, reduction='mean')
    >>> scores = torch.randn(8, 10, generator=torch.Generator().manual_seed(0), requires_grad=True)
    >>> loss = criterion(scores, torch.arange(8))
    >>> loss.backward()
    >>> scores.grad.shape
    torch.Size([8, 10])
    """

    def __init__(self, k=5, tau=1.0, alpha=1.0, reduction="mean"):
        super().__init__()
        self.k = check_positive_int(k, "k")
        self.tau = check_positive_float(tau, "tau")
        self.alpha = check_non_negative_float(alpha, "alpha")
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
        return _smooth_topk_svm(scores, target, self.k, self.tau, self.alpha, weight,
                                self.reduction)

    def extra_repr(self):
        return f"k={self.k}, tau={self.tau}, alpha={self.alpha}, reduction={self.reduction!r}"
