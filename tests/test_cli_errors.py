"""The `kernelzoo` command's failures: arguments checked before any work,
one line on stderr and a non-zero status for every failure, strict JSON, and
a quiet exit when the reader of the output goes away."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

import kernelzoo
from kernelzoo import ModelFamily, bench, cli
from kernelzoo.bench import registry as bench_registry

from _plugin_helpers import fresh_registry  # noqa: F401  (fixture)


def run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line(err: str, prefix: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------- a recording family


@pytest.fixture
def recorder(fresh_registry):
    """A family 'rec' whose training example records its calls (or does what
    the test sets in ``recorder.action``)."""

    class Recorder:
        calls: list = []
        action = None

    def train(model_name, **options):
        Recorder.calls.append((model_name, options))
        if Recorder.action is not None:
            Recorder.action()
        return {"model": model_name, "loss": float("nan"), "steps": options.get("steps")}

    kernelzoo.register_family(ModelFamily(
        name="rec", build=lambda width=2: torch.nn.Linear(width, 1), presets={"test": {}},
        example_inputs=lambda m, batch_size=2: (torch.randn(batch_size, 2),), train=train))
    return Recorder


def test_train_json_keeps_stdout_for_the_json(capsys, recorder):
    recorder.action = lambda: print("step 1: loss 0.5")
    rc, out, err = run(capsys, "train", "rec-test", "--json")
    assert rc == 0 and json.loads(out)["model"] == "rec-test"
    assert err == "step 1: loss 0.5\n"


def test_recorder_trains(capsys, recorder):
    rc, out, err = run(capsys, "train", "rec-test", "--steps", 3, "--json", "--lr", "0.5")
    assert (rc, err) == (0, "")
    assert recorder.calls == [("rec-test", {"seed": 0, "device": "cpu", "save": None,
                                            "progress": True, "verbose": False, "steps": 3,
                                            "lr": 0.5})]
    # Strict JSON: the NaN of the results is null, not the NaN token.
    assert json.loads(out, parse_constant=pytest.fail) == \
        {"model": "rec-test", "loss": None, "steps": 3}


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps must be at least 1, got 0"),
    (["--steps", "-5"], "--steps must be at least 1, got -5"),
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--threads", "0"], "--threads must be at least 1, got 0"),
    (["--threads", str(10**6)], f"--threads must be at most {os.cpu_count()} (the CPUs of "
                                f"this machine), got {10**6}"),
    (["--seed", "-1"], "--seed must be at least 0, got -1"),
    (["--seed", str(2**64)], f"--seed must be below 2**63, got {2**64}"),
    (["--lr", "inf"], "--lr must be a finite number > 0, got inf"),
    (["--lr", "1e400"], "--lr must be a finite number > 0, got inf"),
    (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    (["--lr", "0"], "--lr must be a finite number > 0, got 0.0"),
    (["--lr=-1e-3"], "--lr must be a finite number > 0, got -0.001"),
    (["--save", ""], "--save: the path to save to is empty"),
    (["--save", "/nonexistent-kz/dir/w.pt"],
     "--save: cannot save to '/nonexistent-kz/dir/w.pt': '/nonexistent-kz/dir' does not exist"),
])
def test_train_arguments_are_checked_before_training(capsys, recorder, argv, message):
    rc, out, err = run(capsys, "train", "rec-test", *argv)
    assert (rc, out) == (2, "")
    assert one_line(err, "kernelzoo train: ") == f"kernelzoo train: {message}"
    assert recorder.calls == []


def test_train_save_path_must_be_a_writable_file(capsys, recorder, tmp_path):
    rc, _, err = run(capsys, "train", "rec-test", "--save", tmp_path)
    assert rc == 2 and "it is a folder" in one_line(err, "kernelzoo train: --save: ")
    (tmp_path / "file").write_text("")
    rc, _, err = run(capsys, "train", "rec-test", "--save", tmp_path / "file" / "w.pt")
    assert rc == 2 and "is not a folder" in one_line(err, "kernelzoo train: --save: ")
    assert recorder.calls == []
    rc, _, err = run(capsys, "train", "rec-test", "--save", tmp_path / "w.pt")
    assert rc == 0 and recorder.calls[0][1]["save"] == str(tmp_path / "w.pt")


@pytest.mark.parametrize("argv, message", [
    (["--steps", "x"], "argument --steps: invalid int value: 'x'"),
    (["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
])
def test_train_usage_errors_are_one_line(capsys, recorder, argv, message):
    rc, out, err = run(capsys, "train", "rec-test", *argv)
    assert (rc, out) == (2, "")
    line = one_line(err, "kernelzoo train: error: ")
    assert message in line and line.endswith("(see 'kernelzoo train --help')")
    assert recorder.calls == []


def test_train_cuda_without_gpu(capsys, recorder):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    rc, _, err = run(capsys, "train", "rec-test", "--device", "cuda")
    assert rc == 2 and one_line(err, "kernelzoo train: --device cuda needs a visible GPU")
    assert recorder.calls == []


def raise_(exc):
    def action():
        raise exc
    return action


@pytest.mark.parametrize("action, rc, message", [
    (raise_(RuntimeError("boom\nsecond line")), 1,
     "kernelzoo train: training rec-test failed: RuntimeError: boom second line"),
    (raise_(SystemExit(4)), 1, "kernelzoo train: training rec-test failed: rec-test: the "
                               "training example raised SystemExit(4)"),
    (raise_(ValueError("batch_size too odd")), 2, "kernelzoo train: batch_size too odd"),
    (raise_(FloatingPointError("training diverged: the loss is nan at step 3")), 1,
     "kernelzoo train: rec-test: training diverged: the loss is nan at step 3"),
    (lambda: torch.empty(2**62, dtype=torch.uint8), 1,
     "kernelzoo train: rec-test: out of memory with the default batch size on cpu ("),
    (raise_(MemoryError()), 1, "kernelzoo train: rec-test: out of memory with the default "
                               "batch size on cpu (MemoryError); try a smaller --batch-size"),
])
def test_training_failures_are_one_line(capsys, recorder, action, rc, message):
    recorder.action = action
    code, out, err = run(capsys, "train", "rec-test", "--json")
    assert (code, out) == (rc, "")
    assert one_line(err, "kernelzoo train: ").startswith(message)
    assert len(recorder.calls) == 1


def test_out_of_memory_names_the_batch_size(capsys, recorder):
    recorder.action = lambda: torch.empty(2**62, dtype=torch.uint8)
    rc, _, err = run(capsys, "train", "rec-test", "--batch-size", 64)
    line = one_line(err, "kernelzoo train: rec-test: out of memory with --batch-size 64 on cpu")
    assert rc == 1 and "can't allocate memory" in line and "[enforce fail" not in line
    assert line.endswith("; try a smaller --batch-size")


def test_cuda_out_of_memory_is_one_line(capsys, recorder):
    """torch's CUDA allocator error, as it reads on a GPU (made here without one)."""
    recorder.action = raise_(torch.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of "
        "139.81 GiB of which 1.2 GiB is free.\nOf the allocated memory 130 GiB is allocated "
        "by PyTorch"))
    rc, _, err = run(capsys, "train", "rec-test", "--batch-size", 4096)
    assert rc == 1
    assert one_line(err, "kernelzoo train: ") == (
        "kernelzoo train: rec-test: out of memory with --batch-size 4096 on cpu (CUDA out of "
        "memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 139.81 GiB of "
        "which 1.2 GiB is free.); try a smaller --batch-size")


