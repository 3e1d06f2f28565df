"""The stochastically smoothed k-th largest value (the "perturbed optimizer").

``T(x) = E_Z[(x + epsilon * Z)_[k]]`` with ``Z ~ N(0, I)``, estimated with B draws.
The Monte-Carlo estimate is piecewise linear in ``x``: its gradient is the mean,
over the draws, of the one-hot vector of the index of the k-th largest perturbed
entry (Berthet et al., 2020).

Cost and memory: the reference implementation materialises an (N, C, B) noise
tensor. Here the draws are taken one at a time into a single (N, C) buffer that
is overwritten in place, and only the winning indices, (N, B) integers, are kept
for the backward pass. So the extra memory is one score-sized buffer whatever B
is, and on CPU the cost is B times (one Gaussian fill + one ``topk``), of which
the Gaussian fill is the larger part.

That is the dense path. The sparse path (:mod:`sktopk._sparse_perturbed`) draws
the same distribution from the highest scores of each row plus the few other
columns that rise above them; ``sampler="auto"`` picks the cheaper per call.
"""

import torch
from torch import nn

from . import _cpu_kernel, _memory, _triton_dispatch
from ._sampler_plan import sampler_of
from ._sparse_perturbed import check_sampler, sample_sparse_or_none
from ._validation import (
    check_finite,
    check_non_negative_float,
    check_positive_int,
    check_scores_finite,
)

NOISE_MODES = ("independent", "shared")


def _noise_buffer(x, noise):
    # One (N, C) buffer per call; "shared" draws one noise row per draw and lets
    # broadcasting reuse it for every sample of the batch.
    rows = 1 if noise == "shared" else x.shape[0]
    return torch.empty((rows, x.shape[1]), dtype=x.dtype, device=x.device)


def kth_largest_perturbed_torch(x, k, epsilon, n_perturbations, generator=None,
                                noise="independent"):
    """Monte-Carlo k-th largest value of ``x + epsilon * Z`` along the last dim.

    The reference path, in plain torch; the Triton kernel must agree with it.

    Parameters
    ----------
    x : torch.Tensor of shape (N, C)
        Scores, already validated and detached.
    k, epsilon, n_perturbations, generator, noise
        As in :func:`perturbed_topk`.

    Returns
    -------
    values : torch.Tensor of shape (N,)
        Mean over the draws of the k-th largest perturbed value.
    indices : torch.Tensor of shape (N, B), int64
        Column of the k-th largest perturbed value for each draw (B = 1 when
        ``epsilon == 0``, where the draws are all the same).

    Notes
    -----
    Draw ``b`` uses noise ``Z_b = torch.randn(rows, C, generator=generator)``, with
    ``rows = N`` ("independent") or 1 ("shared"), drawn in the order b = 0, 1, ...;
    tests rebuild the same noise from the same seed.
    """
    n_rows = x.shape[0]
    if epsilon == 0.0:
        top_values, top_indices = torch.topk(x, k, dim=1)
        return top_values[:, k - 1].clone(), top_indices[:, k - 1 :].contiguous()
    # Sum the draws in float32 at least so bfloat16/float16 inputs do not lose
    # the small differences between draws.
    acc_dtype = torch.promote_types(x.dtype, torch.float32)
    values = torch.zeros(n_rows, dtype=acc_dtype, device=x.device)
    indices = torch.empty((n_rows, n_perturbations), dtype=torch.long, device=x.device)
    buffer = _noise_buffer(x, noise)
    perturbed = buffer if noise == "independent" else torch.empty_like(x)
    for draw in range(n_perturbations):
        buffer.normal_(generator=generator)
        torch.add(x, buffer, alpha=epsilon, out=perturbed)
        # With k small, topk's partial selection beats kthvalue's quickselect
        # (measured 6x on CPU at C=1000).
        top_values, top_indices = torch.topk(perturbed, k, dim=1, sorted=True)
        values += top_values[:, k - 1]
        indices[:, draw] = top_indices[:, k - 1]
    values /= n_perturbations
    return values.to(x.dtype), indices


