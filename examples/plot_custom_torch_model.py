"""
======================================
Top-K losses with your own torch model
======================================

The losses of :mod:`sktopk.losses` are ordinary :class:`torch.nn.Module`
objects called as ``loss(scores, target)``, like
:class:`torch.nn.CrossEntropyLoss`. This example trains the same small
convolutional network on the 8x8 digit images of scikit-learn three ways:

(a) in a plain torch training loop with :class:`~sktopk.losses.TopKHingeLoss`;
(b) with skorch, passing the loss as ``criterion``;
(c) with :class:`~sktopk.TopKClassifier` and ``module=``, which adds early
    stopping, ``random_state``, ``predict_topk`` and scikit-learn model selection.

There are only 10 digits, so we target top-2 accuracy (``k=2``) rather than the
top-5 of the many-class examples.
"""

# %%
# Data and model
# --------------
# The images are kept as ``(N, 1, 8, 8)`` float32 tensors so that the network
# can be convolutional; :class:`~sktopk.TopKClassifier` accepts such arrays
# when it is given a ``module``. The module maps a batch to ``(N, n_classes)``
# scores (no softmax: the hinge loss works on raw scores).
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from skorch import NeuralNetClassifier

from sktopk import TopKClassifier
from sktopk.losses import TopKHingeLoss
from sktopk.metrics import top_k_accuracy_curve, top_k_accuracy_score

OUT = Path(os.environ.get("SKTOPK_EXAMPLES_OUT", "."))
OUT.mkdir(parents=True, exist_ok=True)
start = time.perf_counter()
torch.set_num_threads(1)  # small tensors: one thread is as fast, and reproducible across machines

K = 2
digits = load_digits()
X = (digits.images / 16.0).astype(np.float32)[:, None, :, :]  # (N, 1, 8, 8) in [0, 1]
y = digits.target.astype(np.int64)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y,
                                                    random_state=0)
print(f"train {X_train.shape}, test {X_test.shape}, {len(np.unique(y))} classes")


class SmallCNN(torch.nn.Module):
    """Two 3x3 convolutions, max pooling, a linear layer: (N, 1, 8, 8) -> (N, n_classes)."""

    def __init__(self, n_classes=10, width=16):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, width, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(width, 2 * width, 3, padding=1), torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
        )
        self.head = torch.nn.Linear(2 * width * 4 * 4, n_classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


results = {}

# %%
# (a) A plain torch training loop
# -------------------------------
# ``TopKHingeLoss(k, epsilon, n_perturbations)`` is the balanced loss
# ``relu(1 + T_{k+1}(s) - s_y)``, averaged over the batch. Its noise is drawn
# from the ``generator`` you give it (a seeded ``torch.Generator`` on the
# scores' device), so a seeded run is reproducible.
torch.manual_seed(0)
model = SmallCNN()
criterion = TopKHingeLoss(k=K, epsilon=1.0, n_perturbations=10,
                          generator=torch.Generator().manual_seed(0))
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
X_train_t, y_train_t = torch.from_numpy(X_train), torch.from_numpy(y_train)
batches = torch.Generator().manual_seed(0)
losses = []
for _ in range(20):  # epochs
    model.train()
    order = torch.randperm(len(X_train_t), generator=batches)
    epoch_loss = 0.0
    for idx in order.split(64):
        optimizer.zero_grad()
        loss = criterion(model(X_train_t[idx]), y_train_t[idx])
        loss.backward()
        optimizer.step()
        epoch_loss += loss.item() * len(idx)
    losses.append(epoch_loss / len(X_train_t))
model.eval()
with torch.no_grad():
    scores_a = model(torch.from_numpy(X_test)).numpy()
results["(a) torch loop"] = scores_a
print(f"(a) torch loop: training loss {losses[0]:.3f} -> {losses[-1]:.3f}, test top-1 "
      f"{top_k_accuracy_score(y_test, scores_a, k=1):.3f}, "
      f"top-{K} {top_k_accuracy_score(y_test, scores_a, k=K):.3f}")

# %%
# (b) skorch, with the loss as ``criterion``
# ------------------------------------------
# skorch instantiates the criterion with the ``criterion__*`` parameters. Its
# ``predict_proba`` returns the module's output, which here are scores, not
# probabilities: they rank the classes, which is all top-K accuracy needs.
torch.manual_seed(0)  # skorch initialises the weights and shuffles with torch's global RNG
net = NeuralNetClassifier(
    SmallCNN,
    criterion=TopKHingeLoss,
    criterion__k=K,
    criterion__epsilon=1.0,
    criterion__generator=torch.Generator().manual_seed(0),
    optimizer=torch.optim.AdamW,
    optimizer__weight_decay=1e-4,
    lr=3e-3,
    batch_size=64,
    max_epochs=20,
    train_split=None,
    iterator_train__shuffle=True,
    verbose=0,
)
net.fit(X_train, y_train)
scores_b = net.predict_proba(X_test)
results["(b) skorch"] = scores_b
print(f"(b) skorch: training loss {net.history[0, 'train_loss']:.3f} -> "
      f"{net.history[-1, 'train_loss']:.3f}, test top-1 "
      f"{top_k_accuracy_score(y_test, scores_b, k=1):.3f}, "
      f"top-{K} {top_k_accuracy_score(y_test, scores_b, k=K):.3f}")

# %%
# (c) ``TopKClassifier(module=...)``
# ----------------------------------
# Give the estimator the module *class*: it is instantiated at each fit, with
# ``n_classes`` (and ``n_features``) filled in when its constructor takes them,
# and with its weights seeded by ``random_state``. Early stopping holds out a
# stratified 10% of the training set and monitors the validation top-k
# accuracy. Everything else (``predict_topk``, ``decision_function``, the
# top-K scorers, ``GridSearchCV``) works as with the built-in MLP.
clf = TopKClassifier(module=SmallCNN, k=K, epsilon=1.0, learning_rate=3e-3, batch_size=64,
                     max_epochs=40, n_iter_no_change=8, random_state=0)
clf.fit(X_train, y_train)
scores_c = clf.decision_function(X_test)
results["(c) TopKClassifier"] = scores_c
print(f"(c) TopKClassifier: {clf.n_iter_} epochs (early stopping), test top-1 "
      f"{top_k_accuracy_score(y_test, scores_c, k=1, labels=clf.classes_):.3f}, "
      f"top-{K} {top_k_accuracy_score(y_test, scores_c, k=K, labels=clf.classes_):.3f}")
print("predict_topk on the first 3 test images:", clf.predict_topk(X_test[:3]).tolist(),
      "true labels:", y_test[:3].tolist())

# %%
# Top-K accuracy of the three
# ---------------------------
# The three runs use the same network and loss, so they should land close to
# each other; they differ by the number of epochs (20, 20, and early stopping)
# and by the random draws.
ks = np.arange(1, 6)
fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
for name, scores in results.items():
    ax.plot(ks, top_k_accuracy_curve(y_test, scores, ks=ks), marker="o", label=name)
ax.set(xlabel="K", ylabel="test top-K accuracy", xticks=ks,
       title=f"Small CNN on digits, top-{K} hinge loss")
ax.legend()
fig.savefig(OUT / "custom_torch_model_topk.png", dpi=100)
print(f"Figure written to {(OUT / 'custom_torch_model_topk.png').resolve()} "
      f"in {time.perf_counter() - start:.1f} s")
