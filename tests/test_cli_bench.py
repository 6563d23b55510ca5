"""The `kernelzoo` command (info, bench) and the benchmark registry."""

import json
import subprocess
import sys

import pytest
import torch

import kernelzoo
from kernelzoo import bench
from kernelzoo.bench import registry


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "kernelzoo", *args], capture_output=True,
                          text=True)


def test_info_json_reports_build_and_dispatcher_backends():
    p = run_cli("info", "--json")
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["torch"] == torch.__version__
    assert info["build"] == kernelzoo.build_info()
    assert info["build"]["torch"] == torch.__version__
    ps = info["ops"]["pixel_shuffle"]
    assert ps["CPU"] == "kernel" and ps["Meta"] == "kernel" and ps["Autograd"] == "kernel"
    assert ps["CUDA"] == ("kernel" if kernelzoo.build_info()["cuda"] else "stub")
    assert "pixel_unshuffle" in info["ops"]


def test_info_text():
    p = run_cli("info")
    assert p.returncode == 0, p.stderr
    assert f"kernelzoo {kernelzoo.__version__}" in p.stdout
    assert "pixel_shuffle" in p.stdout and "CPU" in p.stdout
    assert "CUDA kernels: " + ("yes" if kernelzoo.build_info()["cuda"] else "no") in p.stdout


def test_bench_cases_agree_and_are_timed():
    results = bench.run(["pixel_shuffle", "pixel_unshuffle"], quick=True, repeats=1, warmup=0,
                        min_time=0.0)
    assert {r.case for r in results} == {
        "pixel_shuffle_contiguous", "pixel_shuffle_channels_last",
        "pixel_unshuffle_contiguous", "pixel_unshuffle_channels_last"}
    for r in results:
        assert r.status == "ok", r.message
        assert r.agree is True and r.peer == "torch"
        assert r.ours_ms > 0 and r.peer_ms > 0 and r.gbps > 0
        assert set(r.baselines) == {"copy"}


def test_bench_reports_disagreement():
    def broken(device, dtype, quick):
        x = torch.arange(16.0).reshape(1, 4, 2, 2)
        return bench.Bench(shape="1x4x2x2", ours=lambda: x + 1, peer=lambda: x.clone(),
                           peer_name="identity")

    registry._load_cases()
    registry._CASES.append(registry.Case("broken_op", "broken", broken, ("float32",), ("cpu",)))
    try:
        (r,) = bench.run(["broken_op"], quick=True, repeats=1, warmup=0)
    finally:
        registry._CASES.pop()
    assert r.status == "mismatch"
    assert r.agree is False
    assert r.max_abs_err == 1.0
    assert r.ours_ms is None  # never timed


def test_bench_unknown_op_is_an_error():
    with pytest.raises(ValueError, match="no benchmark cases for nosuchop"):
        bench.list_cases(["nosuchop"])
    p = run_cli("bench", "nosuchop")
    assert p.returncode == 2
    assert "no benchmark cases for nosuchop" in p.stderr


def test_bench_cli_json():
    p = run_cli("bench", "pixel_unshuffle", "--quick", "--json", "--repeats", "1",
                "--dtype", "float16")
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    assert len(rows) == 2
    assert all(r["status"] == "ok" and r["dtype"] == "float16" for r in rows)


def test_bench_cli_table_and_progress():
    p = run_cli("bench", "pixel_shuffle", "--quick", "--repeats", "1", "--dtype", "float32")
    assert p.returncode == 0, p.stderr
    assert "[1/2] pixel_shuffle_contiguous float32" in p.stderr
    lines = p.stdout.splitlines()
    assert lines[1].split()[:4] == ["case", "shape", "dtype", "peer"]
    assert any(line.startswith("pixel_shuffle_channels_last") and "x copy" in line
               for line in lines)


def test_bench_cuda_without_gpu_is_refused():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    p = run_cli("bench", "--device", "cuda")
    assert p.returncode == 2 and "needs a visible GPU" in p.stderr