def _kth_largest_dense(x, k, epsilon, n_perturbations, generator, noise):
    """The dense estimator: a fused kernel (Triton on CUDA, C on CPU) if one can run, else torch."""
    # CPU tensors never go to the Triton kernel here (only tests run it on CPU, interpreted).
    kernel = x.is_cuda and _triton_dispatch.get_kernel(x, k, epsilon, n_perturbations, noise)
    if kernel:
        return kernel(x, k, epsilon, n_perturbations, generator, noise)
    if _triton_dispatch.cpu_kernel_takes(x, k, noise):
        return _cpu_kernel.kth_largest_perturbed_cpu(x, k, epsilon, n_perturbations, generator,
                                                     noise)
    return kth_largest_perturbed_torch(x, k, epsilon, n_perturbations, generator, noise)


def _kth_largest_perturbed(x, k, epsilon, n_perturbations, generator, noise, sampler="auto"):
    """Dispatch one call to the sparse or the dense sampler (see ``sampler``).

    A backend forced by :func:`sktopk.backends.use_backend` overrides ``sampler``.
    """
    if epsilon == 0.0:
        return kth_largest_perturbed_torch(x, k, epsilon, n_perturbations, generator, noise)
    backend = _triton_dispatch.current_backend()
    if backend == "triton":
        kernel = _triton_dispatch.require_kernel(x, k, epsilon, n_perturbations, noise)
        return kernel(x, k, epsilon, n_perturbations, generator, noise)
    if backend == "cpu_kernel":
        kernel = _triton_dispatch.require_cpu_kernel(x, k, noise)
        return kernel(x, k, epsilon, n_perturbations, generator, noise)
    if backend in ("dense", "torch"):
        sampler = "dense"
    elif backend == "sparse":
        sampler = check_sampler("sparse", noise)
    if noise == "independent" and sampler != "dense":
        result = sample_sparse_or_none(x, k, epsilon, n_perturbations, generator, sampler)
        if result is not None:
            return result
    return _kth_largest_dense(x, k, epsilon, n_perturbations, generator, noise)


def _scores_checked_by_kernel(x, k, epsilon, noise):
    """Whether the compiled CPU kernel takes the call, and so checks that ``x`` is finite.

    Mirrors :func:`_kth_largest_perturbed`: with epsilon > 0 and no Triton backend
    forced, a call the kernel supports goes to it, on the dense or the sparse path.
    """
    return (epsilon != 0.0 and _triton_dispatch.current_backend() != "triton"
            and _triton_dispatch.cpu_kernel_takes(x, k, noise))


class _PerturbedKthLargest(torch.autograd.Function):
    """Autograd wrapper: keeps the (N, B) winning indices, not the noise.

    With ``target`` (N,) int64, returns ``T_k(x) - x[i, target[i]]`` instead, and
    the backward writes both terms into ONE (N, C) gradient: the hinge losses
    use this to save the score-sized passes of a separate gather. With
    ``check_scores``, non-finite scores raise a ValueError: in the compiled CPU
    kernel, which reads every score anyway, else with one sum here.
    """

    @staticmethod
    def forward(ctx, x, k, epsilon, n_perturbations, generator, noise, sampler, target=None,
                check_scores=False):
        if check_scores and not _scores_checked_by_kernel(x, k, epsilon, noise):
            check_scores_finite(x)
        values, indices = _kth_largest_perturbed(
            x.detach(), k, epsilon, n_perturbations, generator, noise, sampler
        )
        ctx.n_columns = x.shape[1]
        ctx.has_target = target is not None
        if target is None:
            ctx.save_for_backward(indices)
            return values
        ctx.save_for_backward(indices, target)
        return values - x.detach().gather(1, target.unsqueeze(1)).squeeze(1)

    @staticmethod
    def backward(ctx, grad_values):
        indices = ctx.saved_tensors[0]
        n_draws = indices.shape[1]
        share = (grad_values / n_draws).unsqueeze(1).expand(-1, n_draws)
        grad_x = _memory.zeros((indices.shape[0], ctx.n_columns), grad_values.dtype,
                               grad_values.device)
        grad_x.scatter_add_(1, indices, share.to(grad_x.dtype))
        if ctx.has_target:
            target = ctx.saved_tensors[1]
            grad_x.scatter_add_(1, target.unsqueeze(1), -grad_values.unsqueeze(1).to(grad_x.dtype))
        return grad_x, None, None, None, None, None, None, None, None


