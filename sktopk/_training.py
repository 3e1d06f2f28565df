"""The training engine behind the estimators: skorch, fed by tensor batch slicing.

skorch brings the loop, callbacks, history, LR schedules and logging; its
default data path (a per-sample ``Dataset`` collated by a ``DataLoader``) costs
about as much as the network itself on in-memory arrays, so the estimators hand
it :class:`TensorData` and :class:`TensorBatchIterator` instead: the arrays are
converted to tensors once, kept on the training device when they fit, and each
batch is one index-select.
"""

import math
import os
import signal
import threading
import warnings
from contextlib import contextmanager, nullcontext

import numpy as np
import scipy.sparse as sp
import torch
from skorch import NeuralNet
from skorch.callbacks import Callback

# Keep at most this fraction of the free GPU memory for the training arrays;
# above it, batches stream from pinned host memory.
_DEVICE_MEMORY_FRACTION = 0.5


class TensorData:
    """Features, labels and weights, ready to be sliced into batches.

    Dense features become one float32 tensor, on ``device`` when they fit there
    (pinned host memory otherwise); sparse CSR features stay on the host and
    are sliced one batch at a time, then densified, or, with
    ``sparse_batches=True``, handed to the network as torch sparse CSR tensors
    (for a first layer that multiplies them directly, see
    :class:`sktopk._modules.SparseInputLinear`).
    """

    def __init__(self, X, y=None, sample_weight=None, device="cpu", sparse_batches=False):
        self.device = torch.device(device)
        self.sparse = sp.issparse(X)
        self.sparse_batches = self.sparse and sparse_batches
        if self.sparse:
            self.X = X.tocsr().astype(np.float32)
        else:
            X = torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32))
            if self.device.type == "cuda" and not _fits_on_device(X, self.device):
                X = X.pin_memory()
            else:
                X = X.to(self.device)
            self.X = X
        self.y = None if y is None else torch.as_tensor(y, dtype=torch.long, device=self.device)
        self.sample_weight = (
            None if sample_weight is None
            else torch.as_tensor(sample_weight, dtype=torch.float32, device=self.device)
        )

    def __len__(self):
        return self.X.shape[0]

    def features(self, index):
        """Features of the rows ``index`` (a 1-d tensor or a slice), on the device."""
        if self.sparse:
            rows = index if isinstance(index, slice) else index.cpu().numpy()
            if self.sparse_batches:
                return csr_to_torch(self.X[rows]).to(self.device)
            dense = torch.from_numpy(self.X[rows].toarray())
            return dense.to(self.device, non_blocking=True)
        if self.X.device != self.device:
            rows = index if isinstance(index, slice) else index.cpu()
            return self.X[rows].to(self.device, non_blocking=True)
        return self.X[index]

    def subset(self, index):
        """A new TensorData holding the rows ``index`` (numpy integer array)."""
        part = TensorData.__new__(TensorData)
        part.device, part.sparse = self.device, self.sparse
        part.sparse_batches = self.sparse_batches
        if self.sparse:
            part.X = self.X[index]
        else:
            part.X = self.X[torch.as_tensor(index, device=self.X.device)]
        rows = torch.as_tensor(index, device=self.device)
        part.y = None if self.y is None else self.y[rows]
        part.sample_weight = None if self.sample_weight is None else self.sample_weight[rows]
        return part


def csr_to_torch(X):
    """A scipy CSR matrix as a float32 torch sparse CSR tensor (shares no memory)."""
    X = X.tocsr()
    return _sparse_csr(torch.from_numpy(X.indptr.astype(np.int64)),
                       torch.from_numpy(X.indices.astype(np.int64)),
                       torch.from_numpy(X.data.astype(np.float32)), X.shape)


def _sparse_csr(crow_indices, col_indices, values, shape):
    with warnings.catch_warnings():
        # torch flags its CSR support as beta on first use; the operations used
        # here (matmul with a dense weight and its backward) are covered by tests.
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow_indices, col_indices, values, size=tuple(shape),
                                       check_invariants=False)


def _fits_on_device(X, device):
    free, _ = torch.cuda.mem_get_info(device)
    return X.element_size() * X.nelement() <= _DEVICE_MEMORY_FRACTION * free


