import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sktopk import ImbalancedTopKClassifier, TopKClassifier
from sktopk._modules import MLP, SparseInputLinear
from sktopk._training import TensorData, csr_to_torch, iter_scores, pad_rows


def _random_csr(n, d, density, seed):
    return sp.random(n, d, density=density, format="csr", dtype=np.float32, random_state=seed)


@pytest.mark.parametrize("layout", ["csr", "coo"])
def test_sparse_input_linear_matches_dense_forward_and_backward(layout):
    X = _random_csr(50, 300, 0.02, 0)
    x_sparse = csr_to_torch(X) if layout == "csr" else csr_to_torch(X).to_sparse_coo()
    x_dense = torch.from_numpy(X.toarray())
    layer = SparseInputLinear(300, 7)
    upstream = torch.randn(50, 7, generator=torch.Generator().manual_seed(1))
    out_sparse = layer(x_sparse)
    (out_sparse * upstream).sum().backward()
    grads_sparse = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    out_dense = layer(x_dense)
    (out_dense * upstream).sum().backward()
    torch.testing.assert_close(out_sparse, out_dense, rtol=1e-5, atol=1e-6)
    for got, expected in zip(grads_sparse, [p.grad for p in layer.parameters()], strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_sparse_input_linear_handles_empty_rows_and_shared_columns(dtype, bias):
    # Empty rows (a name with no known n-gram), a column used by most rows (its
    # gradient sums many contributions), a batch of one row; against float64 dense.
    rng = np.random.default_rng(3)
    X = _random_csr(40, 120, 0.05, 2).tolil()
    X[[0, 7, 39], :] = 0
    X[1:30, 5] = rng.random((29, 1)) + 0.5
    X = X.tocsr()
    layer = SparseInputLinear(120, 9, bias=bias).to(dtype)
    upstream = torch.randn(40, 9, generator=torch.Generator().manual_seed(4), dtype=dtype)
    reference = SparseInputLinear(120, 9, bias=bias).double()
    reference.load_state_dict(layer.state_dict())
    for rows in (slice(0, 40), slice(7, 8)):
        layer.zero_grad()
        reference.zero_grad()
        x = csr_to_torch(X[rows]).to(dtype)
        out = layer(x)
        (out * upstream[rows]).sum().backward()
        expected = reference(torch.from_numpy(X[rows].toarray()).double())
        (expected * upstream[rows].double()).sum().backward()
        tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {}
        torch.testing.assert_close(out.double(), expected.detach(), **tol)
        for got, want in zip(layer.parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(got.grad.double(), want.grad, **tol)
    # An empty row scores the bias alone.
    np.testing.assert_array_equal(layer(csr_to_torch(X[[0]]).to(dtype)).detach().numpy(),
                                  (layer.bias if bias else torch.zeros(9, dtype=dtype))
                                  .detach().numpy()[None])


def test_csr_to_torch_round_trips_and_tensor_data_hands_out_sparse_batches():
    X = _random_csr(40, 25, 0.1, 2)
    np.testing.assert_array_equal(csr_to_torch(X).to_dense().numpy(), X.toarray())
    data = TensorData(X, np.zeros(40, dtype=int), sparse_batches=True)
    batch = data.features(torch.tensor([3, 1, 7]))
    assert batch.layout == torch.sparse_csr
    np.testing.assert_array_equal(batch.to_dense().numpy(), X[[3, 1, 7]].toarray())
    assert data.subset(np.array([0, 5])).features(slice(0, 2)).layout == torch.sparse_csr
    assert TensorData(X).features(slice(0, 2)).layout == torch.strided


@pytest.mark.parametrize("sparse_batches", [False, True])
def test_fixed_row_batches_pad_and_drop_the_padding(sparse_batches):
    # Scoring in batches of one fixed shape (as on a GPU): 23 rows in batches of
    # 8 give the scores of one batch of 23, and the padding rows are zero.
    X = _random_csr(23, 40, 0.2, 4)
    assert pad_rows(csr_to_torch(X[:3]), 8).to_dense()[3:].abs().sum() == 0
    np.testing.assert_array_equal(pad_rows(csr_to_torch(X[:3]), 8).to_dense()[:3].numpy(),
                                  X[:3].toarray())
    net = MLP(40, 5, (16,), generator=torch.Generator().manual_seed(0))
    data = TensorData(X, sparse_batches=sparse_batches)
    expected = torch.cat(list(iter_scores(net, data, 23)))
    seen = []
    net.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    fixed = list(iter_scores(net, data, 8, fixed_rows=True))
    assert seen == [8, 8, 8]
    assert [batch.shape[0] for batch in fixed] == [8, 8, 7]
    torch.testing.assert_close(torch.cat(fixed), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("hidden", "cosine"), [((16,), False), ((16, 8), True), ((), False)])
def test_mlp_scores_sparse_batches_like_dense_ones(hidden, cosine):
    X = _random_csr(30, 200, 0.05, 3)
    net = MLP(200, 6, hidden, cosine_head=cosine, generator=torch.Generator().manual_seed(0))
    assert net.accepts_sparse
    torch.testing.assert_close(net(csr_to_torch(X)), net(torch.from_numpy(X.toarray())),
                               rtol=1e-5, atol=1e-6)
    assert not MLP(200, 6, (), cosine_head=True).accepts_sparse


@pytest.mark.parametrize(("Estimator", "loss"), [(TopKClassifier, "cross_entropy"),
                                             (ImbalancedTopKClassifier, "ldam")])
def test_estimators_train_on_sparse_batches_like_on_dense_arrays(Estimator, loss):
    # A loss without discrete choices, no early stopping and plain SGD: the two
    # first-layer paths round differently (~1e-7), and a top-K hinge, which picks
    # a winning column per draw, turns a rare near-tie into a different gradient
    # that the fit then carries everywhere; Adam does the same with a gradient
    # of rounding size where the other path has an exact zero (a dead ReLU), as
    # it divides by the gradient's own scale: a full step against none. The
    # hinge's own sparse fits are in test_classifier. Here everything must agree.
    rng = np.random.default_rng(0)
    X = _random_csr(300, 2000, 0.01, 4)
    y = rng.integers(0, 6, 300)
    params = dict(k=2, loss=loss, hidden_layer_sizes=(16,), max_epochs=4, early_stopping=False,
                  optimizer="sgd", learning_rate=0.5, device="cpu", random_state=0)
    sparse_fit = Estimator(**params).fit(X, y)
    assert sparse_fit._sparse_batches()
    dense_fit = Estimator(**params).fit(X.toarray(), y)
    np.testing.assert_allclose(sparse_fit.decision_function(X),
                               dense_fit.decision_function(X.toarray()), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sparse_input_linear_on_cuda_matches_the_cpu_layer():
    # The embedding bag and the column scatter on the GPU, against the same layer
    # on the CPU (itself checked against dense above), forward and weight gradient.
    X = _random_csr(300, 5000, 0.005, 5)
    layer = SparseInputLinear(5000, 32)
    upstream = torch.randn(300, 32, generator=torch.Generator().manual_seed(2))
    results = []
    for device in ("cpu", "cuda"):
        copy = SparseInputLinear(5000, 32).to(device)
        copy.load_state_dict(layer.state_dict())
        out = copy(csr_to_torch(X).to(device))
        (out * upstream.to(device)).sum().backward()
        results.append([out.detach().cpu(), *(p.grad.cpu() for p in copy.parameters())])
    for got, expected in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fused_adam_is_probed_on_cuda():
    from sktopk._classifier import _fused_adam_works

    assert _fused_adam_works("cuda")
