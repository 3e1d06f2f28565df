"""Check the paper's three claims on real data that ships in PyPI packages.

Garcin, Servajean, Joly & Salmon (ICML 2022) claim that the smoothed top-K hinge
loss (1) is as good as the best top-K loss on balanced data and more robust to
label noise, (2) with class margins, beats cross-entropy, focal and LDAM in
macro top-K accuracy on heavy-tailed data, (3) costs far less than the smooth
top-K SVM of Berrada et al. This script tests each claim here:

- ``noise``: UDHR language chunks (balanced, 335 classes), training and validation
  labels corrupted at rate 0, 0.2, 0.4, clean test labels; cross-entropy, smooth
  top-K SVM and top-K hinge; top-1 and top-5 accuracy.
- ``cities``: GeoNames city name -> country (long-tailed, ~210 classes);
  cross-entropy, focal, LDAM, smooth SVM, balanced and imbalanced top-K hinge;
  top-5 and macro top-5 accuracy, fit time.
- ``cost``: forward+backward time of the losses versus C and k (a figure).
- ``defaults``: every estimator at its defaults (no tuning), cities and languages
  with 0, 20 and 40% label noise, with the paired difference to cross-entropy;
  ``--datasets languages_lt``: the long-tailed languages of ``study_long_tail.py``;
  ``--features raw``: the sparse tf-idf columns themselves instead of the SVD;
  ``--features char``: a character CNN encoder trained end to end with each
  loss (``char_cnn.py``), through the estimators' ``module`` parameter;
  ``--noise-mode block``: the paper's label noise (within blocks of 5 classes).

Protocol (the same for every method): per seed, a stratified 60/20/20
train/validation/test split in which every class keeps at least one training
sample (so single-city countries are never tested); character n-gram tf-idf
reduced to 256 dimensions by SVD, fitted on the training texts; the same MLP
(256-512-C, AdamW, batch 256, early stopping on an internal 10% hold-out of the
training split); each method gets two values of its own main hyperparameter,
chosen on the validation split (top-5 for languages, macro top-5 for cities); the
chosen model is scored once on the test split. Mean and standard deviation over
the seeds, and the paired (same seed, same split) difference to cross-entropy with
its 95% t-interval. Every raw row records the commit, the library versions and
the torch thread count.

Usage::

    python benchmarks/reproduce_paper.py noise --seeds 0 1 2
    python benchmarks/reproduce_paper.py cities --seeds 0 1 2
    python benchmarks/reproduce_paper.py cost
    python benchmarks/reproduce_paper.py defaults --seeds 0 1 2 3 4
    python benchmarks/reproduce_paper.py table --rows benchmarks/results/reproduce_*.json
"""

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import sklearn
import skorch
import torch
from scipy import stats

from sktopk import ImbalancedTopKClassifier, TopKClassifier
from sktopk.datasets import corrupt_labels, load_cities, load_languages, make_text_vectorizer
from sktopk.metrics import top_k_accuracy_score

HERE = Path(__file__).resolve().parent
K = 5
COMMON = {"hidden_layer_sizes": (512,), "batch_size": 256, "max_epochs": 40,
          "n_iter_no_change": 5, "k": K}


def split_three_ways(y, rng, valid=0.2, test=0.2):
    """Per-class split keeping at least one training sample in every class."""
    train, val, tst = [], [], []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n = len(members)
        n_test = min(int(round(test * n)), n - 1)
        n_val = min(int(round(valid * n)), n - 1 - n_test)
        tst.append(members[:n_test])
        val.append(members[n_test:n_test + n_val])
        train.append(members[n_test + n_val:])
    return tuple(np.sort(np.concatenate(part)) for part in (train, val, tst))


def char_codes(texts, parts):
    """Character codes of each part (``char_cnn.CharVocabulary`` fitted on the training
    texts, rows as long as the 99th percentile of their lengths), and the vocabulary size."""
    from char_cnn import CharVocabulary

    train = [texts[i] for i in parts[0]]
    length = int(np.ceil(np.percentile([len(text) for text in train], 99)))
    vocabulary = CharVocabulary(max_length=length).fit(train)
    return (*(vocabulary.transform([texts[i] for i in p]) for p in parts), vocabulary.size_)


