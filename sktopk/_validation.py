"""Input checks shared by the torch losses.

Every loss in sktopk takes ``(scores (N, C), target (N,))`` like
:class:`torch.nn.CrossEntropyLoss`; the checks here turn the usual mistakes
(wrong shapes, float targets, NaN scores, labels out of range) into errors that
name the argument and the fix, instead of an index error deep inside a kernel.
"""

import math
import numbers

import torch

_REDUCTIONS = ("mean", "sum", "none")


def _data_checks_allowed():
    # Value checks need a host sync (``.item()``); that is illegal while a CUDA
    # graph is captured and breaks graphs under torch.compile, so skip them there.
    if torch.compiler.is_compiling():
        return False
    if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
        return False
    return True


def check_positive_int(value, name, *, minimum=1):
    """Return ``value`` as an int, or raise if it is not an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}.")
    return int(value)


def check_non_negative_float(value, name):
    """Return ``value`` as a float, or raise if it is negative, NaN or not a number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a non-negative real number, got {value!r}.")
    value = float(value)
    if not value >= 0.0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}.")
    return value


def check_positive_float(value, name):
    """Return ``value`` as a float, or raise if it is not a finite number > 0."""
    value = check_non_negative_float(value, name)
    if value == 0.0:
        raise ValueError(f"{name} must be > 0, got 0.")
    return value


def check_reduction(reduction):
    """Raise unless ``reduction`` is one of torch's reduction names."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")
    return reduction


def non_finite_error(name):
    """The ValueError for NaN or infinite values in ``name`` (also raised by the CPU kernel)."""
    return ValueError(
        f"{name} contains NaN or infinite values. If they come from a network in "
        "training, the optimisation diverged: lower the learning rate."
    )


def check_finite(tensor, name):
    """Raise a ValueError if ``tensor`` holds NaN or infinite values."""
    if not _data_checks_allowed() or tensor.numel() == 0:
        return
    # One reduction pass, no boolean copy: min and max propagate NaN and inf.
    low, high = torch.aminmax(tensor)
    if not bool(torch.isfinite(low) & torch.isfinite(high)):
        raise non_finite_error(name)


def check_scores_finite(scores):
    """Raise a ValueError if ``scores`` hold NaN or infinite values (one sum, one host sync)."""
    if not _data_checks_allowed() or scores.numel() == 0:
        return
    # The sum is finite when every score is, and costs less than min and max; only
    # a non-finite sum (NaN, inf, or an overflow of finite scores) needs a second look.
    if not math.isfinite(scores.detach().sum().item()):
        check_finite(scores.detach(), "scores")


def check_loss_inputs(scores, target, weight=None, check_scores=True):
    """Validate a ``(scores, target[, weight])`` triple for a classification loss.

    Parameters
    ----------
    scores : torch.Tensor of shape (N, C)
        Floating-point class scores.
    target : torch.Tensor of shape (N,)
        Class indices in ``[0, C)``, of any integer dtype (``torch.uint8``,
        ``torch.int32``...). Float, complex and bool targets are refused.
    weight : torch.Tensor or array-like of shape (N,), optional
        Non-negative per-sample weights.
    check_scores : bool, default=True
        Whether to check that the scores are finite here. The top-K hinge losses
        pass False on CPU and check them where they are read (see
        :func:`sktopk._perturbed._scores_checked_by_kernel`).

    Returns
    -------
    target : torch.Tensor of shape (N,), dtype torch.long
        The class indices as torch indexing and gathering need them (``target``
        itself when it already is ``torch.long``).
    weight : torch.Tensor of shape (N,) or None
        The weights in the dtype and on the device of ``scores``.
    """
    weight = _check_scores_target(scores, target, weight, check_scores)
    return target.long(), weight


def _check_scores_target(scores, target, weight, check_scores):
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"scores must be a torch.Tensor, got {type(scores).__name__}.")
    if not isinstance(target, torch.Tensor):
        raise TypeError(
            f"target must be a torch.Tensor of class indices, got {type(target).__name__}."
        )
    if not scores.is_floating_point():
        raise TypeError(f"scores must be a floating-point tensor, got dtype {scores.dtype}.")
    if scores.ndim != 2:
        raise ValueError(
            f"scores must have shape (n_samples, n_classes), got shape {tuple(scores.shape)}."
        )
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(
            f"target must hold integer class indices (any integer dtype, e.g. torch.long), "
            f"got dtype {target.dtype}. Class probabilities and one-hot or boolean targets "
            "are not supported: pass the index of the true class."
        )
    if target.ndim != 1 or target.shape[0] != scores.shape[0]:
        raise ValueError(
            f"target must have shape ({scores.shape[0]},) to match scores of shape "
            f"{tuple(scores.shape)}, got {tuple(target.shape)}."
        )
    if target.device != scores.device:
        raise ValueError(
            f"target is on {target.device} but scores are on {scores.device}; move both "
            "to the same device."
        )
    n_classes = scores.shape[1]
    if weight is not None:
        if not isinstance(weight, torch.Tensor):
            weight = torch.as_tensor(weight, dtype=scores.dtype, device=scores.device)
        if weight.shape != (scores.shape[0],):
            raise ValueError(
                f"weight must have shape ({scores.shape[0]},), got {tuple(weight.shape)}."
            )
        weight = weight.to(device=scores.device, dtype=scores.dtype)
    if _data_checks_allowed() and scores.numel():
        # All value checks read back in one host sync (one per loss call on a GPU).
        dtype = torch.float32 if scores.device.type == "mps" else torch.float64
        # The sum of the scores is finite when they all are, and a sum costs less
        # than min and max; only a non-finite sum (NaN, inf, or an overflow of
        # finite scores) needs a second look.
        parts = [torch.stack(torch.aminmax(target)).to(dtype),
                 (scores.detach().sum() if check_scores else scores.new_zeros(())).reshape(1)
                 .to(dtype)]
        if weight is not None:
            parts.append(torch.stack(torch.aminmax(weight.detach())).to(dtype))
        bounds = torch.cat(parts).tolist()
        lo, hi = int(bounds[0]), int(bounds[1])
        if lo < 0 or hi >= n_classes:
            raise ValueError(
                f"target holds class index {lo if lo < 0 else hi}, outside [0, {n_classes}) "
                f"for scores with {n_classes} columns."
            )
        if not math.isfinite(bounds[2]):
            check_finite(scores.detach(), "scores")
        if weight is not None and not (math.isfinite(bounds[4]) and bounds[3] >= 0):
            raise ValueError("weight must hold finite, non-negative per-sample weights.")
    return weight


def reduce_loss(per_sample, reduction, weight=None):
    """Apply optional per-sample ``weight`` then ``reduction`` ('mean' is weighted)."""
    if weight is not None:
        per_sample = per_sample * weight
        if reduction == "mean":
            return per_sample.sum() / weight.sum().clamp_min(torch.finfo(per_sample.dtype).tiny)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def check_class_counts(class_counts):
    """Return class counts as a float64 tensor with zero counts raised to 1.

    A class absent from the training data would get an infinite margin
    (``n ** -0.25``); treating it as seen once gives it the largest finite margin.
    """
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    if counts.ndim != 1 or counts.numel() < 2:
        raise ValueError(
            "class_counts must be a 1-d sequence with one count per class (at least 2), "
            f"got shape {tuple(counts.shape)}."
        )
    if not bool(torch.isfinite(counts).all()) or bool((counts < 0).any()):
        raise ValueError("class_counts must hold finite, non-negative counts.")
    return counts.clamp_min(1.0)
