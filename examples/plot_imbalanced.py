"""
========================================================
Long-tailed classes: the imbalanced top-K loss on cities
========================================================

In the GeoNames cities data (:func:`sktopk.datasets.load_cities`), five
countries hold over a third of the cities and most countries have a few dozen.
A model that is good on average can be useless for the rare countries. Garcin
et al. (ICML 2022) add class-dependent margins to the top-K hinge loss (larger
for rare classes, ``m_c`` proportional to ``n_c ** (-1/4)``) on a network whose
output layer scores by cosine similarity:
:class:`~sktopk.ImbalancedTopKClassifier`.

This example compares, on the same network and features, cross-entropy, LDAM
(Cao et al., 2019: cross-entropy with the same kind of margins,
``ImbalancedTopKClassifier(loss="ldam")``) and the imbalanced top-5 hinge loss,
by the macro-averaged top-5 accuracy overall and for the many-, medium- and
few-shot countries (:func:`sktopk.metrics.top_k_report`). It takes about 2 minutes on 2 CPU cores.
"""

# %%
# Data: train, validation and test splits
# ---------------------------------------
# We keep the countries with at least 5 cities and split them 68% / 12% / 20%
# (stratified), so that each country is in the training set and in the test
# set. The validation set is used to pick each model's best epoch.
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.base import clone
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from sktopk import ImbalancedTopKClassifier, TopKClassifier
from sktopk.datasets import load_cities, make_text_vectorizer
from sktopk.metrics import top_k_accuracy_score, top_k_report

OUT = Path(os.environ.get("SKTOPK_EXAMPLES_OUT", "."))
OUT.mkdir(parents=True, exist_ok=True)
start = time.perf_counter()
# One thread for torch and for BLAS: the models are small, so more threads
# gain little, and on a busy machine they wait on each other and run several
# times slower.
torch.set_num_threads(1)
threadpool_limits(1)

cities = load_cities(min_samples_per_class=5)
X_rest, X_test, y_rest, y_test = train_test_split(
    cities.data, cities.target, test_size=0.2, stratify=cities.target, random_state=0)
X_train, X_valid, y_train, y_valid = train_test_split(
    X_rest, y_rest, test_size=0.15, stratify=y_rest, random_state=0)
classes = np.unique(cities.target)
vectorizer = make_text_vectorizer(n_components=256, random_state=0)
F_train = vectorizer.fit_transform(X_train)
F_valid, F_test = vectorizer.transform(X_valid), vectorizer.transform(X_test)
print(f"{len(classes)} countries; train {len(y_train)}, validation {len(y_valid)}, "
      f"test {len(y_test)} cities")

# %%
# Many-, medium- and few-shot classes
# -----------------------------------
# As in long-tailed recognition benchmarks, we group the countries by their
# number of training cities: *many* (more than 100), *medium* (20 to 100) and
# *few* (fewer than 20). :func:`~sktopk.metrics.top_k_report` computes top-K
# accuracy overall and within each group; the macro top-5 accuracy of a group
# is the mean over its countries of the fraction of their test cities whose
# country is in the top 5.
train_counts = np.bincount(y_train, minlength=len(classes))
groups = {"many": np.flatnonzero(train_counts > 100),
          "medium": np.flatnonzero((train_counts >= 20) & (train_counts <= 100)),
          "few": np.flatnonzero(train_counts < 20)}
for group, members in groups.items():
    share = train_counts[members].sum() / train_counts.sum()
    n_test = np.isin(y_test, classes[members]).sum()
    print(f"{group:>6}: {len(members)} countries with {train_counts[members].min()} to "
          f"{train_counts[members].max()} training cities each ({share:.1%} of the training "
          f"cities), {n_test} test cities")

# %%
# Models
# ------
# The same MLP (256 hidden units) and optimiser settings (weight decay
# included) for the three losses. The imbalanced estimator uses the paper's loss
# with its settings for Pl@ntNet-300K (``epsilon=0.01``, ``max_margin=0.2``,
# ``scale=60``; no cross-entropy term and no post-hoc logit adjustment: the
# estimator's own defaults differ, see :ref:`imbalanced`) and LDAM the authors'
# ``max_margin=0.2, scale=40``, unadjusted too. Both compute the margins from the
# training counts.
network = dict(hidden_layer_sizes=(256,), batch_size=512, learning_rate=3e-3,
               weight_decay=1e-4, early_stopping=False)
models = {
    "cross-entropy": TopKClassifier(loss="cross_entropy", **network),
    "LDAM": ImbalancedTopKClassifier(loss="ldam", max_margin=0.2, scale=40.0,
                                     logit_adjustment=0.0, **network),
    "imbalanced top-5 hinge": ImbalancedTopKClassifier(k=5, epsilon=0.01, max_margin=0.2,
                                                       ce_weight=0.0, logit_adjustment=0.0,
                                                       **network),
}

# %%
# Training with model selection on the validation macro top-5
# -----------------------------------------------------------
# Each model is trained for 30 epochs, one epoch per ``partial_fit`` call, and
# we keep the epoch with the best validation *macro* top-5 accuracy, the
# selection rule of the paper for long-tailed data, for every model. (The
# estimators' own early stopping monitors top-k accuracy for
# ``TopKClassifier`` and macro top-k accuracy for ``ImbalancedTopKClassifier``;
# selecting all of them on the same metric keeps the comparison fair.)
#
# The rare countries have one to three validation cities each, so the
# validation macro top-5 is noisy and so is the selected epoch. We repeat each
# training with three seeds (``random_state`` 0, 1, 2: initial weights,
# shuffling, noise of the loss) and report the mean and the range.
n_epochs = 30
seeds = [0, 1, 2]


