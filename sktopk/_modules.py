"""The torch networks the estimators build: an MLP with a plain or cosine head."""

import math

import torch
from torch import nn
from torch.nn import functional as F

ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "logistic": nn.Sigmoid,
    "identity": nn.Identity,
}


def _reset_linear(weight, bias, generator):
    # torch.nn.Linear's default initialisation, drawn from ``generator`` so that
    # random_state alone fixes the weights (never the global RNG).
    bound = 1.0 / math.sqrt(weight.shape[1]) if weight.shape[1] else 0.0
    with torch.no_grad():
        weight.uniform_(-bound, bound, generator=generator)
        if bias is not None:
            bias.uniform_(-bound, bound, generator=generator)


class GeneratorDropout(nn.Module):
    """Dropout whose masks come from ``generator`` rather than torch's global RNG.

    The estimators give each fit its own generator, so fits running in threads
    at the same time neither disturb each other nor the caller's global RNG.
    Without a generator (``generator=None``) it draws from the global RNG, like
    :class:`torch.nn.Dropout`. The state dict is the same as ``nn.Dropout``'s (empty).

    Parameters
    ----------
    p : float
        Probability of zeroing an entry.
    """

    def __init__(self, p):
        super().__init__()
        self.p = p
        self.generator = None

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=self.generator)
        return x * keep / (1.0 - self.p)

    def extra_repr(self):
        return f"p={self.p}"


def set_dropout_generator(module, generator):
    """Point every :class:`GeneratorDropout` of ``module`` at ``generator`` (None: global RNG)."""
    for layer in module.modules():
        if isinstance(layer, GeneratorDropout):
            layer.generator = generator


class SparseInputLinear(nn.Linear):
    """``nn.Linear`` that also takes torch sparse (CSR or COO) inputs without densifying them.

    A sparse batch is multiplied through its non-zeros only: the forward pass
    sums the weight columns of each row's non-zero features (an embedding bag),
    and the backward pass adds each non-zero's contribution to its weight column
    (:class:`_SparseRowsTimesWeight`), so a first layer on tens of thousands of
    tf-idf columns costs what the non-zeros cost, plus one dense pass over the
    weight gradient. Same parameters, state dict and gradients as ``nn.Linear``.
    """

    def forward(self, x):
        if x.layout not in (torch.sparse_csr, torch.sparse_coo):
            return super().forward(x)
        weight = self.weight.to(x.dtype)
        if x.requires_grad:
            # Gradients with respect to the input: torch's sparse matmul has them.
            out = torch.sparse.mm(x, weight.T)
        else:
            if x.layout == torch.sparse_coo:
                x = x.to_sparse_csr()
            out = _SparseRowsTimesWeight.apply(x.crow_indices(), x.col_indices(), x.values(),
                                               weight)
        return out if self.bias is None else out + self.bias.to(x.dtype)


class _SparseRowsTimesWeight(torch.autograd.Function):
    """``X @ W.T`` for a CSR matrix ``X`` given by its arrays, differentiable in ``W``.

    torch's own sparse matmul takes about 3x as long on CPU (forward and
    backward; 50,000 columns, 256 rows of 33 non-zeros, 256 outputs): its
    backward builds the gradient through a transposed sparse product. The
    forward is an embedding bag over ``W.T`` (a view: no copy); the backward
    scatters ``grad[row] * value`` into the columns of a gradient laid out like
    ``W``.
    """

    @staticmethod
    def forward(ctx, crow_indices, col_indices, values, weight):
        ctx.save_for_backward(crow_indices, col_indices, values)
        ctx.n_columns = weight.shape[1]
        return F.embedding_bag(col_indices, weight.T, crow_indices[:-1], mode="sum",
                               per_sample_weights=values, include_last_offset=False)

    @staticmethod
    def backward(ctx, grad_out):
        crow_indices, col_indices, values = ctx.saved_tensors
        rows = torch.repeat_interleave(torch.arange(len(crow_indices) - 1,
                                                    device=grad_out.device),
                                       crow_indices.diff())
        contributions = (grad_out[rows] * values.unsqueeze(1)).T
        grad_weight = grad_out.new_zeros((grad_out.shape[1], ctx.n_columns))
        grad_weight.index_add_(1, col_indices, contributions)
        return None, None, None, grad_weight


class CosineLinear(nn.Module):
    """Last layer scoring by cosine similarity between the input and each class weight.

    ``scores[i, c] = <x_i / |x_i|, w_c / |w_c|>``, in [-1, 1], with no bias: the
    normalised head of the imbalanced top-K loss and of LDAM.

    Parameters
    ----------
    in_features : int
    out_features : int
        Number of classes.

    generator : torch.Generator, optional
        Source of the initial weights (torch's global RNG when None).
    """

    def __init__(self, in_features, out_features, generator=None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.reset_parameters(generator)

    def reset_parameters(self, generator=None):
        _reset_linear(self.weight, None, generator)

    def forward(self, x):
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).T

    def extra_repr(self):
        return f"in_features={self.weight.shape[1]}, out_features={self.weight.shape[0]}"


class MLP(nn.Module):
    """Multi-layer perceptron mapping features to class scores.

    Parameters
    ----------
    n_features : int
    n_classes : int
    hidden_layer_sizes : tuple of int, default=(512,)
        Width of each hidden layer; ``()`` gives a linear model.
    activation : {"relu", "gelu", "tanh", "logistic", "identity"}, default="relu"
    dropout : float, default=0.0
        Dropout probability after each hidden activation.
    cosine_head : bool, default=False
        Score with a :class:`CosineLinear` layer instead of an affine one.
    generator : torch.Generator, optional
        Source of the initial weights.

    Examples
    --------
    >>> import torch
    >>> from sktopk._modules import MLP
    >>> net = MLP(4, 3, hidden_layer_sizes=(8,), generator=torch.Generator().manual_seed(0))
    >>> net(torch.zeros(2, 4)).shape
    torch.Size([2, 3])
    """

    def __init__(self, n_features, n_classes, hidden_layer_sizes=(512,), activation="relu",
                 dropout=0.0, cosine_head=False, generator=None):
        super().__init__()
        layers = []
        width = n_features
        for i, size in enumerate(hidden_layer_sizes):
            # skip_init: the weights are drawn below from ``generator``; nn.Linear's
            # own initialisation would read (and advance) torch's global RNG. The
            # first layer also multiplies sparse batches directly.
            linear = SparseInputLinear if i == 0 else nn.Linear
            layers += [nn.utils.skip_init(linear, width, size), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(GeneratorDropout(dropout))
            width = size
        self.body = nn.Sequential(*layers)
        head = nn.Linear if hidden_layer_sizes else SparseInputLinear
        self.head = (CosineLinear(width, n_classes, generator=generator) if cosine_head
                     else nn.utils.skip_init(head, width, n_classes))
        # Sparse batches go straight into the first layer when it is linear.
        self.accepts_sparse = bool(hidden_layer_sizes) or not cosine_head
        for layer in self.modules():
            if isinstance(layer, nn.Linear):
                _reset_linear(layer.weight, layer.bias, generator)

    def forward(self, x):
        return self.head(self.body(x))