class TensorBatchIterator:
    """Iterate over ``(X_batch, (y_batch, weight_batch))`` slices of a :class:`TensorData`.

    Parameters
    ----------
    data : TensorData
    batch_size : int
    shuffle : bool
        Draw a new permutation at every pass, from ``generator``.
    generator : torch.Generator, optional
        CPU generator for the permutations (reproducible shuffling).
    """

    def __init__(self, data, batch_size, shuffle=False, generator=None):
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator

    def __len__(self):
        return math.ceil(len(self.data) / self.batch_size)

    def __iter__(self):
        n = len(self.data)
        order = None
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(self.data.device)
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            index = slice(start, stop) if order is None else order[start:stop]
            y = None if self.data.y is None else self.data.y[index]
            w = None if self.data.sample_weight is None else self.data.sample_weight[index]
            yield self.data.features(index), (y, w)


class TopKNet(NeuralNet):
    """skorch net that trains on :class:`TensorData` with per-sample weights.

    The criterion is called as ``criterion(scores, target, weight=...)``.
    """

    def __init__(self, *args, shuffle_generator=None, precision="fp32", **kwargs):
        super().__init__(*args, **kwargs)
        self.shuffle_generator = shuffle_generator
        self.precision = precision

    def infer(self, x, **fit_params):
        with autocast(self.precision, x.device):
            scores = self.module_(x, **fit_params)
        # The loss always sees float32 scores: its noise and margins need them.
        return scores.float()

    def check_data(self, X, y=None):
        if not isinstance(X, TensorData):
            raise TypeError("TopKNet trains on sktopk._training.TensorData only.")

    def get_dataset(self, X, y=None):
        return X

    def get_iterator(self, dataset, training=False):
        return TensorBatchIterator(dataset, self.batch_size, shuffle=training,
                                   generator=self.shuffle_generator)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        target, weight = y_true
        return self.criterion_(y_pred, target, weight=weight)

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        with _watch_sigint() as watch:
            try:
                return super().fit_loop(X, y, epochs=epochs, **fit_params)
            except KeyboardInterrupt as exc:
                # skorch's partial_fit swallows KeyboardInterrupt, because early
                # stopping raises it to end training. A Ctrl-C (a SIGINT received,
                # even while a callback ran) or one raised outside a callback is
                # a failed fit: it passes through as TrainingInterrupted, so the
                # estimator rolls back.
                if watch["received"] or not _raised_by_callback(exc):
                    raise TrainingInterrupted from exc
                raise

    def train_step_single(self, batch, **fit_params):
        # On a GPU autograd runs the backward pass in a worker thread; for these
        # small graphs the hand-over costs more than the pass itself (H200, N=1024,
        # C=1000: the top-K hinge's backward 0.56 ms there, 0.26 ms on the calling
        # thread; benchmarks/profile_cuda_loss.py). Same gradients either way.
        with torch.autograd.set_multithreading_enabled(False):
            return super().train_step_single(batch, **fit_params)


class TrainingInterrupted(BaseException):
    """A KeyboardInterrupt (Ctrl-C) during training, carried past skorch's handler."""


@contextmanager
def _watch_sigint():
    """Record whether a SIGINT (Ctrl-C) in the block raised KeyboardInterrupt.

    Only in the main thread (the only one Python delivers signals to), and only
    over a Python handler (the default one raises KeyboardInterrupt).
    """
    watch = {"received": False}
    previous = (signal.getsignal(signal.SIGINT)
                if threading.current_thread() is threading.main_thread() else None)
    if not callable(previous):
        yield watch
        return

    def handler(signum, frame):
        try:
            previous(signum, frame)
        except KeyboardInterrupt:  # a handler that swallows Ctrl-C stops nothing
            watch["received"] = True
            raise

    signal.signal(signal.SIGINT, handler)
    try:
        yield watch
    finally:
        signal.signal(signal.SIGINT, previous)


def _raised_by_callback(exc):
    """Whether a skorch callback's hook raised ``exc`` (its way to stop training)."""
    tb = exc.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, Callback) and tb.tb_frame.f_code.co_name.startswith("on_"):
            return True
        tb = tb.tb_next
    return False


def autocast(precision, device):
    """Autocast context for ``precision`` ("fp32": none, "bf16": bfloat16 matmuls)."""
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return nullcontext()


def iter_scores(module, data, batch_size, precision="fp32", fixed_rows=False):
    """Yield the module's scores on ``data`` batch by batch, in eval mode, without grad.

    With ``fixed_rows=True`` every batch the module sees has ``batch_size`` rows
    (the last one padded with zero rows, whose scores are dropped): GPU matrix
    products pick their algorithm, and so their rounding, by shape, and a
    sample's scores must not depend on how many samples it is scored with.
    """
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode(), autocast(precision, data.device):
            for start in range(0, len(data), batch_size):
                features = data.features(slice(start, start + batch_size))
                rows = features.shape[0]
                if fixed_rows and rows < batch_size:
                    features = pad_rows(features, batch_size)
                yield module(features)[:rows].float()
    finally:
        module.train(was_training)


