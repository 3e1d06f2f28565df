"""Time per training epoch of TopKClassifier against a hand-written loop, skorch and sklearn.

Problem: 50k x 256 float32 features, C classes, an MLP 256-512-C, batch 256, AdamW
lr 1e-3. Each contender trains for a few epochs on the same data; the table gives
the median epoch time and its ratio to the hand-written torch loop with the same
loss (the floor: same module, optimiser, loss and batches, no framework).

- ``hand loop``: tensors sliced by a random permutation, ``loss.backward()``, ``step()``.
- ``sktopk``: ``TopKClassifier(early_stopping=False)``; epoch time from its history.
- ``skorch default``: ``skorch.NeuralNetClassifier`` with its default Dataset/DataLoader.
- ``sklearn MLP``: ``MLPClassifier`` (cross-entropy only), one epoch per ``partial_fit``.

Usage::

    python benchmarks/bench_fit.py                 # CPU, C in {100, 1000}
    python benchmarks/bench_fit.py --device cuda   # on a GPU
    python benchmarks/bench_fit.py --classes 1000 --sktopk-only --imbalanced
        # the estimators alone, plus ImbalancedTopKClassifier against its LDAM
        # (cross-entropy on the same cosine head) fit and TopKClassifier's cross-entropy fit
"""

import argparse
import platform
import statistics
import time
import warnings

import numpy as np
import torch
from sklearn.neural_network import MLPClassifier

from sktopk import ImbalancedTopKClassifier, TopKClassifier
from sktopk._classifier import _CrossEntropy
from sktopk._modules import MLP
from sktopk.losses import TopKHingeLoss

N_SAMPLES, N_FEATURES, HIDDEN, BATCH, LR, WD = 50_000, 256, 512, 256, 1e-3, 1e-4


def make_data(n_classes, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, N_FEATURES)).astype(np.float32)
    y = rng.integers(0, n_classes, N_SAMPLES)
    X = centers[y] + 2.0 * rng.normal(size=(N_SAMPLES, N_FEATURES)).astype(np.float32)
    return X, y


def make_loss(name, device):
    if name == "topk_hinge":
        return TopKHingeLoss(k=5, epsilon=1.0, n_perturbations=10,
                             generator=torch.Generator(device=device).manual_seed(0))
    return _CrossEntropy()


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def hand_loop(X, y, n_classes, loss_name, epochs, device):
    gen = torch.Generator().manual_seed(0)
    module = MLP(N_FEATURES, n_classes, (HIDDEN,), generator=gen).to(device)
    optimizer = torch.optim.AdamW(module.parameters(), lr=LR, weight_decay=WD)
    criterion = make_loss(loss_name, device)
    Xt = torch.as_tensor(X, device=device)
    yt = torch.as_tensor(y, device=device)
    durations = []
    for _ in range(epochs):
        _sync(device)
        start = time.perf_counter()
        order = torch.randperm(len(Xt), generator=gen).to(device)
        for i in range(0, len(Xt), BATCH):
            index = order[i:i + BATCH]
            optimizer.zero_grad()
            loss = criterion(module(Xt[index]), yt[index])
            loss.backward()
            optimizer.step()
            loss.item()  # every framework logs the batch loss
        _sync(device)
        durations.append(time.perf_counter() - start)
    return durations


def sktopk_fit(X, y, loss_name, epochs, device):
    clf = TopKClassifier(k=5, loss=loss_name, hidden_layer_sizes=(HIDDEN,), batch_size=BATCH,
                         learning_rate=LR, weight_decay=WD, max_epochs=epochs,
                         early_stopping=False, device=str(device), random_state=0)
    clf.fit(X, y)
    return [row["dur"] for row in clf.history_]


def imbalanced_fit(X, y, loss_name, epochs, device):
    clf = ImbalancedTopKClassifier(k=5, loss=loss_name, hidden_layer_sizes=(HIDDEN,),
                                   batch_size=BATCH, learning_rate=LR, weight_decay=WD,
                                   max_epochs=epochs, early_stopping=False, device=str(device),
                                   random_state=0)
    clf.fit(X, y)
    return [row["dur"] for row in clf.history_]


def skorch_default(X, y, n_classes, loss_name, epochs, device):
    from skorch import NeuralNetClassifier

    net = NeuralNetClassifier(
        MLP(N_FEATURES, n_classes, (HIDDEN,), generator=torch.Generator().manual_seed(0)),
        criterion=make_loss(loss_name, device), optimizer=torch.optim.AdamW, lr=LR,
        optimizer__weight_decay=WD, batch_size=BATCH, max_epochs=epochs, train_split=None,
        iterator_train__shuffle=True, device=str(device), verbose=0,
    )
    net.fit(X, y)
    return [row["dur"] for row in net.history]