def featurize(texts, parts, seed, features="svd"):
    """tf-idf + SVD 256 (``"svd"``), or the sparse tf-idf matrix itself (``"raw"``)."""
    n_components = 256 if features == "svd" else None
    vectorizer = make_text_vectorizer(n_components=n_components, random_state=seed)
    train = vectorizer.fit_transform([texts[i] for i in parts[0]]).astype(np.float32)
    rest = [vectorizer.transform([texts[i] for i in p]).astype(np.float32) for p in parts[1:]]
    return (train, *rest)


def candidates(method):
    """(estimator class, fixed params, name of the tuned param, its two values)."""
    return {
        "cross_entropy": (TopKClassifier, {"loss": "cross_entropy"}, "learning_rate",
                          [1e-3, 3e-3]),
        "focal": (TopKClassifier, {"loss": "focal"}, "loss_params",
                  [{"gamma": 1.0}, {"gamma": 2.0}]),
        "ldam": (ImbalancedTopKClassifier, {"loss": "ldam", "scale": 40.0}, "max_margin",
                 [0.2, 0.5]),
        "smooth_svm": (TopKClassifier, {"loss": "smooth_svm"}, "loss_params",
                       [{"tau": 0.1}, {"tau": 1.0}]),
        "topk_hinge": (TopKClassifier, {"loss": "topk_hinge", "n_perturbations": 10},
                       "epsilon", [0.2, 1.0]),
        "imbalanced_topk_hinge": (ImbalancedTopKClassifier, {"logit_adjustment": 0.0},
                                  "epsilon", [0.01, 0.2]),
        # Long-tail baselines and levers (issue 10).
        "logit_adjusted_ce": (TopKClassifier, {"loss": "logit_adjusted",
                                               "monitor": "macro_top_k"},
                              "loss_params", [{"tau": 0.5}, {"tau": 1.0}]),
        "cross_entropy_posthoc": (TopKClassifier, {"loss": "cross_entropy",
                                                   "monitor": "macro_top_k"},
                                  "logit_adjustment", [0.5, 1.0]),
        "cross_entropy_drw": (TopKClassifier, {"loss": "cross_entropy",
                                               "monitor": "macro_top_k"},
                              "drw_start", [0.5, 0.8]),
        "imbalanced_topk_hinge_drw": (ImbalancedTopKClassifier, {"logit_adjustment": 0.0},
                                      "drw_start", [0.5, 0.8]),
        # Post-hoc adjustment on the imbalanced hinge: tau = the default, or chosen
        # on the estimator's own hold-out for macro top-k.
        "imbalanced_topk_hinge_posthoc": (ImbalancedTopKClassifier, {}, "logit_adjustment",
                                          [None, "auto"]),
    }[method]


_PROVENANCE = {}


def provenance():
    """Commit (with '+dirty' if sktopk/ or benchmarks/*.py have uncommitted changes),
    versions, threads: taken once, when the run starts (the code it loaded)."""
    if _PROVENANCE:
        return dict(_PROVENANCE)

    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True,
                              cwd=HERE).stdout.strip()
    # ":/" pathspecs are relative to the repository root (git runs in benchmarks/).
    dirty = "+dirty" if git("status", "--porcelain", ":/sktopk", ":/benchmarks/*.py") else ""
    _PROVENANCE.update({
        "commit": git("rev-parse", "--short", "HEAD") + dirty, "torch": torch.__version__,
        "sklearn": sklearn.__version__, "skorch": skorch.__version__, "numpy": np.__version__,
        "threads": torch.get_num_threads(), "machine": platform.machine()})
    return dict(_PROVENANCE)


