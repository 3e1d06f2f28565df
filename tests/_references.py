"""Brute-force float64 references shared by the loss tests."""

import numpy as np
import torch

from sktopk import _cpu_kernel


def reference_perturbed_topk(x, k, epsilon, n_perturbations, seed, noise="independent",
                             backend="torch"):
    """Brute force in float64 with the noise the implementation documents it draws.

    ``backend="torch"``: the torch path's noise, ``randn`` draws in order;
    ``"cpu_kernel"``: the C kernel's, rebuilt from the key it draws from the
    generator.
    """
    gen = torch.Generator().manual_seed(seed)
    n_rows, n_cols = x.shape
    rows = 1 if noise == "shared" else n_rows
    values = np.zeros(n_rows)
    grad = np.zeros((n_rows, n_cols))
    x64 = x.detach().double().numpy()
    key = _cpu_kernel.draw_seed(gen) if backend == "cpu_kernel" else None
    for draw in range(n_perturbations):
        if key is None:
            z = torch.randn(rows, n_cols, generator=gen, dtype=x.dtype).double().numpy()
        else:
            z = np.stack([_cpu_kernel.kernel_normals(key, row, draw, n_cols).double().numpy()
                          for row in range(n_rows)])
        perturbed = x64 + epsilon * z
        order = np.argsort(-perturbed, axis=1, kind="stable")
        winner = order[:, k - 1]
        values += perturbed[np.arange(n_rows), winner]
        grad[np.arange(n_rows), winner] += 1.0
    return values / n_perturbations, grad / n_perturbations