def check_noise(noise):
    """Raise unless ``noise`` is one of :data:`NOISE_MODES`."""
    if noise not in NOISE_MODES:
        raise ValueError(f"noise must be one of {NOISE_MODES}, got {noise!r}.")
    return noise


def check_perturbation_params(k, epsilon, n_perturbations, noise, size, *, k_name="k",
                              sampler="auto"):
    """Validate the smoothing parameters against the length ``size`` of the dimension."""
    k = check_positive_int(k, k_name)
    if k > size:
        raise ValueError(f"{k_name}={k} is larger than the number of entries ({size}) along dim.")
    epsilon = check_non_negative_float(epsilon, "epsilon")
    n_perturbations = check_positive_int(n_perturbations, "n_perturbations")
    check_noise(noise)
    check_sampler(sampler, noise)
    return k, epsilon, n_perturbations


def check_generator(generator, x):
    """Raise unless ``generator`` is None or a torch.Generator on ``x``'s device type."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}."
        )
    if generator.device.type != x.device.type:
        raise ValueError(
            f"generator is on {generator.device} but the scores are on {x.device}: create "
            f"it with torch.Generator(device={str(x.device)!r})."
        )


def perturbed_topk(x, k, epsilon=1.0, n_perturbations=10, dim=-1, generator=None,
                   noise="independent", sampler="auto"):
    """Smoothed k-th largest value ``E_Z[(x + epsilon * Z)_[k]]`` along ``dim``.

    A Monte-Carlo estimate over ``n_perturbations`` Gaussian draws, fresh at each
    call. Its gradient is the mean over the draws of the one-hot vector of the
    index of the k-th largest perturbed entry, a probability vector along ``dim``
    (Berthet et al., 2020). With ``epsilon=0`` it is the exact k-th largest value
    with a one-hot gradient.

    Parameters
    ----------
    x : torch.Tensor
        Floating-point scores of any shape.
    k : int
        Rank of the value to smooth: 1 is the maximum.
    epsilon : float, default=1.0
        Standard deviation of the Gaussian perturbation, in the units of ``x``.
    n_perturbations : int, default=10
        Number B of Monte-Carlo draws. The cost grows linearly in B, the memory
        does not.
    dim : int, default=-1
        Dimension along which to take the k-th largest value.
    generator : torch.Generator, optional
        Source of the noise, on the device of ``x``; pass a seeded generator for
        reproducible values. Without one, torch's default generator is used.
    noise : {"independent", "shared"}, default="independent"
        "independent" draws fresh noise for every slice along ``dim`` (the paper's
        estimator). "shared" reuses each draw's noise vector for all slices of the
        call: every slice gets the same expected value and gradient as with
        independent noise, the slices are just correlated, and the Gaussian
        generation, the main CPU cost, shrinks by the number of slices.
    sampler : {"auto", "dense", "sparse"}, default="auto"
        How the draws are taken; all three give the same distribution of the
        value and the gradient. "dense" perturbs every entry (N*C*B Gaussian
        draws). "sparse" perturbs only the highest entries of each slice and
        draws exactly which of the others rise above them (see
        :func:`sktopk._sparse_perturbed.kth_largest_perturbed_sparse`): far
        cheaper when a few entries stand out, as with the scores of a trained
        network. "auto" estimates both costs from ``x`` at each call and takes
        the cheaper. "sparse" needs ``noise="independent"``; with shared noise
        "auto" takes the dense path.

    Returns
    -------
    torch.Tensor
        ``x``'s shape without ``dim``.

    See Also
    --------
    PerturbedTopK : The module twin.
    topk_hinge_loss : The top-K hinge loss built on this operator.

    References
    ----------
    Berthet, Blondel, Teboul, Cuturi, Vert & Bach, "Learning with differentiable
    perturbed optimizers", NeurIPS 2020. Garcin, Servajean, Joly & Salmon,
    "Stochastic smoothing of the top-K calibrated hinge loss for deep imbalanced
    classification", ICML 2022.

    Examples
    --------
    >>> import torch
    >>> from sktopk.functional import perturbed_topk
    >>> x = torch.tensor([[3.0, 1.0, 2.0, 0.0]], requires_grad=True)
    >>> perturbed_topk(x, k=2, epsilon=0.0).item()
    2.0
    >>> g = torch.Generator().manual_seed(0)
    >>> value = perturbed_topk(x, k=2, epsilon=0.5, n_perturbations=1000, generator=g)
    >>> value.backward()
    >>> round(float(x.grad.sum()), 4)  # the gradient is a probability vector
    1.0
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}.")
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension.")
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f"dim={dim} is out of range for a tensor with {x.ndim} dimensions.")
    k, epsilon, n_perturbations = check_perturbation_params(
        k, epsilon, n_perturbations, noise, x.shape[dim], sampler=sampler
    )
    check_generator(generator, x)
    check_finite(x, "x")
    moved = x.movedim(dim, -1)
    lead_shape = moved.shape[:-1]
    flat = moved.reshape(-1, moved.shape[-1])
    values = _PerturbedKthLargest.apply(flat, k, epsilon, n_perturbations, generator, noise,
                                        sampler)
    return values.reshape(lead_shape)