def test_ctrl_c_exits_130_quietly(capsys, recorder):
    recorder.action = lambda: signal.raise_signal(signal.SIGINT)
    rc, out, err = run(capsys, "train", "rec-test")
    assert (rc, out, err) == (130, "", "kernelzoo: interrupted\n")


def test_lr_inf_is_refused_and_a_diverging_run_fails(capsys, fresh_registry):
    """The issue's case: --lr inf trained to NaN and exited 0."""
    rc, _, err = run(capsys, "train", "espcn-test", "--lr", "inf", "--steps", 2)
    assert rc == 2 and one_line(err, "kernelzoo train: --lr must be a finite number > 0")
    rc, out, err = run(capsys, "train", "espcn-test", "--lr", "1e30", "--steps", 6,
                       "--no-progress", "--json")
    assert (rc, out) == (1, "")
    assert "training diverged: the loss is " in one_line(err, "kernelzoo train: espcn-test: ")


@pytest.mark.parametrize("model, data", [
    ("espcn-test", "kernelzoo.plugins.espcn.train.synthetic_images"),
    ("fasterrcnn-test", "kernelzoo.plugins.fasterrcnn.train.synthetic_detection_batch"),
])
def test_a_batch_that_cannot_fit_is_refused_before_training(capsys, fresh_registry,
                                                            monkeypatch, model, data):
    # Were it not refused, making the data would take the machine's memory.
    monkeypatch.setattr(data, lambda *a, **k: pytest.fail("training data was made"))
    rc, out, err = run(capsys, "train", model, "--batch-size", 10**12, "--steps", 1)
    assert (rc, out) == (2, "")
    line = one_line(err, f"kernelzoo train: a batch of {10**12} ")
    assert "GiB of memory, more than the " in line and "use a smaller batch size" in line


