"""An exponential moving average of the weights, scored and kept in place of the last step."""

import math

import torch
from skorch.callbacks import Callback


def averaging_decay(horizon_epochs, batches_per_epoch):
    """Per-step decay of an average whose weights have a mean age of ``horizon_epochs``.

    An exponential average with decay ``d`` gives a step ``j`` steps back the
    weight ``(1 - d) d^j``: mean age ``d / (1 - d)`` steps, so ``d = 1 - 1 / (1 + a)``
    for a mean age of ``a = horizon_epochs * batches_per_epoch`` steps.
    """
    age = horizon_epochs * batches_per_epoch
    return 1.0 - 1.0 / (1.0 + age)


class WeightAveraging(Callback):
    """Keep an exponential moving average (EMA) of the network's weights during a fit.

    After every training step the average moves towards the new weights, with
    the decay of :func:`averaging_decay` (early steps use the smaller
    ``(1 + t) / (10 + t)``, so that the random initial weights fade quickly).
    At the end of each epoch the averaged weights are put in the network, so
    the hold-out monitor, early stopping's checkpoint and the fitted model all
    see them; the raw weights come back at the start of the next epoch, and
    training goes on from them. Buffers (e.g. batch-norm statistics) are not
    averaged: they are the last step's.

    If another callback loads other weights between two epochs (early stopping
    restoring its best epoch when deferred re-weighting switches on), training
    goes on from those weights and the average restarts there.

    Parameters
    ----------
    horizon_epochs : float
        Mean age of the averaged weights, in epochs.
    batches_per_epoch : int
        Training steps per epoch.
    """

    def __init__(self, horizon_epochs, batches_per_epoch):
        self.horizon_epochs = horizon_epochs
        self.batches_per_epoch = batches_per_epoch

    def on_train_begin(self, net, **kwargs):
        self.decay_ = averaging_decay(self.horizon_epochs, self.batches_per_epoch)
        self.params_ = [param for param in net.module_.parameters() if param.requires_grad]
        self.average_ = [param.detach().clone() for param in self.params_]
        self.raw_ = None
        self.steps_ = 0

    def on_batch_end(self, net, training=False, **kwargs):
        if not training:
            return
        self.steps_ += 1
        decay = min(self.decay_, (1.0 + self.steps_) / (10.0 + self.steps_))
        with torch.no_grad():
            for average, param in zip(self.average_, self.params_, strict=True):
                average.lerp_(param, 1.0 - decay)

    def on_epoch_end(self, net, **kwargs):
        with torch.no_grad():
            self.raw_ = [param.detach().clone() for param in self.params_]
            for param, average in zip(self.params_, self.average_, strict=True):
                param.copy_(average)

    def on_epoch_begin(self, net, **kwargs):
        if self.raw_ is None:
            return
        with torch.no_grad():
            replaced = any(not torch.equal(param, average)
                           for param, average in zip(self.params_, self.average_, strict=True))
            pairs = zip(self.average_, self.params_, strict=True) if replaced else zip(
                self.params_, self.raw_, strict=True)
            for target, source in pairs:
                target.copy_(source)
        self.raw_ = None

    def on_train_end(self, net, **kwargs):
        # The network keeps the averaged weights of its last (or best) epoch.
        self.raw_ = None


def batches_per_epoch(n_rows, batch_size):
    """Training steps of one epoch over ``n_rows`` rows."""
    return max(1, math.ceil(n_rows / batch_size))
