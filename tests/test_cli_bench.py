"""The `kernelzoo` command (info, bench) and the benchmark registry."""

import json
import math
import re
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


CPU_CASES = [c for c in bench.list_cases() if "cpu" in c.devices]


def test_every_op_has_a_bench_case():
    """The operator pattern: each public op is benchmarked against its peer."""
    from kernelzoo._dispatch import op_names

    ops = {n for n in op_names() if not n.startswith("_")}
    assert ops and ops <= {c.op for c in bench.list_cases()}
    names = [c.name for c in bench.list_cases()]
    assert len(names) == len(set(names)), "bench case names must be unique"


@pytest.mark.parametrize("case", CPU_CASES, ids=lambda c: c.name)
def test_bench_case_agrees_and_is_timed(case):
    assert case.dtypes
    for dtype in case.dtypes:
        r = bench.run_case(case, "cpu", dtype, quick=True, repeats=1, warmup=0, min_time=0.0)
        if r.status == "skipped" and "not installed" in r.message:
            pytest.skip(r.message)
        assert r.status == "ok", f"{case.name} {dtype}: {r.status}: {r.message}"
        assert (r.op, r.case, r.dtype) == (case.op, case.name, dtype)
        assert r.agree is True and r.peer and r.shape
        # timed (the figures are reported, never judged here)
        assert all(isinstance(v, float) and math.isfinite(v)
                   for v in (r.ours_ms, r.peer_ms, r.speedup, *r.baselines.values()))
        assert r.gbps is None or math.isfinite(r.gbps)


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


def test_bench_name_selects_the_ops_it_prefixes():
    ops = {c.op for c in bench.list_cases(["selective_scan"])}
    assert ops == {"selective_scan_forward"}
    assert {c.op for c in bench.list_cases(["flash_attn"])} == {"flash_attn_forward", "flash_attn_kvcache"}
    assert {c.op for c in bench.list_cases(["roi_align"])} == {"roi_align"}
    with pytest.raises(ValueError, match="no benchmark cases for selective_sc"):
        bench.list_cases(["selective_sc"])  # a prefix only up to an underscore


def cli_op():
    """An op with CPU cases (the first the registry lists), its CPU cases, and
    a dtype they all declare."""
    op = CPU_CASES[0].op
    cases = [c for c in bench.list_cases([op]) if "cpu" in c.devices]
    common = set.intersection(*(set(c.dtypes) for c in cases))
    return op, cases, sorted(common)[0]


def test_bench_cli_json():
    op, cases, dtype = cli_op()
    p = run_cli("bench", op, "--quick", "--json", "--repeats", "1", "--dtype", dtype)
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    assert [r["case"] for r in rows] == [c.name for c in cases]
    assert all(r["status"] == "ok" and r["dtype"] == dtype for r in rows)


def test_bench_cli_table_and_progress():
    op, cases, dtype = cli_op()
    p = run_cli("bench", op, "--quick", "--repeats", "1", "--dtype", dtype)
    assert p.returncode == 0, p.stderr
    assert f"[1/{len(cases)}] {cases[0].name} {dtype}" in p.stderr
    lines = p.stdout.splitlines()
    assert lines[1].split()[:4] == ["case", "shape", "dtype", "peer"]
    rows = lines[3:3 + len(cases)]
    assert [row.split()[0] for row in rows] == [c.name for c in cases]
    assert all(f" {dtype} " in row for row in rows)
    assert all(re.search(r" \d+\.\d\dx ", row) for row in rows)  # a speedup cell, formatted
    notes = lines[3 + len(cases):]  # then the notes of the cases that have one
    assert not notes or (notes[0] == "notes:" and
                         all(n.startswith(f"  {c.name} {dtype}: ") for n, c in
                             zip(notes[1:], [c for c in cases if c.name in "".join(notes)])))


def test_bench_cuda_without_gpu_is_refused():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    p = run_cli("bench", "--device", "cuda")
    assert p.returncode == 2 and "needs a visible GPU" in p.stderr