def t_half_width(diffs):
    """Half-width of the 95% t-interval of the mean of ``diffs`` (NaN for fewer than two)."""
    if len(diffs) < 2:
        return np.nan
    return stats.t.ppf(0.975, len(diffs) - 1) * np.std(diffs, ddof=1) / np.sqrt(len(diffs))


def paired_difference(rows, metric, baseline, group_keys=()):
    """Mean paired difference to ``baseline`` (same seed and group) with its 95% t-interval."""
    by_key = {}
    for row in rows:
        key = tuple(row.get(k, "-") for k in group_keys)
        seeds = by_key.setdefault(key, {}).setdefault(row["method"], {})
        if row["seed"] in seeds:  # the last row would win silently
            group = dict(zip(group_keys, key, strict=True))
            raise ValueError(f"two rows of {row['method']} for seed {row['seed']} in the group "
                             f"{group}: give rows of one run per group.")
        seeds[row["seed"]] = row[metric]
    prefix = "| " + " | ".join(group_keys) + " " if group_keys else ""
    lines = [prefix + f"| method | {metric} - {baseline} | 95% CI | seeds |",
             "|" + "---|" * (len(group_keys) + 4)]
    for key, methods in by_key.items():
        base = methods.get(baseline, {})
        for method, values in methods.items():
            if method == baseline:
                continue
            seeds = sorted(set(values) & set(base))
            diffs = np.array([values[s] - base[s] for s in seeds]) * 100
            if len(diffs) == 0:
                continue
            mean = diffs.mean()
            if len(diffs) > 1:
                half = t_half_width(diffs)
                interval = f"[{mean - half:+.1f}, {mean + half:+.1f}]"
            else:
                interval = "-"
            cells = "| " + " | ".join(str(k) for k in key) + " " if group_keys else ""
            lines.append(cells + f"| {method} | {mean:+.1f} | {interval} | {len(diffs)} |")
    return "\n".join(lines)


def run_method(method, X, y, seed, select_average):
    """Fit both candidates on train, keep the better on validation, score it on test."""
    Estimator, fixed, tuned, values = candidates(method)
    (X_train, X_val, X_test), (y_train, y_val, y_test) = X, y
    best = None
    for value in values:
        tuned_params = {} if value is None else {tuned: value}
        clf = Estimator(**COMMON, **fixed, **tuned_params, random_state=seed)
        start = time.perf_counter()
        clf.fit(X_train, y_train)
        fit_time = time.perf_counter() - start
        val_score = top_k_accuracy_score(y_val, clf.decision_function(X_val), k=K,
                                         average=select_average, labels=clf.classes_)
        if best is None or val_score > best[0]:
            best = (val_score, value, clf, fit_time)
    val_score, value, clf, fit_time = best
    scores = clf.decision_function(X_test)
    return {
        "method": method, "seed": seed, "chosen": {tuned: value}, "val": val_score,
        "top1": top_k_accuracy_score(y_test, scores, k=1, labels=clf.classes_),
        "top5": top_k_accuracy_score(y_test, scores, k=K, labels=clf.classes_),
        "macro_top5": top_k_accuracy_score(y_test, scores, k=K, average="macro",
                                           labels=clf.classes_),
        "fit_seconds": fit_time, "epochs": clf.n_iter_,
        "tau": getattr(clf, "logit_adjustment_", 0.0), **provenance(),
    }


def summarize(rows, group_keys, metrics):
    groups = {}
    for row in rows:
        groups.setdefault(tuple(row.get(key, "-") for key in group_keys), []).append(row)
    header = "| " + " | ".join(group_keys) + " | " + " | ".join(metrics) + " | seeds |"
    lines = [header, "|" + "---|" * (len(group_keys) + len(metrics) + 1)]
    for key, members in groups.items():
        cells = []
        for metric in metrics:
            values = [m[metric] for m in members]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            scale = 1 if metric == "fit_seconds" else 100
            cells.append(f"{scale * statistics.mean(values):.1f} ± {scale * spread:.1f}")
        lines.append("| " + " | ".join(str(k) for k in key) + " | " + " | ".join(cells)
                     + f" | {len(members)} |")
    return "\n".join(lines)


