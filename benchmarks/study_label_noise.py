"""Choose TopKClassifier's defaults under label noise (UDHR languages), on VALIDATION only.

The test split is never read here (the one test comparison is
``reproduce_paper.py defaults --datasets languages``).

Protocol (that of ``reproduce_paper.py defaults`` on languages, per seed): the
60/20/20 per-class split of the balanced UDHR languages (335 classes x 20
chunks), tf-idf + SVD 256 fitted on the training texts; the training labels are
corrupted at 0, 20 and 40% (``corrupt_labels``, uniform, exact rate, seed =
the split's seed, as in ``reproduce_paper.py``); each estimator fits the whole
training split at its defaults plus the setting's parameters (early stopping on
its own 10% hold-out of the noisy training labels). Scores: the validation
split's **clean** labels (what the test split measures), and its labels
corrupted at the same rate (seed + 1000, what a user would have), both recorded.

Round 1 (eleventh session; rule fixed before any row of this round was read).
The balanced hinge is 0.8 top-5 points below cross-entropy on clean languages at
0.10.0 but loses less to noise (3.4 points from 0 to 40% noise against 4.6):
a lever that closes the clean gap without the robustness would also lift the
noisy rows. Candidates are loss-specific (they leave the cross-entropy baseline
unchanged): a cross-entropy term ``ce_weight`` 0.1, 0.3 and 1 (``hinge +
ce_weight * CE``, which ``ImbalancedTopKClassifier`` already uses at 0.3).
Rule: with D(S, n) the mean over seeds 0-4 of the paired (same seed) clean
validation top-5 difference S - "ce" at noise n, ``TopKClassifier`` gets
``ce_weight="auto"`` meaning the candidate's value for its hinge loss (0 for
any other loss) if the mean over the three noise levels of D(S, n) - D(hinge,
n) is >= +0.3 points and its minimum over them is >= -0.2; among several, the
largest mean. Dropout 0.3 ("hinge drop.3", "ce drop.3") is a question only:
it changes both estimators' baseline, so no default follows from it here.

Each row (one fit) is appended to ``benchmarks/results/study_label_noise.jsonl``
with epochs, fit seconds, commit, versions and thread count.

Usage::

    python benchmarks/study_label_noise.py --seeds 0 1 2 3 4
    python benchmarks/study_label_noise.py --compare benchmarks/results/study_label_noise.jsonl
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

from reproduce_paper import provenance, t_half_width  # noqa: E402
from sweep_defaults import load_split  # noqa: E402

from sktopk import TopKClassifier  # noqa: E402
from sktopk.datasets import corrupt_labels  # noqa: E402
from sktopk.metrics import top_k_accuracy_score  # noqa: E402

K = 5
NOISES = (0.0, 0.2, 0.4)
CE = {"loss": "cross_entropy"}
# label -> TopKClassifier parameters on top of its defaults
SETTINGS = {
    "ce": CE,
    "hinge": {},
    # Round 1: a cross-entropy term in the balanced hinge; dropout (a question).
    "hinge ce.1": {"ce_weight": 0.1},
    "hinge ce.3": {"ce_weight": 0.3},
    "hinge ce1": {"ce_weight": 1.0},
    "hinge drop.3": {"dropout": 0.3},
    "ce drop.3": {**CE, "dropout": 0.3},
}


def run(settings, seeds, noises, out):
    info = provenance()
    for seed in seeds:
        X_train, y_train, X_val, y_val = load_split("languages", seed, noise=0.0)  # clean
        for noise in noises:
            noisy_train = (corrupt_labels(y_train, noise, random_state=seed)
                           if noise else y_train)
            noisy_val = (corrupt_labels(y_val, noise, random_state=seed + 1000)
                         if noise else y_val)
            for label in settings:
                clf = TopKClassifier(**SETTINGS[label], random_state=seed)
                start = time.perf_counter()
                clf.fit(X_train, noisy_train)
                seconds = time.perf_counter() - start
                scores = clf.decision_function(X_val)
                row = {"setting": label, "noise": noise, "seed": seed,
                       "params": SETTINGS[label], "epochs": clf.n_iter_,
                       "fit_seconds": round(seconds, 1), **info,
                       "val_clean": [top_k_accuracy_score(y_val, scores, k=k,
                                                          labels=clf.classes_)
                                     for k in (1, K)],
                       "val_noisy": [top_k_accuracy_score(noisy_val, scores, k=k,
                                                          labels=clf.classes_)
                                     for k in (1, K)]}
                with out.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
                print(json.dumps({k: v for k, v in row.items() if k != "params"}), flush=True)


def compare(paths, reference="hinge", commits=None):
    """Per noise level: mean figures, paired differences to "ce" and to ``reference``."""
    rows = [json.loads(line) for path in paths for line in Path(path).read_text().splitlines()
            if line.strip()]
    if commits:
        rows = [row for row in rows if row["commit"] in commits]
    by = {}
    for row in rows:
        by.setdefault(row["noise"], {}).setdefault(row["setting"], {})[row["seed"]] = row
    lines = ["| noise | setting | seeds | epochs | clean val top-1 | clean val top-5 | "
             "d top-5 to ce [95% CI] | d top-5 to " + reference + " | noisy val top-5 |",
             "|" + "---|" * 9]
    gains = {}
    for noise in sorted(by):
        cells = by[noise]
        ce, ref = cells.get("ce", {}), cells.get(reference, {})
        for setting, by_seed in cells.items():
            seeds = sorted(by_seed)
            clean = np.array([by_seed[s]["val_clean"] for s in seeds]) * 100
            noisy = np.array([by_seed[s]["val_noisy"][1] for s in seeds]) * 100
            d_ce = np.array([by_seed[s]["val_clean"][1] - ce[s]["val_clean"][1]
                             for s in seeds if s in ce]) * 100
            d_ref = np.array([by_seed[s]["val_clean"][1] - ref[s]["val_clean"][1]
                              for s in seeds if s in ref]) * 100
            half = t_half_width(d_ce)
            gains.setdefault(setting, {})[noise] = d_ref.mean() if len(d_ref) else np.nan
            epochs = np.mean([by_seed[s]["epochs"] for s in seeds])
            lines.append(f"| {noise:.1f} | {setting} | {len(seeds)} | {epochs:.0f} | "
                         f"{clean[:, 0].mean():.1f} | {clean[:, 1].mean():.1f} | "
                         f"{d_ce.mean():+.2f} [{d_ce.mean() - half:+.2f}, "
                         f"{d_ce.mean() + half:+.2f}] | {d_ref.mean():+.2f} | "
                         f"{noisy.mean():.1f} |")
    lines += ["", f"| setting | mean over noise of d top-5 to {reference} | min |", "|---|---|---|"]
    for setting, per_noise in gains.items():
        values = np.array(list(per_noise.values()))
        lines.append(f"| {setting} | {values.mean():+.2f} | {values.min():+.2f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--noises", type=float, nargs="+", default=list(NOISES))
    parser.add_argument("--out", default=str(HERE / "results" / "study_label_noise.jsonl"))
    parser.add_argument("--compare", nargs="+", metavar="JSONL",
                        help="print the paired differences of these result files and exit")
    parser.add_argument("--reference", default="hinge")
    parser.add_argument("--commits", nargs="+", metavar="HASH")
    args = parser.parse_args(argv)
    if args.compare:
        print(compare(args.compare, args.reference, args.commits))
        return
    torch.set_num_threads(1)
    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    run(args.settings, args.seeds, args.noises, out)


if __name__ == "__main__":
    main()
