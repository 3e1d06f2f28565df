"""Choose the backend of the perturbed operator for a block of code.

The smoothed top-K losses compute their perturbed (K+1)-th largest score with
one of several exact implementations: the dense torch path, the fused Triton
kernel (CUDA), or the sparse sampler. Each call picks one by itself (see the
``sampler`` parameter of :func:`sktopk.functional.perturbed_topk`);
:func:`use_backend` forces one inside a ``with`` block, e.g. to compare them.
"""

from ._triton_dispatch import BACKENDS, current_backend, use_backend

__all__ = ["BACKENDS", "current_backend", "use_backend"]
