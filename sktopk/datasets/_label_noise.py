"""Synthetic label noise for robustness experiments."""

import numbers

import numpy as np
from sklearn.utils import check_random_state

_MODES = ("uniform", "block")


def corrupt_labels(
    y,
    noise_rate,
    *,
    n_classes=None,
    mode="uniform",
    block_size=5,
    random_state=None,
    return_mask=False,
):
    """Replace a given fraction of labels by a different label, exactly.

    Exactly ``round(noise_rate * n_samples)`` samples (rounded half up) are
    drawn without replacement, and each of them gets a label different from its
    own, so the realised noise rate is ``noise_rate`` up to that rounding. The
    input is not modified.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Labels, of any type (ints, str, ...).
    noise_rate : float in [0, 1]
        Fraction of samples whose label is replaced.
    n_classes : int or None, default=None
        If None, the classes are the distinct values of ``y``. If an int, ``y``
        must hold integers in ``[0, n_classes)`` and replacements are drawn from
        all of ``range(n_classes)``, including classes absent from ``y``.
    mode : {'uniform', 'block'}, default='uniform'
        How the new label is drawn:

        - ``'uniform'``: uniformly among all the other classes.
        - ``'block'``: uniformly among the other classes of the same block of
          ``block_size`` consecutive classes (in sorted order of the classes:
          with ``n_classes`` given, the integer labels 0-4, 5-9, ...; without
          it, of the distinct values of ``y``, so a label absent from ``y``
          shifts the blocks after it). This follows the block-wise label noise of
          the top-K experiments of Garcin et al. (ICML 2022), where a noisy
          label stays within a group of similar classes (e.g. the CIFAR-100
          superclasses, when the classes are ordered by superclass), except
          that the original label is never drawn again: drawing uniformly in
          the whole block, as there, flips only ``(1 - 1 / block_size)`` of
          the selected labels (0.8 of them for blocks of 5), whereas here
          exactly ``noise_rate`` of the labels change. If the last block
          would hold a single class, it is merged into the previous one.
    block_size : int, default=5
        Size of the blocks for ``mode='block'``; at least 2.
    random_state : int, RandomState instance or None, default=None
        Controls which samples are corrupted and their new labels; pass an int
        for reproducible output.
    return_mask : bool, default=False
        If True, also return the boolean mask of the corrupted samples.

    Returns
    -------
    y_noisy : ndarray of shape (n_samples,)
        A new array with the same dtype as ``np.asarray(y)``, or a wider integer
        dtype when ``n_classes - 1`` does not fit that one.
    mask : ndarray of shape (n_samples,) of bool
        True where the label was replaced; only if ``return_mask`` is True.

    Examples
    --------
    >>> import numpy as np
    >>> from sktopk.datasets import corrupt_labels
    >>> y = np.repeat(np.arange(10), 10)
    >>> y_noisy, mask = corrupt_labels(y, 0.3, random_state=0, return_mask=True)
    >>> int(mask.sum()), float(np.mean(y_noisy != y))
    (30, 0.3)
    >>> bool(np.all(y_noisy[~mask] == y[~mask]))
    True
    >>> y_block = corrupt_labels(y, 0.5, mode="block", random_state=0)
    >>> bool(np.all(y_block // 5 == y // 5)), float(np.mean(y_block != y))
    (True, 0.5)
    >>> corrupt_labels(["cat", "dog", "cat", "owl"], 0.5, random_state=0).tolist()
    ['cat', 'dog', 'owl', 'dog']
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-dimensional, got an array of shape {y.shape}.")
    if isinstance(noise_rate, bool) or not isinstance(noise_rate, numbers.Real):
        raise TypeError(f"noise_rate must be a real number in [0, 1], got {noise_rate!r}.")
    noise_rate = float(noise_rate)
    if not 0.0 <= noise_rate <= 1.0:
        raise ValueError(f"noise_rate must be in [0, 1], got {noise_rate}.")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}.")
    if isinstance(block_size, bool) or not isinstance(block_size, numbers.Integral):
        raise TypeError(f"block_size must be an integer >= 2, got {block_size!r}.")
    if block_size < 2:
        raise ValueError(f"block_size must be an integer >= 2, got {block_size}.")

    if n_classes is None:
        classes, codes = np.unique(y, return_inverse=True)
        codes = codes.reshape(-1)
        n_classes = len(classes)
    else:
        if isinstance(n_classes, bool) or not isinstance(n_classes, numbers.Integral):
            raise TypeError(f"n_classes must be None or an integer >= 2, got {n_classes!r}.")
        n_classes = int(n_classes)
        if y.size and not np.issubdtype(y.dtype, np.integer):
            raise ValueError(
                f"with n_classes set, y must hold integers in [0, n_classes), got dtype {y.dtype}."
            )
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            raise ValueError(
                f"with n_classes={n_classes}, y must hold integers in [0, {n_classes}); "
                f"got values in [{y.min()}, {y.max()}]."
            )
        classes, codes = None, y.astype(np.intp)
    if n_classes < 2:
        raise ValueError(f"corrupt_labels needs at least 2 classes, got {n_classes}.")

    rng = check_random_state(random_state)
    n_samples = y.shape[0]
    n_flip = int(np.floor(noise_rate * n_samples + 0.5))
    flip = rng.choice(n_samples, size=n_flip, replace=False)
    old = codes[flip]
    if mode == "uniform":
        start = np.zeros_like(old)
        size = np.full_like(old, n_classes)
    else:
        n_full, remainder = divmod(n_classes, block_size)
        if remainder == 1:  # a lone last class joins the previous block
            n_blocks = n_full
            block = np.minimum(old // block_size, n_blocks - 1)
        else:
            n_blocks = n_full + (remainder > 0)
            block = old // block_size
        start = block * block_size
        size = np.where(block == n_blocks - 1, n_classes - start, block_size)
    # Draw among the size - 1 other classes of [start, start + size): skip the old one.
    new = start + rng.randint(0, size - 1, size=n_flip) if n_flip else old.copy()
    new = new + (new >= old)

    y_noisy = y.copy()
    if (classes is None and np.issubdtype(y.dtype, np.integer)
            and n_classes - 1 > np.iinfo(y.dtype).max):
        # n_classes - 1 does not fit y's dtype (uint8 labels, n_classes=300): widen,
        # or the new labels would wrap around.
        y_noisy = y_noisy.astype(np.promote_types(y.dtype, np.min_scalar_type(n_classes - 1)))
    y_noisy[flip] = new if classes is None else classes[new]
    if return_mask:
        mask = np.zeros(n_samples, dtype=bool)
        mask[flip] = True
        return y_noisy, mask
    return y_noisy
