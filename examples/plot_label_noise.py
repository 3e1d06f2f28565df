"""
==================================================
Robustness to label noise: which language is this?
==================================================

Garcin et al. (ICML 2022) report that the smoothed top-K hinge loss resists
noisy training labels better than cross-entropy. This example checks it on real
data: identify the language of 40-character text chunks
(:func:`sktopk.datasets.load_languages`, 335 languages and scripts, 20 chunks
each), with a fraction of the *training* labels replaced by a wrong language
(:func:`sktopk.datasets.corrupt_labels`), and the models evaluated on the clean
labels of a held-out test set.

Three losses on the same network: cross-entropy, the balanced smoothed top-5
hinge loss, and the smooth top-5 SVM of Berrada et al. (ICLR 2018). It takes
about 2 minutes on 2 CPU cores.
"""

# %%
# Data and features
# -----------------
# A stratified 70% / 30% split: 14 training and 6 test chunks per language.
# The features (tf-idf character n-grams reduced to 256 dimensions, see
# :func:`~sktopk.datasets.make_text_vectorizer`) do not depend on the labels,
# so they are computed once for all the noise levels.
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from sktopk import TopKClassifier
from sktopk.datasets import corrupt_labels, load_languages, make_text_vectorizer
from sktopk.metrics import top_k_accuracy_score

OUT = Path(os.environ.get("SKTOPK_EXAMPLES_OUT", "."))
OUT.mkdir(parents=True, exist_ok=True)
start = time.perf_counter()
# One thread for torch and for BLAS: the models are small, so more threads
# gain little, and on a busy machine they wait on each other and run several
# times slower.
torch.set_num_threads(1)
threadpool_limits(1)

languages = load_languages()
X_train, X_test, y_train, y_test = train_test_split(
    languages.data, languages.target, test_size=0.3, stratify=languages.target, random_state=0)
vectorizer = make_text_vectorizer(n_components=256, random_state=0)
F_train = vectorizer.fit_transform(X_train)
F_test = vectorizer.transform(X_test)
print(f"{len(languages.target_names)} languages; train {F_train.shape}, test {F_test.shape}")

# %%
# Noisy training labels
# ---------------------
# ``corrupt_labels(y, p)`` gives exactly a fraction ``p`` of the samples a
# different label, drawn uniformly among the 334 other languages. (The paper
# draws the wrong label within a block of 5 similar classes, the CIFAR-100
# super-classes; ``mode="block"`` does that, but alphabetically sorted language
# ids do not form meaningful blocks.)
noise_levels = [0.0, 0.2, 0.4]
noisy_labels = {p: corrupt_labels(y_train, p, random_state=0) for p in noise_levels}
for p, y_noisy in noisy_labels.items():
    print(f"noise {p}: {np.mean(y_noisy != y_train):.1%} of the training labels are wrong")

# %%
# Models and training protocol
# ----------------------------
# The same MLP (one hidden layer of 256 units) with three losses, each
# targeting top-5 where it has a ``k``: the smoothed top-K hinge loss with the
# estimator's default ``epsilon=1.0``, and the smooth SVM with temperature
# ``tau=1``, the authors' setting for their label-noise experiment.
#
# The main protocol trains every model for a fixed 40 epochs, as the paper
# does (no early stopping): with enough epochs a network can memorise the
# wrong labels, and the question is which loss resists that. Practitioners
# usually stop early instead, on a validation split that is just as noisy as
# the training set; we run that protocol too (``early_stopping=True``, patience
# 8 epochs, dashed lines below).
losses = {
    "cross-entropy": dict(loss="cross_entropy"),
    "top-5 hinge": dict(loss="topk_hinge", k=5, epsilon=1.0),
    "smooth top-5 SVM": dict(loss="smooth_svm", k=5, loss_params={"tau": 1.0}),
}
protocols = {
    "40 epochs": dict(max_epochs=40, early_stopping=False),
    "early stopping": dict(max_epochs=60, early_stopping=True, n_iter_no_change=8),
}
network = dict(hidden_layer_sizes=(256,), batch_size=128, learning_rate=3e-3, random_state=0)

results = {}  # (protocol, loss name) -> list of (top-1, top-5), one per noise level
print(f"{'protocol':<16}{'loss':<18}{'noise':>6}{'top-1':>7}{'top-5':>7}{'epochs':>8}")
for protocol, schedule in protocols.items():
    for name, params in losses.items():
        for p in noise_levels:
            clf = TopKClassifier(**params, **schedule, **network).fit(F_train, noisy_labels[p])
            scores = clf.decision_function(F_test)
            top1, top5 = (top_k_accuracy_score(y_test, scores, k=k, labels=clf.classes_)
                          for k in (1, 5))
            results.setdefault((protocol, name), []).append((top1, top5))
            print(f"{protocol:<16}{name:<18}{p:>6}{top1:>7.3f}{top5:>7.3f}{clf.n_iter_:>8}")

# %%
# Results
# -------
# Accuracy on the *clean* test labels as the training noise grows.
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True, constrained_layout=True)
colors = dict(zip(losses, ["tab:blue", "tab:orange", "tab:green"], strict=True))
for (protocol, name), values in results.items():
    fixed = protocol == "40 epochs"
    style = dict(color=colors[name], marker="o" if fixed else "s", ls="-" if fixed else "--",
                 mfc=None if fixed else "none", label=f"{name} ({protocol})")
    for ax, column in zip(axes, (0, 1), strict=True):
        ax.plot(noise_levels, [v[column] for v in values], **style)
axes[0].set(xlabel="fraction of wrong training labels", ylabel="test top-1 accuracy",
            xticks=noise_levels, title="Top-1 accuracy (clean test labels)")
axes[1].set(xlabel="fraction of wrong training labels", ylabel="test top-5 accuracy",
            title="Top-5 accuracy (clean test labels)")
axes[1].legend(fontsize=8)
figure_path = OUT / "label_noise_languages.png"
fig.savefig(figure_path, dpi=100)
print(f"Done in {time.perf_counter() - start:.0f} s; figure written to {figure_path.resolve()}")

# %%
# Discussion
# ----------
# Without noise the three losses are close at top-5 (0.97 to 0.99: most
# languages are told apart by their script or spelling, the confusions are
# between close languages such as Bosnian and Croatian), while the hinge loss,
# which only asks for the true language somewhere in the top 5, is clearly
# behind at top-1.
#
# With a fixed training budget, the noise hurts cross-entropy the most at top-5
# once it is large: at 20% noise cross-entropy and the top-5 hinge both lose
# about 4 points and the smooth SVM 3, but at 40% noise cross-entropy loses
# about 12 points, against 9 for the top-5 hinge loss and 7 for the smooth
# top-5 SVM. Cross-entropy keeps pushing every training label to the top, the
# wrong ones included, while the top-K losses are satisfied (the hinge is flat)
# once the label is in the top K with a margin, so a wrong label costs them
# less. The hinge loss pays for it at top-1, which it does not target.
#
# Early stopping on the noisy validation split changes the picture: it stops
# cross-entropy before it memorises the noise, and then the three losses are
# within about a point of each other at top-5 (about 0.94 at 40% noise). On
# this data set the robustness of the top-K losses matters when a network is
# trained for a fixed, long budget, as in the paper, rather than with a
# stopping rule. The smooth SVM comes out on top in both protocols (narrowly
# with early stopping).
