"""Brute-force float64 references shared by the loss tests."""

import numpy as np
import torch


def reference_perturbed_topk(x, k, epsilon, n_perturbations, seed, noise="independent"):
    """Brute force in float64 with the noise the implementation documents it draws."""
    gen = torch.Generator().manual_seed(seed)
    n_rows, n_cols = x.shape
    rows = 1 if noise == "shared" else n_rows
    values = np.zeros(n_rows)
    grad = np.zeros((n_rows, n_cols))
    x64 = x.detach().double().numpy()
    for _ in range(n_perturbations):
        z = torch.randn(rows, n_cols, generator=gen, dtype=x.dtype).double().numpy()
        perturbed = x64 + epsilon * z
        order = np.argsort(-perturbed, axis=1, kind="stable")
        winner = order[:, k - 1]
        values += perturbed[np.arange(n_rows), winner]
        grad[np.arange(n_rows), winner] += 1.0
    return values / n_perturbations, grad / n_perturbations
