"""kernelzoo.nn.inference.decode_linear: the reordered-weight oneDNN product of
decoding steps against F.linear, and its cache following the weight."""

import pytest
import torch
import torch.nn.functional as F

from kernelzoo.nn.inference import clear_decode_weights, decode_linear


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("rows", [1, 3])
def test_matches_f_linear(dtype, tol, rows):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, 96, generator=g).to(dtype)
    w = torch.randn(200, 96, generator=g).to(dtype)
    b = torch.randn(200, generator=g).to(dtype)
    for bias in (None, b):
        got = decode_linear(x, w, bias)
        want = F.linear(x.double(), w.double(), None if bias is None else bias.double())
        assert got.dtype == dtype and got.shape == (rows, 200)
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * want.abs().max().item())


def test_cache_follows_the_weight():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 64, generator=g).bfloat16()
    w = torch.randn(32, 64, generator=g).bfloat16()
    first = decode_linear(x, w)
    with torch.no_grad():
        w.mul_(2)  # in place: the version counter moves, the reordered copy is rebuilt
    torch.testing.assert_close(decode_linear(x, w), F.linear(x, w), rtol=2e-2, atol=2e-2)
    assert not torch.equal(first, decode_linear(x, w))
    clear_decode_weights()
    torch.testing.assert_close(decode_linear(x, w), F.linear(x, w), rtol=2e-2, atol=2e-2)


def test_autograd_falls_back_to_f_linear():
    w = torch.randn(8, 4, requires_grad=True)
    x = torch.randn(2, 4)
    y = decode_linear(x, w)
    y.sum().backward()
    torch.testing.assert_close(w.grad, x.sum(0).expand(8, 4))
