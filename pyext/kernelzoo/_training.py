"""Checks shared by the families' training examples and ``kernelzoo train``:
everything that can be known to fail is found before training starts, and
what fails during training says so in one line."""

from __future__ import annotations

import math
import numbers
import os
import re
import time

__all__ = ["check_save_path", "check_hyperparameters", "check_batch_fits", "check_loss",
           "out_of_memory_message", "fit_and_save", "cosine_schedule", "train_steps"]


def check_save_path(path) -> str:
    """Raises ``ValueError`` unless a file can be written at ``path`` (checked
    before training, so that a typo does not cost a whole run). Returns the
    path as a string."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"the path to save to must be a string, got {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the path to save to is empty")
    if os.path.isdir(text):
        raise ValueError(f"cannot save to {text!r}: it is a folder (give a file name, e.g. "
                         f"{os.path.join(text, 'weights.pt')!r})")
    parent = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(parent):
        what = "is not a folder" if os.path.exists(parent) else "does not exist"
        raise ValueError(f"cannot save to {text!r}: {parent!r} {what}")
    if os.path.exists(text):
        if not os.access(text, os.W_OK):
            raise ValueError(f"cannot save to {text!r}: the file is not writable")
    elif not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"cannot save to {text!r}: the folder {parent!r} is not writable")
    return text


def check_hyperparameters(**values) -> None:
    """``lr`` must be a finite number > 0, every other value (``steps``,
    ``batch_size``, ...) an int >= 1; ``ValueError`` naming the first that is not."""
    for name, value in values.items():
        if isinstance(value, bool):
            ok = False
        elif name == "lr":
            ok = isinstance(value, numbers.Real) and math.isfinite(value) and value > 0
        else:
            ok = isinstance(value, numbers.Integral) and value >= 1
        if not ok:
            kind = "a finite number > 0" if name == "lr" else "a whole number >= 1"
            raise ValueError(f"{name} must be {kind}, got {value!r}")


def _available_memory(device) -> int | None:
    """Bytes that can still be allocated on ``device``, or None if unknown."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(dev)[0])
        except Exception:
            return None
    if dev.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_batch_fits(nbytes: int, what: str, device) -> None:
    """Raises ``ValueError`` when ``nbytes``, a lower bound of what one
    training step allocates, exceeds the memory available on ``device``: such
    a batch cannot be allocated, and trying can take the machine's memory
    before the allocator refuses."""
    available = _available_memory(device)
    if available is not None and nbytes > available:
        raise ValueError(f"{what} needs at least {_gib(nbytes)} of memory, more than the "
                         f"{_gib(available)} available on {device}; use a smaller batch size")


def check_loss(loss: float, step: int, lr: float) -> None:
    """Stops a run whose loss is no longer finite (it would go on to the end
    and report NaNs)."""
    if not math.isfinite(loss):
        raise FloatingPointError(f"training diverged: the loss is {loss} at step {step}; "
                                 f"try a smaller learning rate (lr was {lr:g})")


_ENFORCE = re.compile(r"^\[enforce fail at [^\]]*\]\s*(err == 0\.\s*)?")


def out_of_memory_message(e: BaseException) -> str | None:
    """A one-line description of ``e`` if it is an allocation failure (the
    CPU or CUDA allocator, or ``MemoryError``), else None."""
    import torch

    if isinstance(e, MemoryError):
        return f"MemoryError: {e}" if str(e) else "MemoryError"
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError",
                                                               None)
    text = str(e)
    if (oom is not None and isinstance(e, oom)) or (
            isinstance(e, RuntimeError) and ("can't allocate memory" in text
                                              or "out of memory" in text.lower())):
        lines = [ln.strip() for ln in _ENFORCE.sub("", text.strip()).splitlines() if ln.strip()]
        return lines[0] if lines else type(e).__name__
    return None


def fit_and_save(fit, model_name: str, save, options: dict):
    """``fit(model_name, **options) -> (model, result)``, the ``save`` path
    checked before training and the trained state dict written there after
    (``result["saved"]``): the first half of every family's ``train``."""
    import torch

    if save is not None:
        save = check_save_path(save)
    model, result = fit(model_name, **options)
    if save is not None:
        torch.save(model.state_dict(), save)
        result["saved"] = save
    return model, result


def cosine_schedule(opt, steps: int, warmup: int = 0):
    """The families' learning-rate schedule: a linear warm-up over ``warmup``
    steps (none for 0 or 1), then a cosine decay that reaches zero at ``steps``."""
    import torch

    w = max(warmup, 1)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / w) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))


def train_steps(steps: int, step_loss, opt, sched, lr: float, label: str, *,
                progress: bool = True, clip=None, fmt: str = ".4f"):
    """The families' training loop: for each step, ``loss = step_loss(step)``,
    backward, the gradient norm of the parameters ``clip`` (a list, or None)
    clipped to 1, an optimizer and a schedule step, and a stop with
    :func:`check_loss` if the loss is not finite; a progress bar labelled
    ``label``. Returns (the losses, the seconds taken)."""
    import torch

    from ._progress import Progress

    bar = Progress(steps, label, enabled=progress)
    losses = []
    t0 = time.perf_counter()
    for step in range(steps):
        loss = step_loss(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(clip, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        check_loss(losses[-1], step + 1, lr)
        bar.update(step + 1, f"loss {losses[-1]:{fmt}}")
    bar.close()
    return losses, time.perf_counter() - t0