def test_family_training_examples_check_the_save_path_first(fresh_registry, monkeypatch):
    import kernelzoo.plugins.espcn.train as espcn_train
    import kernelzoo.plugins.fasterrcnn.train as frcnn_train

    for mod, model in ((espcn_train, "espcn-test"), (frcnn_train, "fasterrcnn-test")):
        monkeypatch.setattr(mod, "fit", lambda *a, **k: pytest.fail("trained"))
        with pytest.raises(ValueError, match="cannot save to '/nonexistent-kz/w.pt'"):
            mod.train(model, save="/nonexistent-kz/w.pt")
        with pytest.raises(ValueError, match="the path to save to is empty"):
            mod.train(model, save="")


@pytest.mark.parametrize("kw, match", [
    ({"lr": float("inf")}, "lr must be a finite number > 0, got inf"),
    ({"lr": float("nan")}, "lr must be a finite number > 0, got nan"),
    ({"steps": 2.5}, "steps must be a whole number >= 1, got 2.5"),
    ({"batch_size": True}, "batch_size must be a whole number >= 1, got True"),
])
def test_fit_checks_its_hyperparameters(fresh_registry, kw, match):
    import kernelzoo.plugins.espcn.train as espcn_train
    import kernelzoo.plugins.fasterrcnn.train as frcnn_train

    with pytest.raises(ValueError, match=match):
        espcn_train.fit("espcn-test", progress=False, **kw)
    with pytest.raises(ValueError, match=match):
        frcnn_train.fit("fasterrcnn-test", progress=False, **kw)


# --------------------------------------------------------------------------- bench


@pytest.fixture
def no_bench_run(monkeypatch):
    monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("the benchmark ran"))


@pytest.mark.parametrize("argv, message", [
    (["--repeats", "0"], "kernelzoo bench: --repeats must be at least 1, got 0"),
    (["--repeats", "-2"], "kernelzoo bench: --repeats must be at least 1, got -2"),
    (["--warmup", "-1"], "kernelzoo bench: --warmup must be at least 0, got -1"),
    (["--dtype", "float17"], "kernelzoo bench: --dtype: unknown dtype 'float17'; did you mean "
                             "float16"),
    (["--dtype", "float32", "--dtype", "Tensor"], "kernelzoo bench: --dtype: unknown dtype "
                                                  "'Tensor'"),
    (["nosuchop"], "kernelzoo bench: no benchmark cases for nosuchop; ops with cases: "),
    (["--repeats", "many"], "kernelzoo bench: error: argument --repeats: invalid int value"),
])
def test_bench_arguments_are_checked_before_running(capsys, no_bench_run, argv, message):
    rc, out, err = run(capsys, "bench", *argv)
    assert (rc, out) == (2, "")
    assert one_line(err, "kernelzoo bench: ").startswith(message)


@pytest.mark.parametrize("timing, match", [
    ({"repeats": 0}, "repeats must be at least 1, got 0"),
    ({"warmup": -1}, "warmup must be at least 0, got -1"),
    ({"min_time": float("nan")}, "min_time must be a finite number"),
    ({"min_time": -1.0}, "min_time must be a finite number"),
])
def test_bench_run_checks_timing_before_any_case(timing, match):
    with pytest.raises(ValueError, match=match):
        bench.run(progress=lambda *a: pytest.fail("a case ran"), **timing)
    with pytest.raises(TypeError, match="repeats must be an int"):
        bench.run(repeats=2.5, progress=lambda *a: pytest.fail("a case ran"))
    with pytest.raises(ValueError, match="unknown dtype 'float17'"):
        bench.run(dtypes=["float17"], progress=lambda *a: pytest.fail("a case ran"))


@pytest.fixture
def extra_case():
    """Registers cases for the duration of a test."""
    bench_registry._load_cases()
    n = len(bench_registry._CASES)

    def add(op, fn, devices=("cpu",), dtypes=("float32",)):
        bench_registry._CASES.append(bench_registry.Case(op, f"{op}_case", fn, dtypes, devices))

    yield add
    del bench_registry._CASES[n:]


def test_bench_without_cases_for_the_device_fails(capsys, extra_case):
    extra_case("gpu_only_op", lambda *a: pytest.fail("ran"), devices=("cuda",))
    rc, out, err = run(capsys, "bench", "gpu_only_op")
    assert (rc, out) == (1, "")
    one_line(err, "kernelzoo bench: no benchmark cases for --device cpu among gpu_only_op")
    rc, out, err = run(capsys, "bench", "gpu_only_op", "--json")
    assert (rc, json.loads(out)) == (1, [])


