"""A character CNN text encoder, trained end to end through the estimators' ``module``.

The question it answers (issue 10): does a representation learned from the raw
characters, with the loss, change how the top-K hinge compares with
cross-entropy, as the paper's networks (trained end to end) would suggest?

- :class:`CharVocabulary` maps texts to fixed-length rows of character codes
  (float32, so that they pass the estimators' input validation; 0 pads, 1 is a
  character seen fewer than ``min_count`` times in the training texts).
- :func:`char_cnn_module` returns a ``torch.nn.Module`` class for the estimators'
  ``module`` parameter: embedding, convolutions of widths 2-5 over the characters,
  max over positions, one hidden layer, then an affine head or, for
  ``ImbalancedTopKClassifier``, a cosine head.

The estimators instantiate the class with ``n_features`` and ``n_classes`` and
seed torch's global RNG from ``random_state`` around it, so fits are repeatable.
"""

from collections import Counter

import numpy as np
import torch
from torch import nn

from sktopk._modules import CosineLinear

PAD, UNKNOWN = 0, 1


class CharVocabulary:
    """Characters of the training texts (those seen at least ``min_count`` times)."""

    def __init__(self, max_length, min_count=2):
        self.max_length = max_length
        self.min_count = min_count

    def fit(self, texts):
        counts = Counter(char for text in texts for char in text)
        kept = sorted(char for char, n in counts.items() if n >= self.min_count)
        self.codes_ = {char: i + 2 for i, char in enumerate(kept)}
        self.size_ = len(kept) + 2
        return self

    def transform(self, texts):
        X = np.full((len(texts), self.max_length), PAD, dtype=np.float32)
        for i, text in enumerate(texts):
            codes = [self.codes_.get(char, UNKNOWN) for char in text[:self.max_length]]
            X[i, :len(codes)] = codes
        return X


def char_cnn_module(vocabulary_size, cosine_head=False, embedding_dim=64, n_filters=128,
                    widths=(2, 3, 4, 5), hidden=512):
    """A module class taking ``(n_features, n_classes)``: character codes -> class scores."""

    class CharCNN(nn.Module):
        def __init__(self, n_features, n_classes):
            super().__init__()
            self.embedding = nn.Embedding(vocabulary_size, embedding_dim, padding_idx=PAD)
            self.convolutions = nn.ModuleList(
                nn.Conv1d(embedding_dim, n_filters, width, padding=width - 1)
                for width in widths)
            self.hidden = nn.Sequential(nn.Linear(n_filters * len(widths), hidden), nn.ReLU())
            self.head = (CosineLinear(hidden, n_classes) if cosine_head
                         else nn.Linear(hidden, n_classes))

        def forward(self, x):
            codes = x.long()
            embedded = self.embedding(codes).transpose(1, 2)  # (N, embedding, length)
            # Max over positions, padding excluded: a pad column can never win.
            pads = (codes == PAD).unsqueeze(1)
            pooled = []
            for convolution in self.convolutions:
                out = torch.relu(convolution(embedded))[..., :codes.shape[1]]
                pooled.append(out.masked_fill(pads, 0.0).amax(dim=2))
            return self.head(self.hidden(torch.cat(pooled, dim=1)))

    return CharCNN
