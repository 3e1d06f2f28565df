"""Class-dependent margins for imbalanced data (Cao et al., 2019)."""

from ._validation import check_class_counts, check_non_negative_float


def class_margins(class_counts, max_margin=0.2):
    """Margins ``m_c`` proportional to ``n_c ** (-1/4)``, the rarest class getting ``max_margin``.

    Parameters
    ----------
    class_counts : array-like of shape (n_classes,)
        Number of training samples of each class. A zero count is treated as 1, so a
        class absent from the training data gets the largest margin instead of NaN.
    max_margin : float, default=0.2
        Margin of the rarest class.

    Returns
    -------
    margins : torch.Tensor of shape (n_classes,), float64
        The margin of each class, largest for the rarest.

    Examples
    --------
    >>> from sktopk.functional import class_margins
    >>> class_margins([1, 16, 0], max_margin=0.2)
    tensor([0.2000, 0.1000, 0.2000], dtype=torch.float64)
    """
    counts = check_class_counts(class_counts)
    max_margin = check_non_negative_float(max_margin, "max_margin")
    inv_quartic = counts.pow(-0.25)
    return inv_quartic * (max_margin / inv_quartic.max())
