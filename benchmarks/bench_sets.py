"""Average-K sets against top-K sets on the GeoNames cities (issue 12).

Two networks (the top-5 hinge loss and cross-entropy) are trained once on a
stratified 60% of the cities (countries with at least 5 cities). The other 40%
is split 20 times at random into a calibration half and a test half; on each
split, average-K thresholds are fitted on the calibration half
(``AverageKClassifier(cv="prefit")``) and everything is measured on the test
half. Reported: mean over the 20 splits (and standard deviation) of the test
mean set size, the set accuracy, and the top-K accuracy at the same mean size
(top-K interpolated between the integers around the measured size: a random
mix of top-floor(s) and top-ceil(s) sets), micro and macro, and macro per
frequency group of the training counts (many > 100, medium 20-100, few < 20).

Variants: ``global`` (one threshold on softmax(scores / T) or predict_proba),
``classwise`` (one threshold per class, equal calibration hit rates), and for
the hinge model ``raw`` (one threshold on the raw decision_function, to show
why the probabilities are used).

    OMP_NUM_THREADS=1 python benchmarks/bench_sets.py
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from sktopk import AverageKClassifier, TopKClassifier
from sktopk.datasets import load_cities, make_text_vectorizer
from sktopk.metrics import mean_set_size, set_accuracy_score, top_k_accuracy_curve

torch.set_num_threads(1)
threadpool_limits(1)
KS = (2, 3, 5, 10)
N_SPLITS = 20


def interpolated_topk(y, scores, size, labels, average, mask=None):
    """Top-K accuracy at a fractional mean size (mix of the two integers around it)."""
    low = int(np.floor(size))
    curve = top_k_accuracy_curve(y if mask is None else y[mask],
                                 scores if mask is None else scores[mask],
                                 ks=[max(low, 1), low + 1], average=average, labels=labels)
    frac = size - low
    return float(curve[0] * (1 - frac) + curve[1] * frac) if low >= 1 else float(curve[1] * frac)


def main():
    start = time.perf_counter()
    cities = load_cities(min_samples_per_class=5)
    X_train, X_hold, y_train, y_hold = train_test_split(
        cities.data, cities.target, test_size=0.4, stratify=cities.target, random_state=0)
    vectorizer = make_text_vectorizer(n_components=256, random_state=0)
    F_train = vectorizer.fit_transform(X_train)
    F_hold = vectorizer.transform(X_hold)
    classes = np.unique(cities.target)
    counts = np.bincount(y_train, minlength=len(classes))
    groups = {"many": counts > 100, "medium": (counts >= 20) & (counts <= 100),
              "few": counts < 20}
    network = dict(hidden_layer_sizes=(256,), batch_size=512, learning_rate=3e-3,
                   max_epochs=30, random_state=0)
    models = {"topk_hinge": TopKClassifier(k=5, **network),
              "cross_entropy": TopKClassifier(loss="cross_entropy", **network)}
    rows = []
    for name, model in models.items():
        tic = time.perf_counter()
        model.fit(F_train, y_train)
        print(f"{name}: fitted in {time.perf_counter() - tic:.0f} s", flush=True)
        scores_hold = model.decision_function(F_hold)
        for split in range(N_SPLITS):
            cal, test = train_test_split(np.arange(len(y_hold)), test_size=0.5,
                                         stratify=y_hold, random_state=split)
            y_test, s_test = y_hold[test], scores_hold[test]
            for k in KS:
                variants = {"global": dict(mode="global"), "classwise": dict(mode="classwise")}
                if name == "topk_hinge":
                    variants["raw"] = None
                for variant, params in variants.items():
                    if params is None:
                        flat = np.sort(scores_hold[cal].ravel())
                        t = flat[flat.size - int(round(k * len(cal)))]
                        sets = s_test >= t
                    else:
                        ak = AverageKClassifier(model, average_k=k, cv="prefit", **params)
                        ak.fit(F_hold[cal], y_hold[cal])
                        sets = ak.predict_set(F_hold[test])
                    size = mean_set_size(None, sets)
                    row = {"model": name, "variant": variant, "k": k, "split": split,
                           "size": size,
                           "macro_size": mean_set_size(y_test, sets, average="macro",
                                                       labels=classes),
                           "empty": float((sets.sum(1) == 0).mean())}
                    for average in ("micro", "macro"):
                        row[f"set_{average}"] = set_accuracy_score(
                            y_test, sets, average=average, labels=classes)
                        row[f"topk_{average}"] = interpolated_topk(
                            y_test, s_test, size, classes, average)
                    for group, members in groups.items():
                        mask = members[y_test]
                        row[f"set_{group}"] = set_accuracy_score(
                            y_test[mask], sets[mask], average="macro", labels=classes)
                        row[f"topk_{group}"] = interpolated_topk(
                            y_test, s_test, size, classes, "macro", mask)
                    rows.append(row)
    out = Path(__file__).with_name("results") / "sets_cities.json"
    out.write_text(json.dumps(rows, indent=1))
    print(f"{len(rows)} rows -> {out}; {time.perf_counter() - start:.0f} s total")
    summarize(rows)


def summarize(rows):
    keys = ["size", "set_micro", "topk_micro", "set_macro", "topk_macro", "set_many",
            "topk_many", "set_medium", "topk_medium", "set_few", "topk_few", "empty"]
    print("model          variant    K " + "".join(f"{k:>12}" for k in keys))
    seen = []
    for r in rows:
        key = (r["model"], r["variant"], r["k"])
        if key not in seen:
            seen.append(key)
    for model, variant, k in seen:
        sel = [r for r in rows if (r["model"], r["variant"], r["k"]) == (model, variant, k)]
        cells = []
        for key in keys:
            v = np.array([r[key] for r in sel])
            cells.append(f"{v.mean():7.3f}±{v.std():.3f}")
        print(f"{model:<14} {variant:<9} {k:>2} " + "".join(f"{c:>12}" for c in cells))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--summary":
        summarize(json.loads(Path(__file__).with_name("results").joinpath(
            "sets_cities.json").read_text()))
    else:
        main()
