"""Concurrent fits in threads against sequential fits, many rounds (issue 13's acceptance).

Four `TopKClassifier` fits with `dropout=0.2` and fixed `random_state`s run at the same time in
threads, `--rounds` times; each round must give bit-identical decision functions to the same fits
run one after the other, and the caller's global torch RNG must be unchanged at the end.

    python benchmarks/check_threads.py --rounds 20
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import make_classification

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.test_fit_transactions import FAST, _fit_all, _fit_in_threads  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    X, y = make_classification(n_samples=160, n_features=6, n_informative=5, n_redundant=0,
                               n_classes=4, random_state=0)
    X = X.astype(np.float32)
    params = [dict(FAST, k=2, dropout=0.2, random_state=seed) for seed in range(4)]
    sequential = [clf.decision_function(X) for clf in _fit_all(params, X, y)]
    torch.manual_seed(99)
    state = torch.random.get_rng_state()
    identical = 0
    for _ in range(args.rounds):
        threaded = _fit_in_threads(params, X, y)
        identical += all(np.array_equal(clf.decision_function(X), expected)
                         for clf, expected in zip(threaded, sequential, strict=True))
    unchanged = torch.equal(state, torch.random.get_rng_state())
    print(f"{identical}/{args.rounds} rounds bit-identical to sequential fits; "
          f"global RNG unchanged: {unchanged}")
    return 0 if identical == args.rounds and unchanged else 1


if __name__ == "__main__":
    sys.exit(main())