def pad_rows(features, n_rows):
    """``features`` (dense, or torch sparse CSR) with zero rows appended up to ``n_rows``."""
    missing = n_rows - features.shape[0]
    if features.layout == torch.sparse_csr:
        crow = features.crow_indices()
        return _sparse_csr(torch.cat([crow, crow[-1:].expand(missing)]),
                           features.col_indices(), features.values(),
                           (n_rows, features.shape[1]))
    return torch.cat([features, features.new_zeros((missing, *features.shape[1:]))])


def top_k_hits(scores, target, k):
    """Boolean tensor: is each target among the ``k`` highest scores of its row."""
    k = min(k, scores.shape[1])
    return (scores.topk(k, dim=1).indices == target.unsqueeze(1)).any(dim=1)


def average_hits(hits, target, n_classes, average, weight=None):
    """Micro (all samples) or macro (mean over present classes) rate of ``hits``.

    With per-sample ``weight`` (sample_weight times class_weight), the rates are
    weighted, as the hold-out loss is; a class whose samples all weigh zero is
    not present. 0 when no sample weighs anything.
    """
    hits = hits.float()
    if weight is None:
        if average == "micro":
            return float(hits.mean())
        per_class = torch.zeros(n_classes, device=hits.device).index_add_(0, target, hits)
        counts = torch.bincount(target, minlength=n_classes).float()
        present = counts > 0
        return float((per_class[present] / counts[present]).mean())
    weight = weight.to(hits.dtype)
    if average == "micro":
        total = weight.sum()
        return float((hits * weight).sum() / total) if total > 0 else 0.0
    per_class = torch.zeros(n_classes, device=hits.device).index_add_(0, target, hits * weight)
    totals = torch.zeros(n_classes, device=hits.device).index_add_(0, target, weight)
    present = totals > 0
    return float((per_class[present] / totals[present]).mean()) if present.any() else 0.0


class ValidationTopKAccuracy(Callback):
    """Record the top-k accuracy on held-out data as ``valid_topk`` after each epoch."""

    def __init__(self, data, k, n_classes, average="micro", batch_size=4096,
                 precision="fp32"):
        self.data = data
        self.precision = precision
        self.k = k
        self.n_classes = n_classes
        self.average = average
        self.batch_size = batch_size

    def on_epoch_end(self, net, **kwargs):
        hits = torch.cat([
            top_k_hits(scores, self.data.y[start:start + len(scores)], self.k)
            for start, scores in _with_offsets(iter_scores(net.module_, self.data,
                                                           self.batch_size, self.precision))
        ])
        value = average_hits(hits, self.data.y, self.n_classes, self.average,
                             self.data.sample_weight)
        net.history.record("valid_topk", value)


def _with_offsets(batches):
    start = 0
    for batch in batches:
        yield start, batch
        start += len(batch)


class FiniteLossGuard(Callback):
    """Stop training with a clear error as soon as the training loss is NaN or infinite."""

    def on_batch_end(self, net, batch=None, training=False, loss=None, **kwargs):
        if training and loss is not None and not math.isfinite(value := loss.item()):
            lr = getattr(net, "lr", None)
            raise ValueError(
                f"The training loss became {value} at epoch {len(net.history)}: the "
                f"optimisation diverged. Lower learning_rate (now {lr}), standardise the "
                "features, or check them for extreme values."
            )


def thread_budget():
    """Threads a fit may use: 1 inside a Dask worker, else the OMP_NUM_THREADS share, else None.

    Parallel searches start one fit per worker; each torch fit would otherwise
    use every core of the machine and they would oversubscribe it. A Dask worker
    runs one fit per worker thread, all in one process, and torch's thread count
    is process-wide: one torch thread per fit is the only setting that neither
    oversubscribes nor lets concurrent fits undo each other's setting. (joblib's
    process backends export OMP_NUM_THREADS to their workers; it is honoured.)
    """
    try:
        from distributed import get_worker

        get_worker()
        return 1
    except (ImportError, ValueError, AttributeError):
        pass
    value = os.environ.get("OMP_NUM_THREADS")
    if value and value.isdigit() and int(value) > 0:
        return int(value)
    return None


@contextmanager
def limited_torch_threads(n_threads):
    """Run the block with at most ``n_threads`` torch intra-op threads."""
    previous = torch.get_num_threads()
    if n_threads is None or n_threads >= previous:
        yield
        return
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
