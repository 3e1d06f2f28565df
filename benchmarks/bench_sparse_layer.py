"""Time one training step of a first layer on raw sparse tf-idf columns.

A training step of the built-in MLP's first layer (forward, backward, optimiser
step) on CSR batches shaped like the raw character n-grams of GeoNames cities
(50,000 columns, 256 rows of about 33 non-zeros, 256 outputs), three ways:

- ``spmm + adamw``: torch's sparse-dense matmul and its autograd backward, with
  AdamW's default (for-each) step: sktopk 0.9.0;
- ``bag + adamw``: sktopk's sparse first layer (an embedding bag forward, a
  column scatter backward), same optimiser step;
- ``bag + fused adamw``: the same with torch's fused AdamW step, what the
  estimators use now where torch has it.

Rounds are interleaved (each round runs every variant once, in turn), and the
table gives the median step time and its ratio to the first variant, all in one
process, one torch thread.

Usage::

    python benchmarks/bench_sparse_layer.py --rounds 15
"""

import argparse
import platform
import statistics
import time

import numpy as np
import scipy.sparse as sp
import torch

from sktopk._modules import SparseInputLinear
from sktopk._training import csr_to_torch


class _SpmmLinear(torch.nn.Linear):
    """The 0.9.0 first layer: torch's sparse matmul, autograd's backward."""

    def forward(self, x):
        return torch.sparse.mm(x, self.weight.T) + self.bias


def _batches(n_columns, rows, nnz_per_row, count, seed):
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        # Zipf-like column popularity, like n-grams.
        cols = np.minimum(rng.zipf(1.3, size=(rows, nnz_per_row)) - 1, n_columns - 1)
        data = rng.random((rows, nnz_per_row)).astype(np.float32)
        matrix = sp.csr_matrix((data.ravel(), cols.ravel(),
                                np.arange(0, rows * nnz_per_row + 1, nnz_per_row)),
                               shape=(rows, n_columns))
        matrix.sum_duplicates()
        batches.append(csr_to_torch(matrix))
    return batches


def _step(layer, optimizer, batch, upstream):
    optimizer.zero_grad()
    (layer(batch) * upstream).sum().backward()
    optimizer.step()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--columns", type=int, default=50000)
    parser.add_argument("--outputs", type=int, default=256)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--nnz", type=int, default=33)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=5, help="steps per round and variant")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    batches = _batches(args.columns, args.rows, args.nnz, args.steps, seed=0)
    upstream = torch.randn(args.rows, args.outputs, generator=torch.Generator().manual_seed(1))
    variants = {}
    for name, layer_class, fused in (("spmm + adamw", _SpmmLinear, False),
                                     ("bag + adamw", SparseInputLinear, False),
                                     ("bag + fused adamw", SparseInputLinear, True)):
        layer = layer_class(args.columns, args.outputs)
        variants[name] = (layer, torch.optim.AdamW(layer.parameters(), fused=fused))
    times = {name: [] for name in variants}
    for layer, optimizer in variants.values():  # warm-up
        _step(layer, optimizer, batches[0], upstream)
    for _ in range(args.rounds):
        for name, (layer, optimizer) in variants.items():
            start = time.perf_counter()
            for batch in batches:
                _step(layer, optimizer, batch, upstream)
            times[name].append((time.perf_counter() - start) / len(batches) * 1e3)
    base = statistics.median(times["spmm + adamw"])
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"1 thread; {args.columns} columns, {args.rows} rows x {args.nnz} non-zeros, "
          f"{args.outputs} outputs; {args.rounds} rounds x {args.steps} steps\n")
    print("| variant | step (ms, median) | ratio to spmm + adamw |")
    print("|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.1f} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
