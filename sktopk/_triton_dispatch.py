"""Choose the fused Triton kernel for the perturbed k-th largest value, when it can run.

The kernel lives in :mod:`sktopk._triton_perturbed`, imported lazily here so that
sktopk imports and works without Triton (the torch path is then used).

Set the environment variable ``SKTOPK_DISABLE_TRITON=1`` (read at import), or
the module attribute ``ENABLED = False``, to force the torch path, e.g. to
compare the two.
"""

import os

import torch

#: False forces the torch path everywhere.
ENABLED = os.environ.get("SKTOPK_DISABLE_TRITON", "0") in ("", "0")

_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_SUPPORTED_NOISE = ("independent", "shared")
_module = None


def _interpreting():
    # Triton's own switch: kernels then run on CPU tensors through numpy.
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


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


def get_kernel(x, k, noise):
    """Return a callable with the signature of ``kth_largest_perturbed_torch``, or None.

    None means: use the torch path. The kernel is returned when ``x`` is a 2-D
    float32/float16/bfloat16 CUDA tensor, Triton imports, ``1 <= k <= 64`` and
    ``noise`` is "independent" or "shared". CPU tensors get the kernel only under
    ``TRITON_INTERPRET=1`` (Triton's interpreter, for tests); the dispatcher in
    :mod:`sktopk._perturbed` never asks for them.

    Parameters
    ----------
    x : torch.Tensor of shape (N, C)
        The scores.
    k : int
        Rank of the k-th largest value.
    noise : str
        Noise mode.

    Returns
    -------
    callable or None
    """
    if not ENABLED or noise not in _SUPPORTED_NOISE:
        return None
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.dtype not in _SUPPORTED_DTYPES:
        return None
    if not (x.is_cuda or (x.device.type == "cpu" and _interpreting())):
        return None
    module = _load_kernel_module()
    if module is None or not 1 <= k <= min(module.MAX_K, x.shape[1]):
        return None
    return module.kth_largest_perturbed_triton