def part_noise(seeds):
    data = load_languages()
    rows = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        parts = split_three_ways(data.target, rng)
        X = featurize(data.data, parts, seed)
        y_train, y_val, y_test = (data.target[p] for p in parts)
        for noise in (0.0, 0.2, 0.4):
            noisy_train = corrupt_labels(y_train, noise, random_state=seed)
            noisy_val = corrupt_labels(y_val, noise, random_state=seed + 1000)
            for method in ("cross_entropy", "smooth_svm", "topk_hinge"):
                row = run_method(method, X, (noisy_train, noisy_val, y_test), seed, "micro")
                row["noise"] = noise
                rows.append(row)
                print(json.dumps(row), flush=True)
    table = summarize(rows, ["noise", "method"], ["top1", "top5", "fit_seconds"])
    return rows, table + "\n\n" + paired_difference(rows, "top5", "cross_entropy", ("noise",))


def part_cities(seeds):
    data = load_cities()
    rows = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        parts = split_three_ways(data.target, rng)
        X = featurize(list(data.data), parts, seed)
        y = tuple(data.target[p] for p in parts)
        for method in CITIES_METHODS:
            row = run_method(method, X, y, seed, "macro")
            rows.append(row)
            print(json.dumps(row), flush=True)
    table = summarize(rows, ["method"], ["top1", "top5", "macro_top5", "fit_seconds"])
    diffs = [paired_difference(rows, metric, "cross_entropy") for metric in ("top5", "macro_top5")]
    return rows, "\n\n".join([table, *diffs])


CITIES_METHODS = ("cross_entropy", "focal", "ldam", "smooth_svm", "topk_hinge",
                  "imbalanced_topk_hinge", "logit_adjusted_ce", "cross_entropy_posthoc",
                  "cross_entropy_drw", "imbalanced_topk_hinge_drw",
                  "imbalanced_topk_hinge_posthoc")

# The acceptance comparisons: each estimator exactly at its defaults.
DEFAULTS = {
    "cities": {
        "ImbalancedTopKClassifier()": (ImbalancedTopKClassifier, {}),
        "TopKClassifier(loss='cross_entropy')": (TopKClassifier, {"loss": "cross_entropy"}),
        "TopKClassifier(loss='logit_adjusted')": (TopKClassifier, {"loss": "logit_adjusted"}),
        # The same loss early-stopped on the macro metric it is meant for.
        "TopKClassifier(loss='logit_adjusted', monitor='macro_top_k')": (
            TopKClassifier, {"loss": "logit_adjusted", "monitor": "macro_top_k"}),
    },
    # The long-tailed languages of study_long_tail.py (built per seed).
    "languages_lt": {
        "ImbalancedTopKClassifier()": (ImbalancedTopKClassifier, {}),
        "TopKClassifier(loss='cross_entropy')": (TopKClassifier, {"loss": "cross_entropy"}),
        "TopKClassifier(loss='logit_adjusted', monitor='macro_top_k')": (
            TopKClassifier, {"loss": "logit_adjusted", "monitor": "macro_top_k"}),
    },
    "languages": {
        "TopKClassifier()": (TopKClassifier, {}),
        "TopKClassifier(loss='cross_entropy')": (TopKClassifier, {"loss": "cross_entropy"}),
        # Not defaults: both trained for all of max_epochs=100, to see whether early
        # stopping is what protects cross-entropy from the noisy labels.
        "TopKClassifier(early_stopping=False)": (TopKClassifier, {"early_stopping": False}),
        "TopKClassifier(loss='cross_entropy', early_stopping=False)": (
            TopKClassifier, {"loss": "cross_entropy", "early_stopping": False}),
    },
}