def test_bench_json_is_strict_and_a_mismatch_fails(capsys, extra_case):
    def wrong_shape(device, dtype, quick):
        x = torch.ones(2, 2)
        return bench.Bench(shape="2x2", ours=lambda: x, peer=lambda: x.view(4),
                           peer_name="reshaped")

    extra_case("shape_op", wrong_shape)
    rc, out, err = run(capsys, "bench", "shape_op", "--json")
    assert rc == 1
    (row,) = json.loads(out, parse_constant=pytest.fail)   # no Infinity token
    assert row["status"] == "mismatch" and row["max_abs_err"] is None
    one_line(err, "kernelzoo bench: 1 of 1 cases failed (mismatch)")


def test_bench_dtypes_are_deduplicated(extra_case):
    seen = []

    def record(device, dtype, quick):
        seen.append(dtype)
        bench.skip("recorded")

    extra_case("rec_op", record)
    results = bench.run(["rec_op"], dtypes=["float16", "float16", "float32"])
    assert seen == [torch.float16, torch.float32] and len(results) == 2


# --------------------------------------------------------------------------- models


@dataclasses.dataclass
class Config:
    width: int = 2

    def __post_init__(self):
        if self.width == 13:
            raise ValueError("width 13 is unlucky")


def test_models_long_reports_a_config_that_fails(capsys, fresh_registry):
    presets = {"test": Config(), "ok": Config(3)}
    kernelzoo.register_family(ModelFamily(
        name="cfg", build=lambda c: torch.nn.Linear(c.width, 1), presets=presets,
        example_inputs=lambda m, batch_size=2: (torch.randn(batch_size, m.in_features),)))
    # The preset passed its own __post_init__; resolving it again does not.
    kernelzoo.get_family("cfg").presets["test"].width = 13
    rc, out, err = run(capsys, "models", "-l", "cfg-*")
    assert rc == 1
    assert out.splitlines() == ["cfg-ok    Config(width=3)",
                                "cfg-test  (config failed: ValueError: width 13 is unlucky)"]
    one_line(err, "kernelzoo models: the config of cfg-test failed to resolve")
    rc, out, err = run(capsys, "models", "--json", "cfg-*")
    assert rc == 1 and json.loads(out) == [
        {"model": "cfg-ok", "config": {"width": 3}},
        {"model": "cfg-test", "config": None, "error": "ValueError: width 13 is unlucky"}]


# --------------------------------------------------------------------------- closed pipes


def test_main_returns_141_on_a_broken_pipe(capsys, monkeypatch, fresh_registry):
    class Closed:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Closed())
    assert cli.main(["models"]) == cli.EXIT_BROKEN_PIPE == 141


def bench_argv():
    case = next(c for c in bench.list_cases() if "cpu" in c.devices)
    return ["bench", case.op, "--quick", "--repeats", "1", "--warmup", "0", "--dtype",
            case.dtypes[0]]


CLOSED_PIPE_COMMANDS = [
    ["info"], ["info", "--json"], ["models"], ["models", "-l"], ["models", "--json"],
    ["plugins"], ["plugins", "--json"], ["--help"], ["train", "--help"], "bench",
    ["train", "espcn-test", "--steps", "1", "--no-progress"],
    ["train", "espcn-test", "--steps", "1", "--no-progress", "--json"],
]


@pytest.mark.parametrize("argv", CLOSED_PIPE_COMMANDS,
                         ids=lambda a: " ".join(a) if isinstance(a, list) else a)
def test_a_closed_pipe_ends_quietly(argv):
    """`kernelzoo info | head -1`: the reader is gone before kernelzoo writes."""
    argv = bench_argv() if argv == "bench" else argv
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNELZOO_")}
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run([sys.executable, "-m", "kernelzoo", *argv], stdout=write,
                              stderr=subprocess.PIPE, text=True, env=env, timeout=300)
    finally:
        os.close(write)
    if "--help" in argv:    # argparse itself ignores write errors while printing help
        assert proc.returncode in (0, cli.EXIT_BROKEN_PIPE), proc.stderr
    else:
        assert proc.returncode == cli.EXIT_BROKEN_PIPE, proc.stderr
    err = proc.stderr
    if argv[0] == "bench":   # its progress lines
        err = "".join(ln for ln in err.splitlines(True) if not ln.startswith("["))
    assert err == ""
