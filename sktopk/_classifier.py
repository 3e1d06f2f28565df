"""scikit-learn estimators that train a torch network with a top-K loss."""

import copy
import inspect
import numbers
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data
from skorch.callbacks import ProgressBar

from ._class_balance import (
    ClassWeightedLoss,
    DeferredReweighting,
    StagedEarlyStopping,
    effective_number_weights,
)
from ._combined import HingeWithCrossEntropy
from ._focal import FocalLoss
from ._ldam import LDAMLoss
from ._logit_adjusted import LogitAdjustedCrossEntropyLoss, posthoc_logit_adjust
from ._margins import class_margins
from ._modules import ACTIVATIONS, MLP
from ._monitor import MONITORS, ValidationLoss
from ._ranking import top_k_indices
from ._schedules import SCHEDULES, make_lr_scheduler
from ._smooth_svm import SmoothTopKSVMLoss
from ._topk_hinge import ImbalancedTopKHingeLoss, TopKHingeLoss
from ._training import (
    FiniteLossGuard,
    TensorData,
    TopKNet,
    ValidationTopKAccuracy,
    average_hits,
    iter_scores,
    limited_torch_threads,
    thread_budget,
    top_k_hits,
)
from ._validation import check_positive_int, reduce_loss

_OPTIMIZERS = {
    "adamw": (torch.optim.AdamW, {}),
    "adam": (torch.optim.Adam, {}),
    "sgd": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
}
_PREDICT_BATCH_SIZE = 8192
_SEED_HIGH = np.iinfo(np.int32).max
# Candidate strengths of the post-hoc logit adjustment, in logit units.
_TAU_GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)
# Effective-number beta of deferred re-weighting (Cao et al. 2019).
_DRW_BETA = 0.9999


class _CrossEntropy(torch.nn.Module):
    """Cross-entropy with the ``(scores, target, weight=None)`` signature of sktopk's losses."""

    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = scale

    def forward(self, scores, target, weight=None):
        per_sample = torch.nn.functional.cross_entropy(self.scale * scores, target,
                                                       reduction="none")
        return reduce_loss(per_sample, "mean", weight)


