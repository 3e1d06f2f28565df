"""What early stopping watches: the hold-out loss, or the micro or macro top-k accuracy."""

import torch
from skorch.callbacks import Callback

from ._class_balance import ClassWeightedLoss
from ._training import iter_scores

MONITORS = ("loss", "top_k", "macro_top_k")


class ValidationLoss(Callback):
    """Record the training loss on held-out data as ``holdout_loss`` after each epoch.

    The loss is taken without the deferred class weights, so that it stays
    comparable across the switch of :class:`~sktopk._class_balance.DeferredReweighting`.
    """

    def __init__(self, data, batch_size=4096, precision="fp32"):
        self.data = data
        self.batch_size = batch_size
        self.precision = precision

    def on_epoch_end(self, net, **kwargs):
        criterion = net.criterion_
        if isinstance(criterion, ClassWeightedLoss):
            criterion = criterion.loss
        total, start = 0.0, 0
        weight_all = self.data.sample_weight
        with torch.no_grad():
            for scores in iter_scores(net.module_, self.data, self.batch_size, self.precision):
                stop = start + len(scores)
                weight = None if weight_all is None else weight_all[start:stop]
                batch = criterion(scores, self.data.y[start:stop], weight=weight)
                share = (len(scores) if weight is None else float(weight.sum()))
                total += float(batch) * share
                start = stop
        norm = len(self.data) if weight_all is None else float(weight_all.sum())
        net.history.record("holdout_loss", total / max(norm, 1e-12))
