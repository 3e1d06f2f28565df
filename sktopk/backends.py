"""Choose the backend of the perturbed operator for a block of code.

The smoothed top-K losses compute their perturbed (K+1)-th largest score with
one of several exact implementations: the dense torch path, the fused Triton
kernel (CUDA), the compiled CPU kernel, or the sparse sampler. Each call picks
one by itself (see the ``sampler`` parameter of
:func:`sktopk.functional.perturbed_topk`); :func:`use_backend` forces one inside
a ``with`` block, e.g. to compare them, and :func:`cpu_kernel_unavailable_reason`
says why the CPU kernel is not used.
"""

from ._cpu_kernel import unavailable_reason as cpu_kernel_unavailable_reason
from ._triton_dispatch import BACKENDS, current_backend, use_backend

__all__ = ["BACKENDS", "cpu_kernel_unavailable_reason", "current_backend", "use_backend"]