class PerturbedTopK(nn.Module):
    """Module twin of :func:`perturbed_topk`: the smoothed k-th largest value.

    Parameters
    ----------
    k : int
        Rank of the value to smooth: 1 is the maximum.
    epsilon : float, default=1.0
        Standard deviation of the Gaussian perturbation.
    n_perturbations : int, default=10
        Number of Monte-Carlo draws.
    dim : int, default=-1
        Dimension along which to take the k-th largest value.
    generator : torch.Generator, optional
        Source of the noise; see :func:`perturbed_topk`.
    noise : {"independent", "shared"}, default="independent"
        See :func:`perturbed_topk`.
    sampler : {"auto", "dense", "sparse"}, default="auto"
        See :func:`perturbed_topk`.

    Examples
    --------
    >>> import torch
    >>> from sktopk.losses import PerturbedTopK
    >>> op = PerturbedTopK(k=1, epsilon=0.0)
    >>> op(torch.tensor([[0.5, 2.0, 1.0]]))
    tensor([2.])
    """

    def __init__(self, k, epsilon=1.0, n_perturbations=10, dim=-1, generator=None,
                 noise="independent", sampler="auto"):
        super().__init__()
        self.k = check_positive_int(k, "k")
        self.epsilon = check_non_negative_float(epsilon, "epsilon")
        self.n_perturbations = check_positive_int(n_perturbations, "n_perturbations")
        check_noise(noise)
        self.sampler = check_sampler(sampler, noise)
        self.dim = dim
        self.generator = generator
        self.noise = noise

    def forward(self, x):
        """The smoothed k-th largest value of ``x`` along ``dim``.

        Parameters
        ----------
        x : torch.Tensor
            Floating-point scores.

        Returns
        -------
        torch.Tensor
            ``x``'s shape without ``dim``.
        """
        return perturbed_topk(x, self.k, self.epsilon, self.n_perturbations, self.dim,
                              self.generator, self.noise, sampler_of(self))

    def extra_repr(self):
        return (f"k={self.k}, epsilon={self.epsilon}, n_perturbations={self.n_perturbations}, "
                f"dim={self.dim}, noise={self.noise!r}, sampler={self.sampler!r}")
