"""Learning-rate schedules for the estimators, run by skorch's ``LRScheduler`` (per epoch)."""

import math

from skorch.callbacks import LRScheduler
from torch.optim.lr_scheduler import LambdaLR

SCHEDULES = ("constant", "cosine", "step")
# "step": divide by 10 at these fractions of the epochs after the warm-up
# (after the CIFAR recipe of Cao et al. 2019, drops at epochs 160 and 180 of 200,
# by 100 each in their code).
_STEP_AT = (0.8, 0.9)


class ScheduleFactor:
    """Multiplier of the base learning rate at a 0-based epoch (picklable, for ``LambdaLR``).

    Parameters
    ----------
    schedule : {"constant", "cosine", "step"}
    max_epochs : int
    warmup_epochs : int, default=0
        Linear warm-up from ``1 / (warmup_epochs + 1)`` of the rate; the schedule
        then runs over the remaining epochs.

    Examples
    --------
    >>> from sktopk._schedules import ScheduleFactor
    >>> f = ScheduleFactor("cosine", max_epochs=5, warmup_epochs=1)
    >>> [round(f(e), 3) for e in range(5)]
    [0.5, 1.0, 0.854, 0.5, 0.146]
    """

    def __init__(self, schedule, max_epochs, warmup_epochs=0):
        self.schedule = schedule
        self.max_epochs = max_epochs
        self.warmup_epochs = warmup_epochs

    def __call__(self, epoch):
        if epoch < self.warmup_epochs:
            return (epoch + 1) / (self.warmup_epochs + 1)
        span = max(self.max_epochs - self.warmup_epochs, 1)
        progress = min((epoch - self.warmup_epochs) / span, 1.0)
        if self.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if self.schedule == "step":
            return 0.1 ** sum(progress >= at for at in _STEP_AT)
        return 1.0


def make_lr_scheduler(schedule, max_epochs, warmup_epochs=0):
    """The skorch callback for ``schedule``, or None when nothing changes the rate."""
    if schedule == "constant" and warmup_epochs == 0:
        return None
    return LRScheduler(policy=LambdaLR, step_every="epoch",
                       lr_lambda=ScheduleFactor(schedule, max_epochs, warmup_epochs))
