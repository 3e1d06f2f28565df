"""Functional forms of sktopk's torch losses and operators.

Each function has a :mod:`torch.nn.Module` twin in :mod:`sktopk.losses` with the
same parameters; both call one implementation.
"""

from ._margins import class_margins

__all__ = [
    "class_margins",
]