def part_defaults(seeds, datasets=("cities", "languages"), methods=None, features="svd",
                  noise_mode="uniform"):
    rows = []
    for seed in seeds:
        for dataset in datasets:
            if dataset == "languages_lt":
                from study_long_tail import load_languages_long_tail
                texts, target = load_languages_long_tail(seed)
            else:
                data = load_cities() if dataset == "cities" else load_languages()
                texts, target = list(data.data), data.target
            rng = np.random.default_rng(seed)
            parts = split_three_ways(target, rng)
            if features == "char":
                from char_cnn import char_cnn_module

                X_train, _, X_test, vocabulary_size = char_codes(texts, parts)
            else:
                X_train, _, X_test = featurize(texts, parts, seed, features)
            y_train, _, y_test = (target[p] for p in parts)
            for noise in ((0.0, 0.2, 0.4) if dataset == "languages" else (0.0,)):
                noisy = (corrupt_labels(y_train, noise, mode=noise_mode, random_state=seed)
                         if noise else y_train)
                for name, (Estimator, params) in DEFAULTS[dataset].items():
                    if methods and name not in methods:
                        continue
                    if features == "char":  # the encoder trains end to end with the loss
                        params = {**params, "module": char_cnn_module(
                            vocabulary_size, cosine_head=Estimator is ImbalancedTopKClassifier)}
                    clf = Estimator(**params, random_state=seed)
                    start = time.perf_counter()
                    clf.fit(X_train, noisy)
                    fit_time = time.perf_counter() - start
                    scores = clf.decision_function(X_test)
                    row = {"dataset": dataset, "features": features, "noise": noise,
                           "noise_mode": noise_mode,
                           "method": name, "seed": seed,
                           "top1": top_k_accuracy_score(y_test, scores, k=1,
                                                        labels=clf.classes_),
                           "top5": top_k_accuracy_score(y_test, scores, k=K,
                                                        labels=clf.classes_),
                           "macro_top5": top_k_accuracy_score(y_test, scores, k=K,
                                                              average="macro",
                                                              labels=clf.classes_),
                           "fit_seconds": fit_time, "epochs": clf.n_iter_,
                           "tau": clf.logit_adjustment_, **provenance()}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    table = summarize(rows, ["dataset", "noise", "method"],
                      ["top1", "top5", "macro_top5", "fit_seconds"])
    diffs = [paired_difference(rows, metric, "TopKClassifier(loss='cross_entropy')",
                               ("dataset", "noise")) for metric in ("top5", "macro_top5")]
    return rows, "\n\n".join([table, *diffs])


def part_cost():
    sys.path.insert(0, str(HERE))
    import matplotlib
    from bench_losses import time_case

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = ["cross_entropy", "sktopk", "pytopk", "sktopk_svm", "difftopk_svm"]
    by_c = {c: time_case(1024, c, 5, 10, "cpu", 3, only=methods) for c in (100, 1000, 10000)}
    by_k = {k: time_case(1024, 1000, k, 10, "cpu", 3, only=methods) for k in (1, 5, 20)}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, table, xlabel in ((axes[0], by_c, "number of classes C (k=5)"),
                              (axes[1], by_k, "k (C=1000)")):
        xs = sorted(table)
        for method in methods:
            ys = [table[x].get(method, np.nan) for x in xs]
            ax.plot(xs, ys, marker="o", label=method)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("forward+backward, ms (N=1024, B=10, 1 thread)")
    axes[0].legend()
    fig.tight_layout()
    out = HERE / "figures" / "loss_cost.png"
    out.parent.mkdir(exist_ok=True)
    fig.savefig(out, dpi=100)
    rows = [{"C": c, "k": 5, **v} for c, v in by_c.items()]
    rows += [{"C": 1000, "k": k, **v} for k, v in by_k.items()]
    lines = ["| C | k | " + " | ".join(methods) + " |", "|" + "---|" * (len(methods) + 2)]
    for row in rows:
        lines.append(f"| {row['C']} | {row['k']} | " + " | ".join(
            f"{row[m]:.1f}" if m in row else "-" for m in methods) + " |")
    return rows, "\n".join(lines) + f"\n\nFigure: {out.relative_to(HERE.parent)}"


