"""pixel_shuffle / pixel_unshuffle: sub-pixel rearrangement (Shi et al., 2016)."""

import torch
from torch import Tensor
from torch._prims_common import (make_channels_last_strides_for, make_contiguous_strides_for,
                                 suggest_memory_format)
from torch.overrides import handle_torch_function, has_torch_function_unary

from ._args import int_value, is_integer, type_name

__all__ = ["pixel_shuffle", "pixel_unshuffle"]

_MAX_FACTOR = 2 ** 31  # the largest factor the kernels take (its square fits int64)


class FactorRangeError(RuntimeError, ValueError):
    """A factor the kernels cannot take. A RuntimeError, as the op's own check
    raises, and a ValueError, as torch raises for factors whose square (or the
    factor itself) overflows int64."""


def _factor_message(name: str, factor_name: str, factor) -> str:
    if factor > 0:
        return f"{name}: {factor_name}={factor} is too large"
    return f"{name} expects a positive {factor_name}, but got {factor}"


def _check_factor(name: str, factor_name: str, factor) -> None:
    """Eager checks of what the dispatcher would refuse with an unhelpful message
    (or take where torch does not): bool and non-integer factors raise TypeError
    as torch's functions do; factors beyond what the kernels take raise
    FactorRangeError."""
    if not is_integer(factor):
        raise TypeError(f"{name}: {factor_name} must be an int, but got {type_name(factor)}")
    factor = int_value(factor)
    if factor > _MAX_FACTOR or factor < -2 ** 63:
        raise FactorRangeError(_factor_message(name, factor_name, factor))


def pixel_shuffle(input: Tensor, upscale_factor: int) -> Tensor:
    r"""Rearranges ``(*, C \cdot r^2, H, W)`` into ``(*, C, H \cdot r, W \cdot r)``.

    Same semantics as :func:`torch.nn.functional.pixel_shuffle`:
    ``out[..., c, h*r + i, w*r + j] = input[..., c*r*r + i*r + j, h, w]``.
    Works for every dtype (it only moves elements), any strides, and empty
    tensors; a 4-d ``channels_last`` input gives a ``channels_last`` output.
    Differentiable: the gradient is :func:`pixel_unshuffle` of the output
    gradient, itself differentiable.

    Args:
        input: tensor with at least 3 dimensions whose ``size(-3)`` is divisible
            by ``upscale_factor ** 2``.
        upscale_factor: positive factor ``r`` (an int; not a bool).

    Scriptable (``torch.jit.script``), traceable by ``torch.fx`` (one call node)
    and by ``torch.export``. A non-integer factor raises TypeError, one too
    large for the kernels (above 2^31) a RuntimeError that is also the
    ValueError torch raises.
    """
    if not torch.jit.is_scripting():
        if has_torch_function_unary(input):
            return handle_torch_function(pixel_shuffle, (input,), input, upscale_factor)
        _check_factor("pixel_shuffle", "upscale_factor", upscale_factor)
        return torch.ops.kernelzoo.pixel_shuffle.default(input, upscale_factor)
    # TorchScript knows ops by name only (no .default)
    return torch.ops.kernelzoo.pixel_shuffle(input, upscale_factor)


def pixel_unshuffle(input: Tensor, downscale_factor: int) -> Tensor:
    r"""Rearranges ``(*, C, H \cdot r, W \cdot r)`` into ``(*, C \cdot r^2, H, W)``.

    Same semantics as :func:`torch.nn.functional.pixel_unshuffle`, the inverse of
    :func:`pixel_shuffle`. ``size(-2)`` and ``size(-1)`` must be divisible by
    ``downscale_factor``. Dtypes, layouts and differentiability as
    :func:`pixel_shuffle`, and so are scripting, tracing and the errors.
    """
    if not torch.jit.is_scripting():
        if has_torch_function_unary(input):
            return handle_torch_function(pixel_unshuffle, (input,), input, downscale_factor)
        _check_factor("pixel_unshuffle", "downscale_factor", downscale_factor)
        return torch.ops.kernelzoo.pixel_unshuffle.default(input, downscale_factor)
    # TorchScript knows ops by name only (no .default)
    return torch.ops.kernelzoo.pixel_unshuffle(input, downscale_factor)


def _empty_output(input: Tensor, size) -> Tensor:
    # Mirrors pixel_shuffle.cpp: channels_last only for 4-d channels_last-like
    # inputs. Strides are built explicitly: `.contiguous(memory_format=...)` would
    # keep contiguous strides where both layouts coincide (size-1 channels).
    if input.dim() == 4 and suggest_memory_format(input) == torch.channels_last:
        strides = make_channels_last_strides_for(size)
    else:
        strides = make_contiguous_strides_for(size)
    return input.new_empty_strided(size, strides)


def _check_common(name: str, input: Tensor, factor: int, factor_name: str) -> None:
    torch._check(input.dim() >= 3, lambda: (
        f"{name} expects input to have at least 3 dimensions, but got input with "
        f"{input.dim()} dimension(s)"))
    torch._check(factor > 0, lambda: _factor_message(name, factor_name, factor))
    torch._check(factor <= _MAX_FACTOR, lambda: _factor_message(name, factor_name, factor))


@torch.library.register_fake("kernelzoo::pixel_shuffle")
def _pixel_shuffle_fake(input: Tensor, upscale_factor: int) -> Tensor:
    r = upscale_factor
    _check_common("pixel_shuffle", input, r, "upscale_factor")
    c, h, w = input.shape[-3:]
    torch._check(c % (r * r) == 0, lambda: (
        "pixel_shuffle expects its input's 'channel' dimension to be divisible by the square "
        f"of upscale_factor, but input.size(-3)={c} is not divisible by {r * r}"))
    size = (*input.shape[:-3], c // (r * r), h * r, w * r)
    return _empty_output(input, size)


@torch.library.register_fake("kernelzoo::pixel_unshuffle")
def _pixel_unshuffle_fake(input: Tensor, downscale_factor: int) -> Tensor:
    r = downscale_factor
    _check_common("pixel_unshuffle", input, r, "downscale_factor")
    c, h, w = input.shape[-3:]
    torch._check(h % r == 0, lambda: (
        "pixel_unshuffle expects height to be divisible by downscale_factor, but "
        f"input.size(-2)={h} is not divisible by {r}"))
    torch._check(w % r == 0, lambda: (
        "pixel_unshuffle expects width to be divisible by downscale_factor, but "
        f"input.size(-1)={w} is not divisible by {r}"))
    size = (*input.shape[:-3], c * r * r, h // r, w // r)
    return _empty_output(input, size)


# Each op's gradient is the other op, so gradients of any order come for free.
def _setup_context(ctx, inputs, output):
    ctx.factor = inputs[1]


def _pixel_shuffle_backward(ctx, grad):
    return pixel_unshuffle(grad, ctx.factor), None


def _pixel_unshuffle_backward(ctx, grad):
    return pixel_shuffle(grad, ctx.factor), None


torch.library.register_autograd(
    "kernelzoo::pixel_shuffle", _pixel_shuffle_backward, setup_context=_setup_context)
torch.library.register_autograd(
    "kernelzoo::pixel_unshuffle", _pixel_unshuffle_backward, setup_context=_setup_context)