def resolve_device(device):
    """Turn the ``device`` parameter into a torch.device, with a clear error if unusable."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device={device!r} is not a device torch knows; use 'auto', 'cpu' or 'cuda'."
        ) from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} but torch sees no CUDA GPU here; use device='auto' "
                "(GPU when there is one, else CPU) or device='cpu'."
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} but only {torch.cuda.device_count()} CUDA device(s) exist."
            )
    elif resolved.type not in ("cpu", "mps"):
        raise ValueError(f"device={device!r} is not supported; use 'auto', 'cpu' or 'cuda'.")
    return resolved


def _check_real(value, name, low, high, *, low_open=False, high_open=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or np.isnan(value):
        raise TypeError(f"{name} must be a real number, got {value!r}.")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value}.")


def _validation_split(y, fraction, rng):
    """Stratified hold-out: each class keeps at least one sample for training.

    Quotas ``fraction * n_c`` are rounded by largest remainder so the split has
    close to ``fraction * n`` samples even when most classes are tiny.
    """
    classes, y_idx, counts = np.unique(y, return_inverse=True, return_counts=True)
    cap = counts - 1
    quota = np.minimum(fraction * counts, cap)
    take = np.floor(quota).astype(int)
    remainder = min(int(np.ceil(fraction * len(y))) - take.sum(), int((cap - take).sum()))
    if remainder > 0:
        spare = np.flatnonzero(take < cap)
        order = spare[np.argsort(-(quota - take)[spare], kind="stable")]
        take[order[:remainder]] += 1
    valid = []
    for c in range(len(classes)):
        members = np.flatnonzero(y_idx == c)
        valid.append(rng.permutation(members)[: take[c]])
    valid = np.sort(np.concatenate(valid)) if valid else np.array([], dtype=int)
    train = np.setdiff1d(np.arange(len(y)), valid)
    return train, valid


class _BaseTopKClassifier(ClassifierMixin, BaseEstimator):
    """Fit/predict machinery shared by the two estimators."""

    _losses = ()
    _probabilistic_losses = ()
    _monitor_average = "micro"
    _hinge_losses = ("topk_hinge",)
    _cosine_head = False

    # ----------------------------------------------------------------- checks
    def _check_params(self):
        check_positive_int(self.k, "k")
        if self.loss not in self._losses:
            raise ValueError(f"loss must be one of {self._losses}, got {self.loss!r}.")
        _check_real(self.epsilon, "epsilon", 0, np.inf, high_open=True)
        check_positive_int(self.n_perturbations, "n_perturbations")
        sizes = self.hidden_layer_sizes
        if not isinstance(sizes, (tuple, list)) or not all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in sizes
        ):
            raise ValueError(
                "hidden_layer_sizes must be a tuple of positive integers (() for a linear "
                f"model), got {sizes!r}."
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, "
                             f"got {self.activation!r}.")
        _check_real(self.dropout, "dropout", 0, 1, high_open=True)
        if not (self.optimizer in _OPTIMIZERS or (
                isinstance(self.optimizer, type)
                and issubclass(self.optimizer, torch.optim.Optimizer))):
            raise ValueError(f"optimizer must be one of {tuple(_OPTIMIZERS)} or a "
                             f"torch.optim.Optimizer class, got {self.optimizer!r}.")
        _check_real(self.learning_rate, "learning_rate", 0, np.inf, low_open=True,
                    high_open=True)
        _check_real(self.weight_decay, "weight_decay", 0, np.inf, high_open=True)
        check_positive_int(self.batch_size, "batch_size")
        check_positive_int(self.max_epochs, "max_epochs")
        _check_real(self.validation_fraction, "validation_fraction", 0, 1, low_open=True,
                    high_open=True)
        check_positive_int(self.n_iter_no_change, "n_iter_no_change")
        if self.class_weight is not None and not (
                self.class_weight == "balanced" or isinstance(self.class_weight, dict)):
            raise ValueError("class_weight must be None, 'balanced' or a dict {label: weight}, "
                             f"got {self.class_weight!r}.")
        if self.module is not None and not (
                isinstance(self.module, torch.nn.Module)
                or (isinstance(self.module, type) and issubclass(self.module, torch.nn.Module))):
            raise TypeError("module must be None, a torch.nn.Module instance or a Module "
                            f"class, got {self.module!r}.")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}.")
        if self.loss_params is not None and not isinstance(self.loss_params, dict):
            raise TypeError(f"loss_params must be None or a dict, got {self.loss_params!r}.")
        self._check_lever_params()
        return resolve_device(self.device)

    def _check_lever_params(self):
        if self.monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {MONITORS}, got {self.monitor!r}.")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}.")
        check_positive_int(self.warmup_epochs, "warmup_epochs", minimum=0)
        if self.warmup_epochs >= self.max_epochs:
            raise ValueError(f"warmup_epochs={self.warmup_epochs} must be smaller than "
                             f"max_epochs={self.max_epochs}.")
        if self.drw_start is not None:
            _check_real(self.drw_start, "drw_start", 0, 1)
        _check_real(self.ce_weight, "ce_weight", 0, np.inf, high_open=True)
        if self.ce_weight > 0 and self.loss not in self._hinge_losses:
            raise ValueError(f"ce_weight={self.ce_weight} adds cross-entropy to a top-K hinge "
                             f"loss; loss={self.loss!r} is not one. Use loss in "
                             f"{self._hinge_losses} or ce_weight=0.")
        if not (isinstance(self.logit_adjustment, str) and self.logit_adjustment == "auto"):
            if isinstance(self.logit_adjustment, str):
                raise ValueError("logit_adjustment must be 'auto' or a number >= 0, got "
                                 f"{self.logit_adjustment!r}.")
            _check_real(self.logit_adjustment, "logit_adjustment", 0, np.inf, high_open=True)

    def _effective_k(self, n_classes):
        if self.k < n_classes:
            return int(self.k)
        warnings.warn(
            f"k={self.k} but there are only {n_classes} classes; the top-k loss needs "
            f"k < n_classes, so it is trained with k={n_classes - 1}.",
            UserWarning,
            stacklevel=4,
        )
        return n_classes - 1

    # --------------------------------------------------------------- building
    def _build_module(self, n_features, n_classes, generator):
        if self.module is None:
            return MLP(n_features, n_classes, tuple(self.hidden_layer_sizes), self.activation,
                       self.dropout, cosine_head=self._cosine_head, generator=generator)
        if isinstance(self.module, torch.nn.Module):
            return copy.deepcopy(self.module)
        accepted = inspect.signature(self.module).parameters
        kwargs = {name: value for name, value in
                  (("n_features", n_features), ("n_classes", n_classes)) if name in accepted}
        # A user class initialises its weights from torch's global RNG: seed it
        # inside a forked RNG state so random_state still fixes them.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(generator.initial_seed()))
            return self.module(**kwargs)

    def _build_net(self, module, criterion, device, seeds, callbacks):
        optimizer, defaults = (_OPTIMIZERS[self.optimizer] if isinstance(self.optimizer, str)
                               else (self.optimizer, {}))
        optimizer_kwargs = {f"optimizer__{key}": value for key, value in defaults.items()}
        optimizer_kwargs["optimizer__weight_decay"] = self.weight_decay
        all_callbacks = [("finite_loss_guard", FiniteLossGuard())] + list(callbacks)
        if self.verbose > 0:
            all_callbacks.append(("progress_bar", ProgressBar()))
        all_callbacks += list(self.callbacks or [])
        net = TopKNet(
            module, criterion=criterion, optimizer=optimizer, lr=self.learning_rate,
            batch_size=self.batch_size, max_epochs=self.max_epochs, train_split=None,
            callbacks=all_callbacks, device=str(device), verbose=int(self.verbose),
            shuffle_generator=torch.Generator().manual_seed(seeds["shuffle"]),
            precision=self.precision,
            **optimizer_kwargs,
        )
        if self.verbose <= 0:
            net.set_params(callbacks__print_log=None)
        return net.initialize()

    def _loss_generator(self, device, seed):
        return torch.Generator(device=device).manual_seed(seed)

    # ---------------------------------------------------------------- fitting
    def fit(self, X, y, sample_weight=None):
        """Train the network on ``(X, y)``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training features (any shape the ``module`` accepts when one is given).
        y : array-like of shape (n_samples,)
            Class labels.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative per-sample weights.

        Returns
        -------
        self : object
        """
        return self._fit(X, y, sample_weight, classes=None, partial=False)

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One pass (epoch) over ``(X, y)``, continuing from the current weights.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        classes : array-like of shape (n_classes,), default=None
            Every class of the problem; required on the first call.
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : object
        """
        return self._fit(X, y, sample_weight, classes=classes, partial=True)

    def _fit(self, X, y, sample_weight, classes, partial):
        device = self._check_params()
        fitted = hasattr(self, "classes_")
        reset = not fitted or (not partial and not self.warm_start)
        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=(np.float32, np.float64),
                             allow_nd=self.module is not None, reset=reset)
        check_classification_targets(y)
        if reset:
            if partial and classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            all_classes = np.unique(y if classes is None else classes)
            if len(all_classes) < 2:
                raise ValueError(
                    f"{type(self).__name__} needs at least 2 classes in y, got "
                    f"{len(all_classes)} ({all_classes!r}): a top-k ranking of one class is "
                    "meaningless."
                )
            self.classes_ = all_classes
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if len(unknown):
            raise ValueError(f"y contains labels {unknown[:10]!r} not in classes_ "
                             f"{self.classes_[:10]!r}; pass every class on the first "
                             "call to partial_fit, or refit.")
        y_idx = np.searchsorted(self.classes_, y)
        weight = None
        if sample_weight is not None:
            weight = _check_sample_weight(sample_weight, X, dtype=np.float64,
                                          ensure_non_negative=True)
        if self.class_weight is not None:
            class_factor = compute_sample_weight(self.class_weight, y)
            weight = class_factor if weight is None else weight * class_factor

        n_classes = len(self.classes_)
        if reset:
            self.k_ = self._effective_k(n_classes)
            self.device_ = str(device)
            rng = check_random_state(self.random_state)
            self._seeds = dict(zip(("init", "shuffle", "loss", "split"),
                                   (int(s) for s in rng.randint(_SEED_HIGH, size=4)), strict=True))
            self._update_class_counts(y_idx, n_classes, reset=True)
        else:
            self._update_class_counts(y_idx, n_classes, reset=False)

        data = TensorData(X, y_idx, weight, device=device,
                          sparse_batches=self._sparse_batches())
        callbacks, train_data, valid_data = [], data, None
        if self.early_stopping and not partial:
            split_rng = np.random.RandomState(self._seeds["split"])
            train_idx, valid_idx = _validation_split(y_idx, self.validation_fraction, split_rng)
            if len(valid_idx) == 0:
                warnings.warn(
                    f"validation_fraction={self.validation_fraction} leaves no sample for "
                    f"early stopping with {len(y_idx)} samples; training for "
                    f"max_epochs={self.max_epochs} epochs instead.", UserWarning, stacklevel=3)
            else:
                train_data, valid_data = data.subset(train_idx), data.subset(valid_idx)
        if not partial:
            callbacks = self._lever_callbacks(train_data, valid_data, n_classes)

        with limited_torch_threads(thread_budget()), torch.random.fork_rng(
                devices=[device] if device.type == "cuda" else []):
            # Dropout draws from torch's global RNG: fork it and seed it so that
            # random_state fixes the run without touching the caller's RNG state.
            torch.manual_seed(self._seeds["init"])
            if reset or getattr(self, "_net", None) is None:
                if reset:
                    module = self._build_module(
                        X.shape[1], n_classes,
                        torch.Generator().manual_seed(self._seeds["init"]))
                else:
                    module = self.module_
                criterion = self._wrap_criterion(self._build_criterion(n_classes, device),
                                                 n_classes)
                self._net = self._build_net(module, criterion, device, self._seeds, callbacks)
            elif not partial:
                # warm_start: keep weights and optimizer state, refresh the callbacks.
                if isinstance(self._net.criterion_, ClassWeightedLoss):
                    self._net.criterion_.class_weight.fill_(1.0)
                self._net.set_params(callbacks=self._net.callbacks[:1] + callbacks
                                     + list(self.callbacks or []))
                self._net.initialize_callbacks()
            self._net.partial_fit(train_data, None, epochs=1 if partial else self.max_epochs)
        self.module_ = self._net.module_
        self.logit_adjustment_ = self._choose_logit_adjustment(valid_data, n_classes)
        epochs = [{key: value for key, value in row.items() if key != "batches"}
                  for row in self._net.history]
        self.history_ = epochs
        self.n_iter_ = len(epochs)
        return self

    def _update_class_counts(self, y_idx, n_classes, reset):
        counts = np.bincount(y_idx, minlength=n_classes).astype(np.int64)
        self.class_counts_ = counts if reset else self.class_counts_ + counts
        criterion = getattr(getattr(self, "_net", None), "criterion_", None)
        while isinstance(criterion, ClassWeightedLoss):
            criterion = criterion.loss
        if not reset and hasattr(criterion, "set_class_counts"):
            criterion.set_class_counts(self.class_counts_)

    def _sparse_batches(self):
        """CSR batches reach the built-in MLP's first linear layer without densifying."""
        return (self.module is None and self.precision == "fp32"
                and (bool(self.hidden_layer_sizes) or not self._cosine_head))

    # ------------------------------------------------------------------ levers
    def _wrap_criterion(self, criterion, n_classes):
        if self.ce_weight > 0:
            criterion = HingeWithCrossEntropy(criterion, self.ce_weight, self._logit_scale())
        if self.drw_start is not None:
            criterion = ClassWeightedLoss(criterion, n_classes)
        return criterion

    def _lever_callbacks(self, train_data, valid_data, n_classes):
        """Hold-out monitor, early stopping, deferred re-weighting and LR schedule."""
        callbacks, drw = [], None
        if self.drw_start is not None:
            counts = np.bincount(train_data.y.cpu().numpy(), minlength=n_classes)
            start = int(np.floor(self.drw_start * self.max_epochs)) + 1
            drw = DeferredReweighting(effective_number_weights(counts, _DRW_BETA), start)
            callbacks.append(("deferred_reweighting", drw))
        if valid_data is not None:
            if self.monitor == "loss":
                callbacks.append(("holdout_loss", ValidationLoss(valid_data,
                                                               precision=self.precision)))
                key, lower = "holdout_loss", True
            else:
                average = "macro" if self.monitor == "macro_top_k" else "micro"
                callbacks.append(("valid_topk", ValidationTopKAccuracy(
                    valid_data, self.k_, n_classes, average, precision=self.precision)))
                key, lower = "valid_topk", False
            callbacks.append(("early_stopping", StagedEarlyStopping(
                monitor=key, lower_is_better=lower, patience=self.n_iter_no_change,
                threshold=0.0, threshold_mode="abs", load_best=True, sink=_silent,
                deferred=drw)))
        scheduler = make_lr_scheduler(self.lr_schedule, self.max_epochs, self.warmup_epochs)
        if scheduler is not None:
            callbacks.append(("lr_schedule", scheduler))
        return callbacks

    def _choose_logit_adjustment(self, valid_data, n_classes):
        """The tau of the post-hoc adjustment: given, or the best on the hold-out."""
        if not (isinstance(self.logit_adjustment, str)):
            return float(self.logit_adjustment)
        if valid_data is None:
            if hasattr(self, "logit_adjustment_"):
                return self.logit_adjustment_
            warnings.warn("logit_adjustment='auto' chooses tau on the early-stopping hold-out, "
                          "and this fit has none (early_stopping=False or partial_fit): "
                          "no adjustment (tau=0).", UserWarning, stacklevel=4)
            return 0.0
        with limited_torch_threads(thread_budget()):
            scores = torch.cat([batch.float() for batch in iter_scores(
                self.module_, valid_data, _PREDICT_BATCH_SIZE, self.precision)])
        average = "micro" if self.monitor == "top_k" else (
            "macro" if self.monitor == "macro_top_k" else self._monitor_average)
        best_tau, best = 0.0, -np.inf
        for tau in _TAU_GRID:
            adjusted = posthoc_logit_adjust(scores * self._logit_scale(), self.class_counts_,
                                            tau)
            value = average_hits(top_k_hits(adjusted, valid_data.y, self.k_), valid_data.y,
                                 n_classes, average)
            if value > best:  # ties keep the smaller tau
                best_tau, best = tau, value
        return best_tau

    def _build_criterion(self, n_classes, device):
        raise NotImplementedError

    # ------------------------------------------------------------- predicting
    def _raw_scores(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse="csr", dtype=(np.float32, np.float64),
                          allow_nd=self.module is not None, reset=False)
        data = TensorData(X, device=self.device_, sparse_batches=self._sparse_batches())
        with limited_torch_threads(thread_budget()):
            scores = [batch.float().cpu() for batch in
                      iter_scores(self.module_, data, _PREDICT_BATCH_SIZE,
                                    self.precision)]
        scores = torch.cat(scores).numpy().astype(np.float64)
        tau = getattr(self, "logit_adjustment_", 0.0)
        if tau:
            scale = self._logit_scale()
            scores = posthoc_logit_adjust(scores * scale, self.class_counts_, tau) / scale
        return scores

    def decision_function(self, X):
        """Class scores of the network, higher is better.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples, n_classes), or (n_samples,) for binary
            problems, where positive values favour ``classes_[1]``.
        """
        scores = self._raw_scores(X)
        if scores.shape[1] == 2:
            return scores[:, 1] - scores[:, 0]
        return scores

    def predict(self, X):
        """Most likely class of each sample (ties go to the earlier class in ``classes_``).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        scores = self._raw_scores(X)  # checks fitted first
        return self.classes_[np.argmax(scores, axis=1)]

    def predict_topk(self, X, k=None):
        """The ``k`` most likely classes of each sample, best first.

        Ties follow the rule of :mod:`sktopk.metrics`: among equal scores the
        earlier class in ``classes_`` ranks first, so the top-K scorers and this
        method always agree.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        k : int, default=None
            Number of classes to return; the estimator's ``k`` when None. Values
            above the number of classes are clipped, with a warning.

        Returns
        -------
        labels : ndarray of shape (n_samples, k)
            Labels from ``classes_``.
        """
        check_is_fitted(self)
        n_classes = len(self.classes_)
        if k is None:
            k = min(self.k, n_classes)
        else:
            check_positive_int(k, "k")
            if k > n_classes:
                warnings.warn(f"k={k} is larger than the {n_classes} classes; returning all "
                              f"{n_classes} classes in order.", UserWarning, stacklevel=2)
                k = n_classes
        return self.classes_[top_k_indices(self._raw_scores(X), k)]

    def _check_proba(self):
        if self.loss not in self._probabilistic_losses:
            raise AttributeError(
                f"predict_proba is not available with loss={self.loss!r}: hinge-type losses "
                "give scores, not probabilities. Use decision_function, wrap the estimator in "
                "sklearn.calibration.CalibratedClassifierCV, or choose loss in "
                f"{self._probabilistic_losses}."
            )
        return True

    @property
    def predict_proba(self):
        """Class probabilities (softmax of the scores); only for probabilistic losses.

        Available with loss "cross_entropy" or "focal" (and "ldam" for
        :class:`ImbalancedTopKClassifier`); with a hinge loss, accessing it raises
        AttributeError, so ``hasattr(clf, "predict_proba")`` is False and sklearn
        tools fall back to ``decision_function``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        # A property, not sklearn's available_if: that one replaces the message
        # below (which says what to do instead) by a generic one.
        self._check_proba()
        return self._predict_proba

    def _predict_proba(self, X):
        logits = torch.from_numpy(self._raw_scores(X) * self._logit_scale())
        return torch.softmax(logits, dim=1).numpy()

    def _logit_scale(self):
        return 1.0

    # ------------------------------------------------------------ persistence
    def __getstate__(self):
        # Weights travel as numpy arrays and the module is rebuilt on load: the
        # pickle then holds no torch object (skops can load it trusting only
        # sktopk's types) and a model trained on a GPU loads on a CPU-only host.
        state = self.__dict__.copy()
        state.pop("_net", None)
        module = state.pop("module_", None)
        if module is not None:
            state["_module_weights"] = {name: tensor.detach().cpu().numpy()
                                        for name, tensor in module.state_dict().items()}
        return state

    def __setstate__(self, state):
        weights = state.pop("_module_weights", None)
        self.__dict__.update(state)
        if weights is None:
            return
        if self.device_.startswith("cuda") and not torch.cuda.is_available():
            self.device_ = "cpu"
        module = self._build_module(self.n_features_in_, len(self.classes_),
                                    torch.Generator().manual_seed(0))
        module.load_state_dict({name: torch.from_numpy(np.array(value))
                                for name, value in weights.items()})
        self.module_ = module.to(self.device_)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.classifier_tags.multi_class = True
        # Top-K losses do not optimise top-1 accuracy (the k defaults to 5): the
        # common checks' 0.83 top-1 threshold on tiny data is not their target.
        tags.classifier_tags.poor_score = True
        return tags


