"""Sweep the training levers on the bundled data, scored on the VALIDATION split only.

Used to choose the estimators' defaults (benchmarks/RESULTS.md, section 5). Same
protocol as ``reproduce_paper.py`` (60/20/20 split per seed, tf-idf + SVD to 256
dimensions fitted on the training texts, MLP with ``hidden_layer_sizes=(512,)``,
``max_epochs=40``); the test split is never touched here.

- ``cities``: GeoNames cities (long tail), ImbalancedTopKClassifier and
  cross-entropy variants; selection metric macro top-5.
- ``languages``: UDHR languages with 0, 20 or 40% of the training and validation
  labels corrupted; TopKClassifier and cross-entropy variants; selection metric top-5.

Each row is appended to ``benchmarks/results/sweep_<data>.jsonl`` with the commit,
library versions and thread count.

Usage::

    python benchmarks/sweep_defaults.py cities --grid coarse --seeds 0 1
    python benchmarks/sweep_defaults.py languages --noise 0.2 --grid coarse --seeds 0
    python benchmarks/sweep_defaults.py cities --table benchmarks/results/sweep_*.jsonl
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from reproduce_paper import provenance, split_three_ways  # noqa: E402

from sktopk import ImbalancedTopKClassifier, TopKClassifier  # noqa: E402
from sktopk._logit_adjusted import posthoc_logit_adjust  # noqa: E402
from sktopk.datasets import (  # noqa: E402
    corrupt_labels,
    load_cities,
    load_languages,
    make_text_vectorizer,
)
from sktopk.metrics import top_k_accuracy_score  # noqa: E402

BASE = {"hidden_layer_sizes": (512,), "max_epochs": 40}
ESTIMATORS = {"imb": ImbalancedTopKClassifier, "topk": TopKClassifier}
CE = {"loss": "cross_entropy"}
POSTHOC_TAUS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)

# label -> (estimator, parameters on top of BASE and the estimator's defaults)
GRIDS = {
    "cities": {
        "coarse": {
            "ce": ("topk", CE),
            "ce+la_auto": ("topk", {**CE, "logit_adjustment": "auto", "monitor": "macro_top_k"}),
            "la_ce": ("topk", {"loss": "logit_adjusted", "monitor": "macro_top_k"}),
            "imb": ("imb", {}),
            "imb eps.03": ("imb", {"epsilon": 0.03}),
            "imb eps.05": ("imb", {"epsilon": 0.05}),
            "imb eps.1": ("imb", {"epsilon": 0.1}),
            "imb eps.05 la": ("imb", {"epsilon": 0.05, "logit_adjustment": "auto"}),
            "imb eps.05 drw.5": ("imb", {"epsilon": 0.05, "drw_start": 0.5}),
            "imb eps.05 cos": ("imb", {"epsilon": 0.05, "lr_schedule": "cosine"}),
            "imb eps.05 ce.1": ("imb", {"epsilon": 0.05, "ce_weight": 0.1}),
            "imb eps.05 s30": ("imb", {"epsilon": 0.05, "scale": 30.0}),
            "imb eps.05 m.4": ("imb", {"epsilon": 0.05, "max_margin": 0.4}),
            "imb eps.05 drop.3": ("imb", {"epsilon": 0.05, "dropout": 0.3}),
            "imb eps.05 lr3e-3": ("imb", {"epsilon": 0.05, "learning_rate": 3e-3}),
            "imb eps.05 B10": ("imb", {"epsilon": 0.05, "n_perturbations": 10}),
        },
        "raw": {
            "ce": ("topk", CE),
            "imb": ("imb", {}),
        },
        "refine": {
            "imb eps.2": ("imb", {"epsilon": 0.2}),
            "imb eps.3": ("imb", {"epsilon": 0.3}),
            "ce": ("topk", CE),
            "imb eps.2 drw.5": ("imb", {"epsilon": 0.2, "drw_start": 0.5}),
            "imb eps.2 m.4": ("imb", {"epsilon": 0.2, "max_margin": 0.4}),
            "imb eps.2 cos": ("imb", {"epsilon": 0.2, "lr_schedule": "cosine"}),
            "imb eps.2 lr3e-3": ("imb", {"epsilon": 0.2, "learning_rate": 3e-3}),
            "imb eps.2 drop.3": ("imb", {"epsilon": 0.2, "dropout": 0.3}),
            "imb eps.2 ce.1": ("imb", {"epsilon": 0.2, "ce_weight": 0.1}),
        },
    },
    "languages": {
        "coarse": {
            "ce": ("topk", CE),
            "ce drop.3": ("topk", {**CE, "dropout": 0.3}),
            "ce cos": ("topk", {**CE, "lr_schedule": "cosine"}),
            "hinge": ("topk", {}),
            "hinge drop.3": ("topk", {"dropout": 0.3}),
            "hinge drop.5": ("topk", {"dropout": 0.5}),
            "hinge ce.1": ("topk", {"ce_weight": 0.1}),
            "hinge ce.3": ("topk", {"ce_weight": 0.3}),
            "hinge eps.3": ("topk", {"epsilon": 0.3}),
            "hinge B5": ("topk", {"n_perturbations": 5}),
            "hinge lr3e-4": ("topk", {"learning_rate": 3e-4}),
            "hinge wd1e-2": ("topk", {"weight_decay": 1e-2}),
            "hinge cos": ("topk", {"lr_schedule": "cosine"}),
            "hinge monitor=loss": ("topk", {"monitor": "loss"}),
        },
        "raw": {
            "ce": ("topk", CE),
            "hinge": ("topk", {}),
        },
        # A larger noise scale than the default 1 (session 9: untested upwards so far).
        "epsilon": {
            "ce": ("topk", CE),
            "hinge": ("topk", {}),
            "hinge eps2": ("topk", {"epsilon": 2.0}),
            "hinge eps4": ("topk", {"epsilon": 4.0}),
        },
        # Does early stopping explain why the hinge ties cross-entropy under noise?
        # Both trained for 100 epochs without it (a network that can memorise).
        "no_early_stopping": {
            "ce": ("topk", {**CE, "early_stopping": False, "max_epochs": 100}),
            "hinge": ("topk", {"early_stopping": False, "max_epochs": 100}),
        },
    },
}


def load_split(data, seed, noise, features="svd"):
    """Training and validation features and labels of one seed (the test part is dropped).

    ``features="svd"``: tf-idf reduced to 256 dense dimensions; ``"raw"``: the sparse
    tf-idf matrix itself (fed to the first layer without densifying).
    """
    bunch = load_cities() if data == "cities" else load_languages()
    texts = list(bunch.data)
    train, val, _ = split_three_ways(bunch.target, np.random.default_rng(seed))
    n_components = 256 if features == "svd" else None
    vectorizer = make_text_vectorizer(n_components=n_components, random_state=seed)
    X_train = vectorizer.fit_transform([texts[i] for i in train]).astype(np.float32)
    X_val = vectorizer.transform([texts[i] for i in val]).astype(np.float32)
    y_train, y_val = bunch.target[train], bunch.target[val]
    if noise > 0:
        y_train = corrupt_labels(y_train, noise, random_state=seed)
        y_val = corrupt_labels(y_val, noise, random_state=seed + 1000)
    return X_train, y_train, X_val, y_val


def table(paths):
    """Markdown table of sweep rows (one per setting and seed), validation split only."""
    rows = [json.loads(line) for path in paths for line in Path(path).read_text().splitlines()
            if line.strip()]
    lines = ["| data | features | noise | setting | seed | commit | epochs | val top-1 | "
             "val top-5 | val macro top-5 | + post-hoc tau=0.25 (top-5 / macro) | + tau=1 | "
             "+ tau=1.5 | + tau=2 |", "|" + "---|" * 14]
    for row in rows:
        cells = []
        for tau in ("0.25", "1.0", "1.5", "2.0"):
            pair = row.get("posthoc", {}).get(tau)
            cells.append("-" if pair is None else f"{100 * pair[0]:.1f} / {100 * pair[1]:.1f}")
        lines.append(
            f"| {row['data']} | {row.get('features', 'svd')} | {row['noise']} | {row['label']} | "
            f"{row['seed']} | {row['commit']} | {row['epochs']} | {100 * row['val_top1']:.1f} | "
            f"{100 * row['val_top5']:.1f} | {100 * row['val_macro_top5']:.1f} | "
            + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", choices=["cities", "languages"])
    parser.add_argument("--noise", type=float, default=0.0)
    parser.add_argument("--grid", default="coarse")
    parser.add_argument("--only", nargs="*", help="labels of the grid to run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--features", choices=["svd", "raw"], default="svd")
    parser.add_argument("--table", nargs="+", metavar="JSONL",
                        help="print the markdown table of these result files and exit")
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.table))
        return
    torch.set_num_threads(1)
    grid = GRIDS[args.data][args.grid]
    labels = args.only or list(grid)
    out = Path(args.out) if args.out else HERE / "results" / f"sweep_{args.data}.jsonl"
    out.parent.mkdir(exist_ok=True)
    info = provenance()  # once, at the start: the code this process has loaded
    for seed in args.seeds:
        X_train, y_train, X_val, y_val = load_split(args.data, seed, args.noise, args.features)
        for label in labels:
            kind, params = grid[label]
            clf = ESTIMATORS[kind](**{**BASE, **params}, random_state=seed)
            start = time.perf_counter()
            clf.fit(X_train, y_train)
            seconds = time.perf_counter() - start
            scores = clf.decision_function(X_val)
            row = {"data": args.data, "noise": args.noise, "seed": seed, "grid": args.grid,
                   "features": args.features,
                   "label": label, "estimator": kind, "params": params,
                   "epochs": clf.n_iter_, "fit_seconds": round(seconds, 1),
                   "tau": clf.logit_adjustment_, **info}
            for name, k, average in (("top1", 1, "micro"), ("top5", 5, "micro"),
                                     ("macro_top5", 5, "macro")):
                row[f"val_{name}"] = top_k_accuracy_score(y_val, scores, k=k, average=average,
                                                          labels=clf.classes_)
            # The macro/micro trade-off of post-hoc logit adjustment on top of the
            # model's own setting, on the validation split (for choosing its default).
            logits = scores * clf._logit_scale()
            row["posthoc"] = {
                str(tau): [top_k_accuracy_score(y_val, adjusted, k=5, labels=clf.classes_),
                           top_k_accuracy_score(y_val, adjusted, k=5, average="macro",
                                                labels=clf.classes_)]
                for tau in POSTHOC_TAUS
                for adjusted in [posthoc_logit_adjust(logits, clf.class_counts_, tau)]}
            with out.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
