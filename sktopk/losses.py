"""Torch loss modules (``nn.Module``), usable on their own or as a skorch ``criterion``.

Each module has a functional twin in :mod:`sktopk.functional`.
"""

__all__ = []