def tables(rows):
    """The summary tables of raw rows (of any part) saved by an earlier run.

    Rows of each part are summarised apart, and grouped by their features, noise
    mode and commit too, so that files of several runs never mix in one mean.
    """
    parts = {"defaults": [r for r in rows if "dataset" in r],
             "noise": [r for r in rows if "dataset" not in r and "noise" in r],
             "cities": [r for r in rows if "dataset" not in r and "noise" not in r]}
    out = []
    for part, members in parts.items():
        if not members:
            continue
        extra = [key for key in ("features", "noise_mode", "commit")
                 if any(key in row for row in members)]
        if part == "defaults":
            keys = ["dataset", "noise", *extra]
            out.append(summarize(members, [*keys, "method"],
                                 ["top1", "top5", "macro_top5", "fit_seconds"]))
            out += [paired_difference(members, metric, baseline, keys)
                    for baseline in ("TopKClassifier(loss='cross_entropy')",
                                     "TopKClassifier(loss='logit_adjusted', "
                                     "monitor='macro_top_k')")
                    for metric in ("top5", "macro_top5")]
        elif part == "noise":
            keys = ["noise", *extra]
            out.append(summarize(members, [*keys, "method"], ["top1", "top5", "fit_seconds"]))
            out.append(paired_difference(members, "top5", "cross_entropy", keys))
        else:
            out.append(summarize(members, [*extra, "method"],
                                 ["top1", "top5", "macro_top5", "fit_seconds"]))
            out += [paired_difference(members, metric, "cross_entropy", extra)
                    for metric in ("top5", "macro_top5")]
    commits = sorted({str(row.get("commit")) for row in rows})
    return "\n\n".join([*out, f"commits of the rows: {', '.join(commits)}"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=["noise", "cities", "cost", "defaults", "table"])
    parser.add_argument("--rows", nargs="+", help="for 'table': raw-row JSON files to summarise")
    parser.add_argument("--datasets", nargs="+", default=["cities", "languages"],
                        help="for 'defaults': which data sets")
    parser.add_argument("--methods", nargs="+", default=None,
                        help="for 'cities' and 'defaults': a subset of the methods")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--features", choices=["svd", "raw", "char"], default="svd",
                        help="for 'defaults': tf-idf + SVD 256, the raw sparse tf-idf "
                             "columns fed to the first layer, or character codes fed to a "
                             "character CNN trained end to end (benchmarks/char_cnn.py)")
    parser.add_argument("--noise-mode", choices=["uniform", "block"], default="uniform",
                        help="for 'defaults': how corrupted labels are drawn (corrupt_labels' "
                             "mode; 'block' keeps them within blocks of 5 classes, the "
                             "paper's label-noise protocol)")
    parser.add_argument("--tag", default="", help="suffix of the raw-rows file name")
    args = parser.parse_args(argv)
    if args.part == "table":
        rows = [row for path in args.rows for row in json.loads(Path(path).read_text())]
        print(tables(rows))
        return
    torch.set_num_threads(1 if args.part == "cost" else args.threads)
    provenance()  # recorded now: the code this process has loaded
    start = time.perf_counter()
    if args.part == "noise":
        rows, table = part_noise(args.seeds)
    elif args.part == "cities":
        if args.methods:
            global CITIES_METHODS
            CITIES_METHODS = tuple(args.methods)
        rows, table = part_cities(args.seeds)
    elif args.part == "defaults":
        rows, table = part_defaults(args.seeds, tuple(args.datasets), args.methods,
                                    args.features, args.noise_mode)
    else:
        rows, table = part_cost()
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    name = f"reproduce_{args.part}{'_' + args.tag if args.tag else ''}.json"
    (results / name).write_text(json.dumps(rows, indent=1, default=str))
    print(f"\n## {args.part} ({platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), seeds {args.seeds}, "
          f"{time.perf_counter() - start:.0f} s)\n")
    print(table)


if __name__ == "__main__":
    main()