def test_metrics(y, scores, labels):
    """Top-1, top-5, macro top-5 overall and within each frequency group."""
    report = top_k_report(y, scores, train_counts, ks=(1, 5), labels=labels, output_dict=True)
    return {"top-1": report["micro"]["top-1"], "top-5": report["micro"]["top-5"],
            "all": report["macro"]["top-5"],
            **{group: report[group]["top-5"] for group in groups},
            "text": top_k_report(y, scores, train_counts, ks=(1, 5), labels=labels)}


results = {name: [] for name in models}  # name -> one dict of test metrics per seed
validation_curves = {name: [] for name in models}
for name, template in models.items():
    tic = time.perf_counter()
    for seed in seeds:
        model = clone(template).set_params(random_state=seed)
        curve = []
        for epoch in range(n_epochs):
            model.partial_fit(F_train, y_train, classes=classes)
            curve.append(top_k_accuracy_score(y_valid, model.decision_function(F_valid), k=5,
                                              average="macro", labels=model.classes_))
            if curve[-1] == max(curve):
                best_epoch = epoch + 1
                best_test = test_metrics(y_test, model.decision_function(F_test),
                                         model.classes_)
        results[name].append({"epoch": best_epoch, **best_test})
        validation_curves[name].append(curve)
    epochs = [r["epoch"] for r in results[name]]
    print(f"{name:<24} best epochs {epochs} ({time.perf_counter() - tic:.0f} s)")

# %%
# Results on the test set
# -----------------------
# The full report of each model's first seed:
for name, runs in results.items():
    print(f"\n{name} (random_state=0), test set:")
    print(runs[0]["text"])

# %%
# The mean over the three seeds, then the range (highest minus lowest value).
# The "many", "medium" and "few" columns are macro top-5 accuracies within
# each group of countries.
columns = ["top-1", "top-5", "all", *groups]
headers = ["top-1", "top-5", "macro top-5", "many", "medium", "few"]
summary = {name: np.array([[run[c] for c in columns] for run in runs])
           for name, runs in results.items()}
for title, statistic in (("mean", lambda v: v.mean(0)),
                         ("range", lambda v: v.max(0) - v.min(0))):
    print(f"\n{title + ' over seeds':<24}" + "".join(f"{h:>12}" for h in headers))
    for name, values in summary.items():
        print(f"{name:<24}" + "".join(f"{v:>12.3f}" for v in statistic(values)))

fig, (ax_bar, ax_curve) = plt.subplots(1, 2, figsize=(12, 4.2), constrained_layout=True,
                                       gridspec_kw={"width_ratios": [3, 2]})
bar_columns = ["all", *groups]
width = 0.8 / len(summary)
for i, (name, values) in enumerate(summary.items()):
    picked = values[:, [columns.index(c) for c in bar_columns]]
    mean = picked.mean(0)
    positions = np.arange(len(bar_columns)) + (i - (len(summary) - 1) / 2) * width
    bars = ax_bar.bar(positions, mean, width=width, label=name,
                      yerr=[mean - picked.min(0), picked.max(0) - mean], capsize=3)
    ax_bar.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
    curves = np.array(validation_curves[name])
    ax_curve.plot(range(1, n_epochs + 1), curves.mean(0), label=name)
    ax_curve.fill_between(range(1, n_epochs + 1), curves.min(0), curves.max(0), alpha=0.2)
ax_bar.set_xticks(range(len(bar_columns)),
                  ["all countries", "many (>100)", "medium (20-100)", "few (<20)"])
ax_bar.set(ylabel="test macro top-5 accuracy",
           title="Macro top-5 accuracy by class frequency (3 seeds, range)")
ax_bar.legend(fontsize=8)
ax_curve.set(xlabel="epoch", ylabel="validation macro top-5 accuracy",
             title="Model selection (mean and range over seeds)")
figure_path = OUT / "imbalanced_cities_macro_top5.png"
fig.savefig(figure_path, dpi=100)
print(f"Done in {time.perf_counter() - start:.0f} s; figure written to {figure_path.resolve()}")

# %%
# Discussion
# ----------
# Averaged over three seeds, with every model selected on the validation macro
# top-5 accuracy, cross-entropy has the best macro top-5 accuracy in our CPU
# run (0.35, against 0.33 for LDAM and 0.32 for the imbalanced top-5 hinge
# loss) and it is ahead on the many- and medium-shot countries. On the few-shot
# countries (fewer than 20 training cities: 55 countries, 171 test cities in
# all) the two margin losses are ahead (LDAM 0.10, the imbalanced hinge 0.09,
# cross-entropy 0.08), by about the spread between seeds (0.01 to 0.02), so a
# single run can show another ranking there.
#
# The validation curves show the dynamics: the margin losses learn faster (at
# epoch 5 they are well ahead of cross-entropy) but plateau around 0.31 after
# about 10 epochs, while cross-entropy keeps improving for 20 epochs and more.
# With a short training budget, or with early stopping on *plain* top-5
# accuracy (the default of ``TopKClassifier``, used in the quickstart, which
# stopped cross-entropy after 13 epochs), the margin losses look better on
# macro top-5 than they are here: select every model on the metric you report,
# after enough epochs.
#
# This does not reproduce the ranking the paper reports on Pl@ntNet-300K,
# where the imbalanced loss had the best macro top-5 accuracy. The setting is
# very different: fixed character n-gram features and a small MLP, instead of
# a pretrained ResNet-50 fine-tuned on images, with the paper's
# hyperparameters used as they are. (A few variations we tried with one seed,
# a learning rate of 1e-3, ``scale=30``, ``max_margin=0.5``, ``epsilon=0.05``
# or no weight decay, did not change the ranking.)