def _silent(*args, **kwargs):
    """Sink for skorch's early-stopping message (verbose=0 must print nothing)."""


_SHARED_PARAMS_DOC = """
    hidden_layer_sizes : tuple of int, default=(256,)
        Hidden layer widths of the MLP; ``()`` gives a linear model.
    activation : {"relu", "gelu", "tanh", "logistic", "identity"}, default="relu"
    dropout : float, default=0.0
        Dropout probability after each hidden layer.
    module : torch.nn.Module instance or class, default=None
        Your own network mapping a batch of X to (N, n_classes) scores, instead of
        the MLP. A class is instantiated with ``n_features`` and ``n_classes`` if
        its constructor takes them; an instance is deep-copied at each fit.
    optimizer : {"adamw", "adam", "sgd"} or torch.optim.Optimizer class, default="adamw"
    learning_rate : float, default=1e-3
    weight_decay : float, default=1e-4
    batch_size : int, default=256
    max_epochs : int, default=100
    early_stopping : bool, default=True
        Hold out a stratified ``validation_fraction`` (every class keeps at least one
        training sample), stop after ``n_iter_no_change`` epochs without improvement
        of the validation top-k accuracy, and restore the best weights.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=10
    class_weight : dict, "balanced" or None, default=None
        Per-class factors applied to the sample weights.
    device : str, default="auto"
        "auto" trains on CUDA when available, else on CPU; "cpu", "cuda", "cuda:1".
    random_state : int, RandomState instance or None, default=None
        Fixes the initial weights, the shuffling, the validation split and the
        loss's noise (through torch.Generator objects): with an int, CPU training is
        bit-for-bit reproducible.
    verbose : int, default=0
        ``> 0`` prints a per-epoch log and a progress bar.
    warm_start : bool, default=False
        Continue from the previous fit's weights instead of reinitialising.
    callbacks : list of (name, skorch.callbacks.Callback), default=None
        Extra skorch callbacks (LR schedules, checkpoints, ...).
    loss_params : dict, default=None
        Extra parameters of the loss (e.g. ``{"tau": 0.1}`` for "smooth_svm",
        ``{"gamma": 1.0}`` for "focal", ``{"noise": "shared"}`` for "topk_hinge").
    precision : {"fp32", "bf16"}, default="fp32"
        "bf16" runs the network under bfloat16 autocast (matmuls in bfloat16,
        weights and the loss in float32): faster on GPUs with bfloat16 tensor cores.
    monitor : {"top_k", "macro_top_k", "loss"}
        What early stopping watches on the hold-out: the top-k accuracy
        ("top_k", the default of :class:`TopKClassifier`), its class average
        ("macro_top_k", the default of :class:`ImbalancedTopKClassifier`), or the
        training loss ("loss", recorded as ``holdout_loss``).
    lr_schedule : {"constant", "cosine", "step"}, default="constant"
        Learning-rate schedule over ``max_epochs`` (per epoch, through skorch's
        ``LRScheduler``): "cosine" anneals to 0, "step" divides by 10 at 80% and
        90% of ``max_epochs``. Early stopping may end training before the end.
    warmup_epochs : int, default=0
        Epochs of linear warm-up before the schedule (any schedule).
    drw_start : float in [0, 1] or None, default=None
        Deferred re-weighting (Cao et al., 2019): from epoch
        ``floor(drw_start * max_epochs) + 1`` on, each sample's weight is multiplied
        by its class's effective-number weight ``(1 - beta) / (1 - beta ** n_c)``
        (``beta=0.9999``, normalised to sum to the number of classes). With early
        stopping, a plateau before that epoch switches the weights on instead of
        stopping (best weights so far restored, patience restarted), and the best
        epoch of both stages on the monitored metric is kept. None: never.
    ce_weight : float, default=0.0
        Adds ``ce_weight`` times the cross-entropy (of ``scale * scores`` for the
        cosine head) to a top-K hinge loss, to keep pulling the true class to rank 1.
    logit_adjustment : float or "auto", default=0.0
        Post-hoc logit adjustment (Menon et al., 2021): the scores used by
        ``decision_function``, ``predict``, ``predict_topk`` and ``predict_proba``
        become ``s - tau * log(prior) / scale`` with the training class priors.
        "auto" chooses tau on the early-stopping hold-out, among
        0, 0.05, ..., 2, for the monitored metric ("loss": the estimator's default
        metric); ``logit_adjustment_`` records it.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (``n_features_in_``,)
        Defined when X has feature names that are all strings.
    k_ : int
        The k the loss was trained with (``k``, or ``n_classes - 1`` if smaller).
    module_ : torch.nn.Module
        The trained network.
    history_ : list of dict
        One dict per epoch: ``epoch``, ``train_loss``, ``valid_topk``, ``dur``...
    n_iter_ : int
        Number of epochs run.
    device_ : str
        Device the network lives on.
    class_counts_ : ndarray of shape (n_classes,)
        Training samples per class (accumulated over ``partial_fit`` calls).
    logit_adjustment_ : float
        The tau of the post-hoc logit adjustment applied to the scores.
"""


