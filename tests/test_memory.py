"""Zeroed CPU buffers on huge pages (sktopk/_memory.py)."""

import pytest
import torch

from sktopk import _memory


@pytest.mark.parametrize("shape", [(3, 5), (1024, 1000), (512, 10000)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zeros_are_zero_even_on_reused_memory(shape, dtype):
    # Fill and free buffers of the same size first, so that the allocator may hand
    # back dirty memory: the result must still be all zeros.
    for _ in range(3):
        dirty = torch.full(shape, 7.0, dtype=dtype)
        del dirty
    out = _memory.zeros(shape, dtype, "cpu")
    assert out.shape == shape and out.dtype == dtype and out.device.type == "cpu"
    assert torch.count_nonzero(out) == 0


def test_without_madvise_it_is_torch_zeros(monkeypatch):
    monkeypatch.setattr(_memory, "_madvise", False)
    out = _memory.zeros((2048, 1024), torch.float32, "cpu")
    assert torch.count_nonzero(out) == 0


def test_other_devices_pass_through():
    out = _memory.zeros((4, 4), torch.float32, "meta")
    assert out.device.type == "meta" and out.shape == (4, 4)
