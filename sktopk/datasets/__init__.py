"""Real many-class datasets and helpers for top-K experiments.

The loaders read data shipped in optional packages (``pip install
'sktopk[datasets]'``); these are imported lazily, so this module imports
without them.
"""

from ._cities import load_cities
from ._label_noise import corrupt_labels
from ._languages import load_languages
from ._text_features import make_text_vectorizer

__all__ = ["corrupt_labels", "load_cities", "load_languages", "make_text_vectorizer"]
