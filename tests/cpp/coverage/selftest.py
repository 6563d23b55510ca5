#!/usr/bin/env python3
"""Self-test of kernel_coverage.py (ctest: kernel_coverage_selftest).

Compiles the two drivers of fixture/ with the flags of an instrumented build,
runs them, reports with kernel_coverage.py and checks the report line by line
against the markers in the fixture's sources (fixture/README.md):

    selftest.py --cxx g++ --gcov gcov-12 --work <scratch folder> -- <compile flags...>

Then checks that the figure can fail: with driver A's counters alone, the lines
marked `run b` must turn into `count 0` and the total must drop.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "fixture")
TOOL = os.path.join(HERE, "kernel_coverage.py")
MARKER = re.compile(r"//\s*cov:\s*(run a|run b|run|zero|uninst|ifout)(?:\s+branch\s+(\d+)/(\d+))?\s*$")
KIND = {"zero": "count_zero_lines", "uninst": "not_instantiated_lines",
        "ifout": "preprocessed_out_lines"}


def expected(rel: str) -> dict:
    exp = {"run": set(), "run_b": set(), "branches": {}}
    for key in KIND.values():
        exp[key] = set()
    with open(os.path.join(FIXTURE, rel)) as fh:
        for n, line in enumerate(fh, 1):
            m = MARKER.search(line)
            if not m:
                continue
            verdict = m.group(1)
            if verdict.startswith("run"):
                exp["run"].add(n)
                if verdict == "run b":
                    exp["run_b"].add(n)
            else:
                exp[KIND[verdict]].add(n)
            if m.group(2):
                exp["branches"][n] = (int(m.group(2)), int(m.group(3)))
    return exp


def run(cmd: list[str], cwd: str) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"selftest: {' '.join(cmd)} failed ({proc.returncode}):\n"
                 f"{proc.stdout}{proc.stderr}")
    return proc.stdout


def report(args: argparse.Namespace, out: str) -> tuple[dict, str]:
    text = run([sys.executable, TOOL, "report", "--build", os.path.join(args.work, "build"),
                "--source", FIXTURE, "--out", out, "--gcov", args.gcov], args.work)
    with open(os.path.join(out, "kernel_coverage.json")) as fh:
        return {f["file"]: f for f in json.load(fh)["files"]}, text


def fmt(lines: set[int]) -> str:
    return ", ".join(map(str, sorted(lines))) or "-"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cxx", required=True)
    ap.add_argument("--gcov", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("flags", nargs="*", help="compile flags of an instrumented build")
    args = ap.parse_args()

    shutil.rmtree(args.work, ignore_errors=True)
    for d in ("a", "b"):
        obj = os.path.join(args.work, "build", d)
        os.makedirs(obj)
        src = os.path.join(FIXTURE, f"driver_{d}.cpp")
        run([args.cxx, "-std=c++20", *args.flags, "-I", FIXTURE, "-c", src,
             "-o", f"driver_{d}.o"], obj)
        run([args.cxx, "--coverage", f"driver_{d}.o", "-o", f"driver_{d}"], obj)
        run([os.path.join(obj, f"driver_{d}")], obj)

    files, text = report(args, os.path.join(args.work, "out"))
    print(text)
    failures = []
    names = sorted(files)
    want = ["csrc/common/tiny_device.cuh", "csrc/ops/tiny/tiny_kernel.cuh"]
    if names != want:
        failures.append(f"reported files {names}, expected {want} (found by glob, "
                        "tiny_plan.h left out)")
    for rel in want:
        if rel not in files:
            continue
        f, exp = files[rel], expected(rel)
        executable = exp["run"].union(*(exp[k] for k in KIND.values()))
        checks = [("run", exp["run"], set(f["executed_lines"]))] + [
            (k, exp[k], set(f[k])) for k in KIND.values()]
        for name, want_lines, got in checks:
            if want_lines != got:
                failures.append(f"{rel}: {name}: expected {fmt(want_lines)}, reported {fmt(got)}")
        if f["executable"] != len(executable) or f["executed"] != len(exp["run"]):
            failures.append(f"{rel}: reported {f['executed']} / {f['executable']} lines run, "
                            f"expected {len(exp['run'])} / {len(executable)}")
        partly = {b["line"]: (b["taken"], b["outcomes"]) for b in f["partly_taken_lines"]}
        for n, (taken, total) in exp["branches"].items():
            got_b = partly.get(n, (total, total))
            if got_b != (taken, total) and not (taken == total and n not in partly):
                failures.append(f"{rel}:{n}: branch outcomes taken {got_b}, expected "
                                f"{(taken, total)}")
        row = re.search(rf"^{re.escape(rel)}\s+(\d+) / (\d+)\s+([\d.]+)%", text, re.M)
        pct = 100.0 * len(exp["run"]) / len(executable)
        if not row or (int(row[1]), int(row[2])) != (len(exp["run"]), len(executable)) \
                or row[3] != f"{pct:.1f}":
            failures.append(f"{rel}: the table's row does not read "
                            f"{len(exp['run'])} / {len(executable)} {pct:.1f}%")

    # The figure can fail: without driver B's counters, B's lines are not run.
    os.remove(os.path.join(args.work, "build", "b", "driver_b.gcda"))
    files_a, _ = report(args, os.path.join(args.work, "out_a"))
    for rel in want:
        if rel not in files_a:
            continue
        run_b = expected(rel)["run_b"]
        if not run_b <= set(files_a[rel]["count_zero_lines"]):
            failures.append(f"{rel}: with driver A alone, lines {fmt(run_b)} should be count 0; "
                            f"reported count 0: {fmt(set(files_a[rel]['count_zero_lines']))}")
        if run_b and files_a[rel]["executed"] != files[rel]["executed"] - len(run_b):
            failures.append(f"{rel}: with driver A alone, {files_a[rel]['executed']} lines run, "
                            f"expected {files[rel]['executed'] - len(run_b)}")

    # reset removes the counters; a report without counters is an error.
    run([sys.executable, TOOL, "reset", "--build", os.path.join(args.work, "build")], args.work)
    proc = subprocess.run([sys.executable, TOOL, "report", "--build",
                           os.path.join(args.work, "build"), "--source", FIXTURE,
                           "--gcov", args.gcov], capture_output=True, text=True)
    if proc.returncode == 0 or "no counters" not in proc.stderr:
        failures.append("a report after reset did not fail with 'no counters'")

    if failures:
        print("KERNEL COVERAGE SELF-TEST FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("kernel coverage self-test: the report matches every marker of the fixture")
    return 0


if __name__ == "__main__":
    sys.exit(main())