class TopKClassifier(_BaseTopKClassifier):
    # Assigned, not a bare string: a concatenated string is not a docstring.
    __doc__ = """Neural network classifier trained with the smoothed top-K hinge loss.

    An MLP (or your own torch module) trained on CPU or GPU with the balanced loss
    ``relu(1 + T_{K+1}(s) - s_y)`` of Garcin et al. (2022), or a baseline loss on
    the same network, so that losses compare fairly in a grid search.

    Parameters
    ----------
    k : int, default=5
        The K of top-K accuracy the loss targets. With ``k >= n_classes`` the loss
        uses ``n_classes - 1`` and warns.
    epsilon : float, default=1.0
        Noise scale of the smoothing (0: the exact top-K calibrated hinge).
    n_perturbations : int, default=10
        Monte-Carlo draws of the smoothing.
    loss : {"topk_hinge", "cross_entropy", "smooth_svm", "focal", "logit_adjusted"}
        Default "topk_hinge". "smooth_svm" is the smooth top-K SVM of Berrada et al. (2018) with this k;
        "logit_adjusted" the logit-adjusted cross-entropy of Menon et al. (2021),
        ``CE(s + tau * log(prior))`` (``loss_params={"tau": 1.0}`` by default).
""" + _SHARED_PARAMS_DOC + """
    See Also
    --------
    ImbalancedTopKClassifier : Class-dependent margins on a cosine head, for long tails.
    sktopk.losses.TopKHingeLoss : The loss on its own.
    sktopk.metrics.make_top_k_scorer : Select models by top-K accuracy.

    References
    ----------
    Garcin, Servajean, Joly & Salmon, "Stochastic smoothing of the top-K calibrated
    hinge loss for deep imbalanced classification", ICML 2022.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from sktopk import TopKClassifier
    >>> X, y = make_classification(n_samples=300, n_classes=6, n_informative=6,
    ...                            random_state=0)
    >>> clf = TopKClassifier(k=2, max_epochs=20, random_state=0).fit(X, y)
    >>> clf.predict_topk(X[:3]).shape
    (3, 2)
    """

    _losses = ("topk_hinge", "cross_entropy", "smooth_svm", "focal", "logit_adjusted")
    _probabilistic_losses = ("cross_entropy", "focal", "logit_adjusted")

    def __init__(self, k=5, epsilon=1.0, n_perturbations=10, loss="topk_hinge",
                 hidden_layer_sizes=(256,), activation="relu", dropout=0.0, module=None,
                 optimizer="adamw", learning_rate=1e-3, weight_decay=1e-4, batch_size=256,
                 max_epochs=100, early_stopping=True, validation_fraction=0.1,
                 n_iter_no_change=10, class_weight=None, device="auto", random_state=None,
                 verbose=0, warm_start=False, callbacks=None, loss_params=None,
                 precision="fp32", monitor="top_k", lr_schedule="constant",
                 warmup_epochs=0, drw_start=None, ce_weight=0.0, logit_adjustment=0.0):
        self.k = k
        self.epsilon = epsilon
        self.n_perturbations = n_perturbations
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.dropout = dropout
        self.module = module
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.class_weight = class_weight
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.callbacks = callbacks
        self.loss_params = loss_params
        self.precision = precision
        self.monitor = monitor
        self.lr_schedule = lr_schedule
        self.warmup_epochs = warmup_epochs
        self.drw_start = drw_start
        self.ce_weight = ce_weight
        self.logit_adjustment = logit_adjustment

    def _build_criterion(self, n_classes, device):
        params = dict(self.loss_params or {})
        if self.loss == "topk_hinge":
            return TopKHingeLoss(self.k_, self.epsilon, self.n_perturbations,
                                 generator=self._loss_generator(device, self._seeds["loss"]),
                                 **params)
        if self.loss == "smooth_svm":
            return SmoothTopKSVMLoss(k=self.k_, **params)
        if self.loss == "focal":
            return FocalLoss(**params)
        if self.loss == "logit_adjusted":
            return LogitAdjustedCrossEntropyLoss(self.class_counts_, **params)
        return _CrossEntropy(**params)


