"""
================================================
The smoothed k-th largest value and its gradient
================================================

The top-K hinge loss of Garcin et al. (ICML 2022) compares the score of the true
class with the (K+1)-th largest score. The k-th largest value of a vector is
piecewise linear: its gradient is a one-hot vector that jumps from one
coordinate to another, which gives a poor training signal. The paper smooths it
by Gaussian perturbation,

.. math::

    T_{k,\\varepsilon}(x) = \\mathbb{E}_Z\\left[(x + \\varepsilon Z)_{[k]}\\right],
    \\qquad Z \\sim \\mathcal{N}(0, I),

whose gradient is the probability, for each coordinate, of being the k-th
largest after perturbation: a probability vector instead of a one-hot one.

This example draws :func:`sktopk.functional.perturbed_topk` (a Monte-Carlo
estimate over ``n_perturbations`` draws) along a line ``x + t e_j``, for a few
noise levels ``epsilon``: the value, and the gradient.
"""

# %%
# Setup
# -----
# Figures are written to the folder named by the environment variable
# ``SKTOPK_EXAMPLES_OUT`` (default: the current working directory).
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from sktopk.functional import perturbed_topk

OUT = Path(os.environ.get("SKTOPK_EXAMPLES_OUT", "."))
OUT.mkdir(parents=True, exist_ok=True)
start = time.perf_counter()

# %%
# A line through score space
# --------------------------
# Take 5 class scores ``x = (3, 1, 0.5, -0.5, 0)`` and move the last one,
# ``x_4``, by ``t``. We look at the 2nd largest value ``T_2(x + t e_4)``: while
# ``x_4 + t`` is below 1 the second largest is ``x_1 = 1``, between 1 and 3 it
# is ``x_4 + t`` itself, and above 3 it is ``x_0 = 3``. The exact function
# (``epsilon=0``) is flat / slope 1 / flat, with two kinks; its derivative in
# ``t`` is the 4th coordinate of the gradient, a step function worth 0 or 1.
#
# All values of ``t`` are evaluated in one batch (one row per ``t``). With
# ``noise="shared"`` every row reuses the same Gaussian draws (common random
# numbers), so the Monte-Carlo error is the same along the curve and the
# estimate is a smooth-looking function of ``t``; the expectation is the same
# as with the default, independent noise. A seeded ``torch.Generator`` makes the
# figure reproducible.
x = torch.tensor([3.0, 1.0, 0.5, -0.5, 0.0], dtype=torch.float64)
j, k = 4, 2
t = torch.linspace(-1.5, 5.5, 281, dtype=torch.float64)
epsilons = [0.0, 0.1, 0.3, 1.0]
n_perturbations = 20_000


def smoothed_along_line(epsilon, seed=0):
    """Value T_k(x + t e_j) for every t, and its gradient with respect to x."""
    points = x.repeat(len(t), 1)
    points[:, j] += t
    points.requires_grad_(True)
    generator = torch.Generator().manual_seed(seed)
    values = perturbed_topk(points, k=k, epsilon=epsilon, n_perturbations=n_perturbations,
                            generator=generator, noise="shared")
    # Rows are independent, so the gradient of the sum gives each row's gradient.
    values.sum().backward()
    return values.detach().numpy(), points.grad.numpy()


curves = {eps: smoothed_along_line(eps) for eps in epsilons}

# %%
# Value and slope
# ---------------
# Left: the exact k-th largest value has two kinks; the noise rounds them off,
# over a width of a few ``epsilon``. The smoothed curve lies above the exact
# one at the convex kink (``t = 1``) and below it at the concave one (``t = 3``);
# with ``epsilon=1`` the whole curve also moves, since the noise is then as
# large as the gaps between the other scores. Right: the slope ``d T / d t``,
# the 4th coordinate of the gradient: an indicator at ``epsilon=0``, a smooth
# bump for ``epsilon > 0`` (the probability that ``x_4 + t`` is the 2nd
# largest after perturbation).
colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(epsilons)))
fig, (ax_value, ax_grad) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
for eps, color in zip(epsilons, colors, strict=True):
    values, grads = curves[eps]
    label = "exact (epsilon=0)" if eps == 0 else f"epsilon={eps}"
    ax_value.plot(t, values, color=color, label=label, lw=2 if eps == 0 else 1.5)
    ax_grad.plot(t, grads[:, j], color=color, label=label, lw=2 if eps == 0 else 1.5)
ax_value.set(xlabel="t", ylabel=f"T_{k}(x + t e_{j})",
             title="Smoothed 2nd largest value along x + t e_4")
ax_grad.set(xlabel="t", ylabel=f"d T_{k} / d t  (gradient coordinate {j})",
            title="Its slope: probability that coordinate 4 is 2nd")
ax_value.legend()
ax_grad.legend()
fig.savefig(OUT / "smoothed_topk_value_and_slope.png", dpi=100)

# %%
# The gradient is a probability vector
# ------------------------------------
# At ``t = 1.5`` (``x_4 + t = 1.5``, between the 2nd and 3rd scores), the exact
# gradient puts all its mass on coordinate 4. With noise, the mass spreads over
# the coordinates that can be 2nd after perturbation, and always sums to 1.
# This spread is what the top-K hinge loss back-propagates: every class that is
# close to the (K+1)-th place gets pushed, not only the one exactly there.
at = int(torch.argmin(torch.abs(t - 1.5)))
fig2, ax = plt.subplots(figsize=(7, 3.5), constrained_layout=True)
width = 0.8 / len(epsilons)
for i, (eps, color) in enumerate(zip(epsilons, colors, strict=True)):
    grad = curves[eps][1][at]
    ax.bar(np.arange(len(x)) + (i - 1.5) * width, grad, width=width, color=color,
           label=f"epsilon={eps}")
    print(f"epsilon={eps:<4} gradient at t=1.5: "
          f"{np.array2string(grad, precision=3, suppress_small=True, floatmode='fixed')}"
          f"  (sum {grad.sum():.4f})")
point = x.clone()
point[j] += 1.5
ax.set_xticks(range(len(x)), [f"class {c}\nscore {float(v):g}" for c, v in enumerate(point)])
ax.set(ylabel="gradient of T_2", title="Gradient of the smoothed 2nd largest value at t=1.5")
ax.legend()
fig2.savefig(OUT / "smoothed_topk_gradient.png", dpi=100)

# %%
# Monte-Carlo error
# -----------------
# With ``B`` draws the estimate of the value has a standard error of order
# ``epsilon / sqrt(B)``. The losses use small ``B`` (5 to 10): the noise is
# drawn afresh at every training step, so the errors average out over steps,
# like mini-batch noise. Here, with ``B = 20000``, the curves are accurate to
# about 1e-2 at ``epsilon=1``: compare two seeds.
other_seed, _ = smoothed_along_line(1.0, seed=1)
print(f"max |difference| between two seeds at epsilon=1: "
      f"{np.abs(other_seed - curves[1.0][0]).max():.4f}")
print(f"Figures written to {OUT.resolve()} (smoothed_topk_value_and_slope.png, "
      f"smoothed_topk_gradient.png) in {time.perf_counter() - start:.1f} s")
