"""Deferred re-weighting (Cao et al., NeurIPS 2019) with effective-number class weights."""

import numpy as np
import torch
from skorch.callbacks import Callback, EarlyStopping
from torch import nn

from ._validation import check_class_counts


def effective_number_weights(class_counts, beta=0.9999):
    """Class-balanced weights ``(1 - beta) / (1 - beta ** n_c)``, normalised to sum to C.

    The inverse of the "effective number of samples" of each class (Cui et al.,
    CVPR 2019): close to ``1 / n_c`` for small classes, flattening out for classes
    much larger than ``1 / (1 - beta)``. Zero counts are treated as 1.

    Parameters
    ----------
    class_counts : array-like of shape (C,)
    beta : float, default=0.9999
        In [0, 1): 0 gives equal weights.

    Returns
    -------
    weights : ndarray of shape (C,), float64, summing to C.

    Examples
    --------
    >>> from sktopk._class_balance import effective_number_weights
    >>> effective_number_weights([1, 1, 2], beta=0.5).round(4)  # 1, 1 and 0.5 / 0.75
    array([1.125, 1.125, 0.75 ])
    """
    counts = check_class_counts(class_counts).numpy()
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}.")
    weights = (1.0 - beta) / (1.0 - np.power(beta, counts)) if beta > 0 else np.ones_like(counts)
    return weights * len(counts) / weights.sum()


class ClassWeightedLoss(nn.Module):
    """Wrap a loss so that each sample's weight is multiplied by its class's weight.

    The class weights start at 1 (the wrapped loss unchanged) and are switched by
    :class:`DeferredReweighting`. With ``reduction="mean"`` sktopk's losses take a
    weighted mean, so re-weighting changes which samples count, not the loss scale.
    """

    def __init__(self, loss, n_classes):
        super().__init__()
        self.loss = loss
        self.register_buffer("class_weight", torch.ones(n_classes))

    def forward(self, scores, target, weight=None):
        factor = self.class_weight[target]
        return self.loss(scores, target, weight=factor if weight is None else weight * factor)


class DeferredReweighting(Callback):
    """Switch a :class:`ClassWeightedLoss` to class-balanced weights at a given epoch.

    Parameters
    ----------
    class_weight : array-like of shape (C,)
        The weights of the second stage (see :func:`effective_number_weights`).
    start_epoch : int
        1-based epoch from which the weights apply; :class:`StagedEarlyStopping`
        may switch earlier, when the first stage has stopped improving.

    Each epoch records ``drw`` (whether the weights applied) in the history.
    """

    def __init__(self, class_weight, start_epoch):
        self.class_weight = class_weight
        self.start_epoch = start_epoch

    def initialize(self):
        self.switched_at_ = None
        return self

    def switch(self, net):
        """Apply the class weights from the next batch on."""
        net.criterion_.class_weight.copy_(torch.as_tensor(self.class_weight))
        self.switched_at_ = len(net.history)

    def on_epoch_begin(self, net, **kwargs):
        if self.switched_at_ is None and len(net.history) >= self.start_epoch:
            self.switch(net)

    def on_epoch_end(self, net, **kwargs):
        net.history.record("drw", self.switched_at_ is not None)


class StagedEarlyStopping(EarlyStopping):
    """Early stopping that ends the first stage of DRW instead of the training.

    While ``deferred`` has not switched yet, a plateau (``patience`` epochs without
    improvement) restores the best weights so far, switches the re-weighting on
    and restarts the patience count; when the switch comes from the start epoch
    instead, the patience count restarts too. Either way the re-weighted stage
    gets its own ``patience`` epochs. The best epoch over both stages (on the monitored
    hold-out metric) is restored at the end, as with plain early stopping.
    """

    def __init__(self, *args, deferred=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.deferred = deferred

    def on_train_begin(self, net, **kwargs):
        super().on_train_begin(net, **kwargs)
        self.restored_ = False  # set by RestoreBestWeights when it has restored them
        self.second_stage_ = False
        # The first stage's best epoch, when a plateau restored it at the switch.
        self.rewound_to_ = None

    def on_train_end(self, net, **kwargs):
        if not self.restored_:  # else RestoreBestWeights did it, before the user's callbacks
            super().on_train_end(net, **kwargs)

    def on_epoch_end(self, net, **kwargs):
        drw = self.deferred
        if drw is not None and drw.switched_at_ is None:
            score = net.history[-1, self.monitor]
            if not self._is_score_improved(score) and self.misses_ + 1 >= self.patience:
                if self.load_best and self.best_model_weights_ is not None:
                    net.module_.load_state_dict(self.best_model_weights_)
                    self.rewound_to_ = self.best_epoch_
                drw.switch(net)
                self.second_stage_ = True
                self.misses_ = 0
                return
        elif drw is not None and not self.second_stage_:
            # Switched at its start epoch: the re-weighted stage gets its own patience
            # too, even when the first stage's best epoch is long past.
            self.second_stage_ = True
            self.misses_ = 0
        super().on_epoch_end(net, **kwargs)


class RestoreBestWeights(Callback):
    """Run ``stopping``'s end-of-training restore of the best weights from this position.

    :class:`StagedEarlyStopping` runs after every other callback (it ends training
    by raising in its epoch-end hook, and the schedule and the user's callbacks
    must see that epoch), so its own ``on_train_end`` would restore the best
    weights after the user's callbacks had seen the last ones (a
    ``TrainEndCheckpoint`` would save those). Placed before them, this callback
    restores them first, and ``stopping`` then leaves them alone.
    """

    def __init__(self, stopping):
        self.stopping = stopping

    def on_train_end(self, net, **kwargs):
        EarlyStopping.on_train_end(self.stopping, net, **kwargs)
        self.stopping.restored_ = True


def replay_plan(early_stopping, deferred, n_epochs):
    """What a refit on all the rows replays of a fit that early stopping ended.

    The refit trains as many epochs as led to the restored weights, and switches
    deferred re-weighting on at the same point of that path. After a plateau
    switch, the weights were rewound to the first stage's best epoch b, so the
    path is b unweighted epochs followed by the re-weighted epochs up to the
    overall best one.

    Parameters
    ----------
    early_stopping : StagedEarlyStopping
        After training: ``best_epoch_`` is the epoch (1-based, over the whole
        history) whose weights were restored.
    deferred : DeferredReweighting or None
        After training, or None without re-weighting.
    n_epochs : int
        Epochs the fit ran: what is replayed if no epoch ever improved the
        monitored score (a NaN hold-out loss), since the last weights were kept.

    Returns
    -------
    epochs : int
        Epochs of the refit.
    reweight_from : int or None
        1-based epoch of the refit from which the class weights apply; None: never.
    """
    best = int(early_stopping.best_epoch_) or int(n_epochs)
    switched = None if deferred is None else deferred.switched_at_
    if switched is None:
        return best, None
    rewound = getattr(early_stopping, "rewound_to_", None)
    if rewound is None:
        # Switched at its start epoch: the weights applied from epoch ``switched`` on.
        return best, (switched if best >= switched else None)
    # A plateau at the end of epoch ``switched`` rewound to ``rewound``; the
    # weights applied from the next epoch on.
    if best <= switched:
        return best, None
    return rewound + best - switched, rewound + 1