def sklearn_mlp(X, y, epochs):
    mlp = MLPClassifier(hidden_layer_sizes=(HIDDEN,), batch_size=BATCH, learning_rate_init=LR,
                        alpha=WD, random_state=0)
    classes = np.unique(y)
    durations = []
    for _ in range(epochs):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mlp.partial_fit(X, y, classes=classes)
        durations.append(time.perf_counter() - start)
    return durations


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--classes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--skip-sklearn", action="store_true")
    parser.add_argument("--sktopk-only", action="store_true",
                        help="time TopKClassifier alone (no hand loop, skorch, sklearn)")
    parser.add_argument("--imbalanced", action="store_true",
                        help="also time ImbalancedTopKClassifier (top-K hinge and LDAM)")
    parser.add_argument("--autograd-worker-thread", action="store_true",
                        help="let the estimators' backward passes run in autograd's device "
                        "worker thread (torch's default; sktopk runs them on the calling "
                        "thread), to compare the two")
    parser.add_argument("--foreach-optimizer", action="store_true",
                        help="give the estimators AdamW's for-each step (torch's default; "
                        "sktopk takes the fused one where torch has it), to compare the two")
    args = parser.parse_args(argv)
    if args.foreach_optimizer:
        import sktopk._classifier

        sktopk._classifier._fused_adam_works = lambda device_type: False
    if args.autograd_worker_thread:
        from skorch import NeuralNet

        from sktopk._training import TopKNet

        TopKNet.train_step_single = NeuralNet.train_step_single
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"# bench_fit: {platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s), device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else "")
          + ("; backward in autograd's worker thread" if args.autograd_worker_thread else "")
          + ("; for-each AdamW step" if args.foreach_optimizer else "")
          + f"; {N_SAMPLES}x{N_FEATURES}, MLP {N_FEATURES}-{HIDDEN}-C, batch {BATCH}, "
          f"median epoch seconds over {args.epochs} epochs (first epoch dropped when >1)\n")
    print("| C | loss | hand loop | sktopk | skorch default | sklearn MLP | sktopk / hand "
          "| skorch / hand |\n|---|---|---|---|---|---|---|---|")
    summary = {}
    for n_classes in args.classes:
        X, y = make_data(n_classes)
        for loss_name in ("cross_entropy", "topk_hinge"):
            runs = {"sktopk": sktopk_fit(X, y, loss_name, args.epochs + 1, device)}
            if not args.sktopk_only:
                runs["hand"] = hand_loop(X, y, n_classes, loss_name, args.epochs + 1, device)
                runs["skorch"] = skorch_default(X, y, n_classes, loss_name, args.epochs + 1,
                                                device)
            if (loss_name == "cross_entropy" and device.type == "cpu" and not args.skip_sklearn
                    and not args.sktopk_only):
                runs["sklearn"] = sklearn_mlp(X, y, args.epochs + 1)
            med = {name: statistics.median(d[1:] if len(d) > 1 else d)
                   for name, d in runs.items()}
            summary[(n_classes, loss_name)] = med

            def cell(name, med=med):
                return f"{med[name]:.2f}" if name in med else "-"

            def ratio(name, med=med):
                return f"{med[name] / med['hand']:.2f}x" if name in med and "hand" in med else "-"

            print(f"| {n_classes} | {loss_name} | {cell('hand')} | {cell('sktopk')} | "
                  f"{cell('skorch')} | {cell('sklearn')} | {ratio('sktopk')} | "
                  f"{ratio('skorch')} |", flush=True)
        if args.imbalanced:
            for loss_name in ("ldam", "topk_hinge"):
                durations = imbalanced_fit(X, y, loss_name, args.epochs + 1, device)
                summary[(n_classes, "imbalanced_" + loss_name)] = {
                    "sktopk": statistics.median(durations[1:])}
                print(f"| {n_classes} | ImbalancedTopKClassifier {loss_name} | - | "
                      f"{summary[(n_classes, 'imbalanced_' + loss_name)]['sktopk']:.2f} | - | - "
                      "| - | - |", flush=True)
    print()
    for n_classes in args.classes:
        ratio = (summary[(n_classes, "topk_hinge")]["sktopk"]
                 / summary[(n_classes, "cross_entropy")]["sktopk"])
        print(f"C={n_classes}: TopKClassifier top-K hinge epoch / its cross-entropy epoch = "
              f"{ratio:.2f}x")
        if args.imbalanced:
            imb = summary[(n_classes, "imbalanced_topk_hinge")]["sktopk"]
            print(f"C={n_classes}: ImbalancedTopKClassifier top-K hinge epoch / its LDAM epoch = "
                  f"{imb / summary[(n_classes, 'imbalanced_ldam')]['sktopk']:.2f}x, / "
                  f"TopKClassifier cross-entropy epoch = "
                  f"{imb / summary[(n_classes, 'cross_entropy')]['sktopk']:.2f}x")


if __name__ == "__main__":
    main()
