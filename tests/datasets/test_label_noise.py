"""Tests for sktopk.datasets.corrupt_labels."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sktopk.datasets import corrupt_labels


def _expected_flips(noise_rate, n):
    return int(np.floor(noise_rate * n + 0.5))


@pytest.mark.parametrize("mode", ["uniform", "block"])
@pytest.mark.parametrize("noise_rate", [0.0, 0.1, 0.25, 0.5, 0.8, 1.0])
def test_exact_rate_never_same_label(noise_rate, mode):
    y = np.repeat(np.arange(20), 17)
    y_noisy, mask = corrupt_labels(y, noise_rate, mode=mode, random_state=0, return_mask=True)
    assert mask.dtype == bool and mask.shape == y.shape
    assert mask.sum() == _expected_flips(noise_rate, y.size)
    assert np.all(y_noisy[mask] != y[mask])
    assert np.all(y_noisy[~mask] == y[~mask])
    assert np.mean(y_noisy != y) == pytest.approx(mask.sum() / y.size)
    assert y_noisy.dtype == y.dtype


def test_rounding_is_half_up():
    y = np.arange(10) % 3
    assert corrupt_labels(y, 0.25, random_state=0, return_mask=True)[1].sum() == 3  # 2.5
    assert corrupt_labels(y, 0.3, random_state=0, return_mask=True)[1].sum() == 3
    assert corrupt_labels(y, 0.04, random_state=0, return_mask=True)[1].sum() == 0


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 6), min_size=2, max_size=60).filter(lambda v: len(set(v)) > 1),
    noise_rate=st.floats(0, 1),
    seed=st.integers(0, 2**16),
    mode=st.sampled_from(["uniform", "block"]),
    block_size=st.integers(2, 4),
)
def test_properties(labels, noise_rate, seed, mode, block_size):
    y = np.array(labels)
    y_noisy, mask = corrupt_labels(
        y, noise_rate, mode=mode, block_size=block_size, random_state=seed, return_mask=True
    )
    assert mask.sum() == _expected_flips(noise_rate, y.size)
    assert np.all(y_noisy[mask] != y[mask]) and np.all(y_noisy[~mask] == y[~mask])
    assert set(y_noisy.tolist()) <= set(y.tolist())  # drawn among the classes of y


def test_reproducible_and_input_untouched():
    y = np.repeat(np.arange(8), 25)
    before = y.copy()
    a = corrupt_labels(y, 0.3, random_state=42)
    b = corrupt_labels(y, 0.3, random_state=np.random.RandomState(42))
    c = corrupt_labels(y, 0.3, random_state=43)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(y, before)
    assert a is not y


def test_string_and_list_labels():
    y = ["cat", "dog", "owl", "cat", "dog", "owl"] * 10
    y_noisy, mask = corrupt_labels(y, 0.5, random_state=0, return_mask=True)
    assert y_noisy.dtype.kind == "U"
    y_arr = np.asarray(y)
    assert mask.sum() == 30 and np.all(y_noisy[mask] != y_arr[mask])
    assert set(y_noisy.tolist()) == {"cat", "dog", "owl"}
    y_obj = np.array(y, dtype=object)
    assert corrupt_labels(y_obj, 0.5, random_state=0).dtype == object


def test_uniform_among_other_classes():
    y = np.zeros(30000, dtype=int)
    y[:3] = [1, 2, 3]  # 4 classes
    y_noisy, mask = corrupt_labels(y, 1.0, random_state=0, return_mask=True)
    new = y_noisy[3:]
    freq = np.bincount(new, minlength=4) / new.size
    assert freq[0] == 0
    np.testing.assert_allclose(freq[1:], 1 / 3, atol=0.015)


def test_n_classes_draws_absent_classes():
    y = np.zeros(3000, dtype=int)
    y[::2] = 1  # only classes 0 and 1 present
    y_noisy = corrupt_labels(y, 1.0, n_classes=5, random_state=0)
    assert set(np.unique(y_noisy).tolist()) == {0, 1, 2, 3, 4}
    assert np.all(y_noisy != y)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_n_classes_beyond_the_dtype_widens_it(dtype):
    # Codes up to 299 do not fit 8 bits: they must not wrap around.
    y = np.zeros(2000, dtype=dtype)
    y_noisy, mask = corrupt_labels(y, 1.0, n_classes=300, random_state=0, return_mask=True)
    assert np.all(y_noisy != y) and mask.all()
    assert y_noisy.min() >= 1 and y_noisy.max() <= 299 and y_noisy.max() > 255
    assert corrupt_labels(y, 1.0, n_classes=100, random_state=0).dtype == dtype


def test_block_mode_stays_in_block():
    y = np.repeat(np.arange(20), 50)
    y_noisy = corrupt_labels(y, 1.0, mode="block", random_state=0)
    assert np.all(y_noisy != y) and np.all(y_noisy // 5 == y // 5)
    # all 4 other members of a block are used
    assert set(y_noisy[y == 7].tolist()) == {5, 6, 8, 9}


def test_block_mode_remainders():
    # 11 classes: the lone class 10 joins the block 5..9
    y = np.repeat(np.arange(11), 40)
    y_noisy = corrupt_labels(y, 1.0, mode="block", random_state=0)
    assert set(y_noisy[y == 10].tolist()) == {5, 6, 7, 8, 9}
    assert set(y_noisy[y == 6].tolist()) == {5, 7, 8, 9, 10}
    assert np.all(y_noisy[y < 5] < 5)
    # 12 classes: a last block {10, 11}
    y = np.repeat(np.arange(12), 40)
    y_noisy = corrupt_labels(y, 1.0, mode="block", random_state=0)
    assert np.all(y_noisy[y == 10] == 11) and np.all(y_noisy[y == 11] == 10)
    # fewer classes than block_size: one block
    y = np.repeat(np.arange(3), 40)
    y_noisy = corrupt_labels(y, 1.0, mode="block", random_state=0)
    assert np.all(y_noisy != y) and set(y_noisy.tolist()) == {0, 1, 2}


def test_block_mode_sorted_string_labels():
    classes = [f"c{i:02d}" for i in range(10)]
    y = np.repeat(classes, 20)
    y_noisy = corrupt_labels(y, 1.0, mode="block", block_size=5, random_state=0)
    first = np.isin(y, classes[:5])
    assert np.all(np.isin(y_noisy[first], classes[:5]))
    assert np.all(np.isin(y_noisy[~first], classes[5:]))


def test_zero_and_empty():
    y = np.array([0, 1, 1, 0])
    np.testing.assert_array_equal(corrupt_labels(y, 0.0, random_state=0), y)
    empty = corrupt_labels(np.array([], dtype=int), 0.5, n_classes=3, random_state=0)
    assert empty.shape == (0,)


@pytest.mark.parametrize(
    "y, kwargs, error, match",
    [
        ([0, 1], {"noise_rate": -0.1}, ValueError, "noise_rate"),
        ([0, 1], {"noise_rate": 1.5}, ValueError, "noise_rate"),
        ([0, 1], {"noise_rate": float("nan")}, ValueError, "noise_rate"),
        ([0, 1], {"noise_rate": "0.1"}, TypeError, "noise_rate"),
        ([0, 1], {"noise_rate": True}, TypeError, "noise_rate"),
        ([[0, 1]], {"noise_rate": 0.1}, ValueError, "1-dimensional"),
        ([1, 1, 1], {"noise_rate": 0.1}, ValueError, "at least 2 classes"),
        ([0, 0], {"noise_rate": 0.1, "n_classes": 1}, ValueError, "at least 2 classes"),
        ([0, 5], {"noise_rate": 0.1, "n_classes": 3}, ValueError, r"\[0, 3\)"),
        ([0, -1], {"noise_rate": 0.1, "n_classes": 3}, ValueError, r"\[0, 3\)"),
        ([0.0, 1.0], {"noise_rate": 0.1, "n_classes": 3}, ValueError, "integers"),
        (["a", "b"], {"noise_rate": 0.1, "n_classes": 2}, ValueError, "integers"),
        ([0, 1], {"noise_rate": 0.1, "n_classes": 2.0}, TypeError, "n_classes"),
        ([0, 1], {"noise_rate": 0.1, "mode": "pairs"}, ValueError, "mode"),
        ([0, 1], {"noise_rate": 0.1, "mode": "block", "block_size": 1}, ValueError, "block"),
        ([0, 1], {"noise_rate": 0.1, "block_size": 2.5}, TypeError, "block_size"),
    ],
)
def test_invalid_input(y, kwargs, error, match):
    with pytest.raises(error, match=match):
        corrupt_labels(y, **kwargs)
