"""Backend choice for the perturbed k-th largest value: sampler, kernel, forcing.

Several implementations compute the same estimator: the dense torch path
(``sktopk._perturbed.kth_largest_perturbed_torch``), the fused Triton kernel
(``sktopk._triton_perturbed``, dense, CUDA), the exact sparse sampler in torch
(``sktopk._sparse_perturbed``), and the compiled CPU kernel
(``sktopk._cpu_kernel``, both dense and sparse, built at first use). Which one
runs is decided per call:

- the ``sampler`` parameter ("auto", "dense", "sparse") chooses dense or sparse;
- on CPU, both go to the C kernel when :func:`sktopk._cpu_kernel.supports` says
  it can (:func:`cpu_kernel_takes`);
- a dense call on CUDA uses the Triton kernel when
  :func:`sktopk._triton_perturbed.supports` says it can (the one place that
  knows); everything else runs in torch;
- :func:`use_backend` overrides both inside a ``with`` block (tests, benchmarks).

The kernel module is imported lazily, so sktopk imports and works without
Triton. Set ``SKTOPK_DISABLE_TRITON=1`` (read at import) to keep the kernel off
everywhere.
"""

import contextlib
import contextvars
import os

from . import _cpu_kernel

#: Backends :func:`use_backend` accepts.
BACKENDS = ("auto", "dense", "sparse", "torch", "triton", "cpu_kernel")

#: False keeps the kernel off everywhere (``SKTOPK_DISABLE_TRITON=1``).
ENABLED = os.environ.get("SKTOPK_DISABLE_TRITON", "0") in ("", "0")

_BACKEND = contextvars.ContextVar("sktopk_backend", default="auto")
_module = None


def _load_kernel_module():
    """The kernel module if Triton imports, else None (tried once)."""
    global _module
    if _module is None:
        try:
            from . import _triton_perturbed
        except Exception:  # a broken Triton install must not break sktopk
            _module = False
        else:
            _module = _triton_perturbed if _triton_perturbed.AVAILABLE else False
    return _module or None


@contextlib.contextmanager
def use_backend(backend):
    """Force the backend of every perturbed k-th largest value inside the block.

    Parameters
    ----------
    backend : {"auto", "dense", "sparse", "torch", "triton", "cpu_kernel"}
        "auto" restores the per-call choice (the ``sampler`` parameter, then a
        kernel when one can run). "dense" and "sparse" override every call's
        ``sampler``; "torch" is the dense torch path, never a kernel;
        "triton" is the dense CUDA kernel and "cpu_kernel" the dense CPU one: a
        call the forced kernel cannot take raises ValueError with the reason.
        ``epsilon=0`` always takes the exact path.

    Yields
    ------
    str
        ``backend``.

    Examples
    --------
    >>> import torch
    >>> from sktopk.backends import use_backend
    >>> from sktopk.functional import perturbed_topk
    >>> x = torch.randn(4, 100, generator=torch.Generator().manual_seed(0))
    >>> with use_backend("torch"):
    ...     value = perturbed_topk(x, 2, generator=torch.Generator().manual_seed(0))
    >>> value.shape
    torch.Size([4])
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    token = _BACKEND.set(backend)
    try:
        yield backend
    finally:
        _BACKEND.reset(token)


def current_backend():
    """The backend forced by the innermost :func:`use_backend` block, or "auto".

    Returns
    -------
    str
        One of :data:`BACKENDS`.

    Examples
    --------
    >>> from sktopk.backends import current_backend, use_backend
    >>> with use_backend("dense"):
    ...     current_backend()
    'dense'
    >>> current_backend()
    'auto'
    """
    return _BACKEND.get()


def get_kernel(x, k, epsilon, n_perturbations, noise):
    """The kernel (signature of ``kth_largest_perturbed_torch``) if it should run, else None.

    None means: use the torch path. The kernel is returned when it is enabled,
    Triton imports, and :func:`sktopk._triton_perturbed.supports` accepts the
    call; the "torch" backend turns it off.

    Parameters
    ----------
    x : torch.Tensor of shape (N, C)
    k, epsilon, n_perturbations, noise
        The call's parameters.

    Returns
    -------
    callable or None
    """
    if not ENABLED or current_backend() == "torch":
        return None
    module = _load_kernel_module()
    if module is None or not module.supports(x, k, epsilon, n_perturbations, noise):
        return None
    return module.kth_largest_perturbed_triton


def require_kernel(x, k, epsilon, n_perturbations, noise):
    """The kernel, or a ValueError saying why it cannot take the call (the "triton" backend)."""
    module = _load_kernel_module()
    if module is None:
        raise ValueError("use_backend('triton') needs Triton installed (pip install triton).")
    if not ENABLED:
        raise ValueError("use_backend('triton') with SKTOPK_DISABLE_TRITON set: unset it.")
    reason = module.unsupported_reason(x, k, epsilon, n_perturbations, noise)
    if reason is not None:
        raise ValueError(f"use_backend('triton'): the kernel cannot take this call: {reason}.")
    return module.kth_largest_perturbed_triton


def cpu_kernel_takes(x, k, noise):
    """Whether a call on CPU goes to the compiled kernel (never under the "torch" backend)."""
    return current_backend() != "torch" and _cpu_kernel.supports(x, k, noise)


def require_cpu_kernel(x, k, noise):
    """The CPU kernel, or a ValueError saying why it cannot take the call ("cpu_kernel" backend)."""
    if not _cpu_kernel.supports(x, k, noise):
        reason = _cpu_kernel.unavailable_reason() or (
            f"it takes CPU float32/float64 scores, noise='independent' and k <= "
            f"{_cpu_kernel.MAX_K}; got device {x.device.type}, dtype {x.dtype}, "
            f"noise={noise!r}, k={k}")
        raise ValueError(f"use_backend('cpu_kernel'): the kernel cannot take this call: {reason}.")
    return _cpu_kernel.kth_largest_perturbed_cpu