class ImbalancedTopKClassifier(_BaseTopKClassifier):
    # Assigned, not a bare string: a concatenated string is not a docstring.
    __doc__ = (
        """Top-K classifier for long-tailed classes: imbalanced smoothed hinge on a cosine head.

    The network's last layer scores by cosine similarity, and the loss is
    ``relu(scale * (m_y + T_{K+1}(s) - s_y))`` with margins ``m_c`` proportional to
    ``n_c ** (-1/4)`` from the training class counts, the rarest class getting
    ``max_margin`` (Garcin et al., 2022). Early stopping monitors the
    macro-averaged (class-averaged) top-k accuracy.

    Parameters
    ----------
    k : int, default=5
    epsilon : float, default=0.01
        Noise scale, in cosine units (0.01 at scale 60 acts like 0.6 on logits).
    n_perturbations : int, default=5
    max_margin : float, default=0.2
        Margin of the rarest class.
    scale : float, default=60.0
        Multiplier of the cosine scores inside the loss.
    loss : {"topk_hinge", "ldam"}, default="topk_hinge"
        "ldam" is the LDAM baseline (Cao et al., 2019) on the same head and margins.
""" + _SHARED_PARAMS_DOC + """    margins_ : ndarray of shape (n_classes,)
        The class margins of the loss (zero counts are treated as 1).

    See Also
    --------
    TopKClassifier : The balanced loss on an ordinary head.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from sktopk import ImbalancedTopKClassifier
    >>> X, y = make_classification(n_samples=400, n_classes=5, n_informative=5,
    ...                            weights=[0.6, 0.2, 0.1, 0.07, 0.03], random_state=0)
    >>> clf = ImbalancedTopKClassifier(k=2, max_epochs=20, random_state=0).fit(X, y)
    >>> clf.margins_.argmax() == clf.class_counts_.argmin()
    np.True_
    """)

    _losses = ("topk_hinge", "ldam")
    _probabilistic_losses = ("ldam",)
    _monitor_average = "macro"
    _cosine_head = True

    def __init__(self, k=5, epsilon=0.01, n_perturbations=5, max_margin=0.2, scale=60.0,
                 loss="topk_hinge", hidden_layer_sizes=(256,), activation="relu", dropout=0.0,
                 module=None, optimizer="adamw", learning_rate=1e-3, weight_decay=1e-4,
                 batch_size=256, max_epochs=100, early_stopping=True, validation_fraction=0.1,
                 n_iter_no_change=10, class_weight=None, device="auto", random_state=None,
                 verbose=0, warm_start=False, callbacks=None, loss_params=None,
                 precision="fp32", monitor="macro_top_k", lr_schedule="constant",
                 warmup_epochs=0, drw_start=None, ce_weight=0.0, logit_adjustment=0.0):
        self.k = k
        self.epsilon = epsilon
        self.n_perturbations = n_perturbations
        self.max_margin = max_margin
        self.scale = scale
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.dropout = dropout
        self.module = module
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.class_weight = class_weight
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.callbacks = callbacks
        self.loss_params = loss_params
        self.precision = precision
        self.monitor = monitor
        self.lr_schedule = lr_schedule
        self.warmup_epochs = warmup_epochs
        self.drw_start = drw_start
        self.ce_weight = ce_weight
        self.logit_adjustment = logit_adjustment

    def _check_params(self):
        device = super()._check_params()
        _check_real(self.max_margin, "max_margin", 0, np.inf, high_open=True)
        _check_real(self.scale, "scale", 0, np.inf, low_open=True, high_open=True)
        return device

    def _update_class_counts(self, y_idx, n_classes, reset):
        counts = np.bincount(y_idx, minlength=n_classes).astype(np.int64)
        self.class_counts_ = counts if reset else self.class_counts_ + counts
        self.margins_ = class_margins(self.class_counts_, self.max_margin).numpy()
        criterion = getattr(getattr(self, "_net", None), "criterion_", None)
        if not reset and criterion is not None and hasattr(criterion, "margins"):
            criterion.margins.copy_(torch.from_numpy(self.margins_))

    def _build_criterion(self, n_classes, device):
        params = dict(self.loss_params or {})
        if self.loss == "ldam":
            return LDAMLoss(self.class_counts_, max_margin=self.max_margin, scale=self.scale,
                            **params)
        return ImbalancedTopKHingeLoss(
            self.class_counts_, self.k_, self.max_margin, self.scale, self.epsilon,
            self.n_perturbations, generator=self._loss_generator(device, self._seeds["loss"]),
            **params)

    def _logit_scale(self):
        return float(self.scale)
