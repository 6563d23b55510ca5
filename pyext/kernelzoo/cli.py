"""The ``kernelzoo`` command (also ``python -m kernelzoo``)."""

from __future__ import annotations

import argparse
import json
import platform
import sys


def _cmd_info(args) -> int:
    import torch

    import kernelzoo
    from kernelzoo._dispatch import op_backends, op_names

    info = kernelzoo.build_info()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
        if torch.cuda.is_available() else []
    ops = {name: op_backends(name) for name in op_names()}
    report = {
        "kernelzoo": kernelzoo.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "gpus": gpus,
        "build": info,
        "ops": ops,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"kernelzoo {report['kernelzoo']}")
    print(f"  python {report['python']}, torch {report['torch']} "
          f"(CUDA {report['torch_cuda'] or 'none'})")
    print(f"  GPUs: {', '.join(gpus) if gpus else 'none visible'}")
    print("build")
    print(f"  built against torch {info['torch']}, python {info['python']}")
    cuda = "yes" if info["cuda"] else "no"
    print(f"  CUDA kernels: {cuda} ({info['cuda_reason']})")
    if info["cuda"]:
        print(f"  arch list: {info['arch_list']}; nvcc: {info['nvcc']}; "
              f"CUDA_HOME: {info['cuda_home']}")
        if info.get("extra_include_dirs"):
            print(f"  NVIDIA wheel headers: {len(info['extra_include_dirs'])} folders")
    print("ops (backends with kernels)")
    width = max((len(n) for n in ops), default=0)
    for name, backends in ops.items():
        keys = [k if v == "kernel" else f"{k} (not built: rebuild with FORCE_CUDA=1)"
                for k, v in backends.items() if v != "none"]
        print(f"  {name:<{width}}  {', '.join(keys)}")
    return 0


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def _cmd_bench(args) -> int:
    from kernelzoo import bench

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("kernelzoo bench: --device cuda needs a visible GPU", file=sys.stderr)
            return 2
    try:
        todo = bench.list_cases(args.ops)
    except ValueError as e:
        print(f"kernelzoo bench: {e}", file=sys.stderr)
        return 2

    def progress(i, n, c, dt):
        if not args.json:
            print(f"[{i + 1}/{n}] {c.name} {dt} ...", file=sys.stderr, flush=True)

    results = bench.run(args.ops, device=args.device, dtypes=args.dtype, quick=args.quick,
                        progress=progress, repeats=args.repeats, warmup=args.warmup)
    if not todo or not results:
        print("kernelzoo bench: no cases for this device", file=sys.stderr)
    if args.json:
        import dataclasses

        print(json.dumps([dataclasses.asdict(r) for r in results], indent=2))
    else:
        _print_table(results, args.device)
    return 1 if any(r.status in ("mismatch", "error") for r in results) else 0


def _print_table(results, device) -> None:
    cols = ["case", "shape", "dtype", "peer", "peer ms", "kz ms", "speedup", "GB/s",
            "TFLOP/s", "vs baseline"]
    rows = []
    for r in results:
        if r.status != "ok":
            rows.append([r.case, r.shape, r.dtype, r.peer, "", "", r.status.upper(), "", "",
                         r.message])
            continue
        base = ", ".join(f"{v:.2f}x {k}" for k, v in r.baselines.items())
        rows.append([r.case, r.shape, r.dtype, r.peer, _fmt(r.peer_ms, ".3f"),
                     _fmt(r.ours_ms, ".3f"), _fmt(r.speedup, ".2f") + "x",
                     _fmt(r.gbps, ".1f"), _fmt(r.tflops, ".2f"), base])
    widths = [max(len(str(x)) for x in [c] + [row[i] for row in rows]) for i, c in enumerate(cols)]
    print(f"kernelzoo bench on {device} (speedup = peer time / kernelzoo time; "
          "vs baseline = kernelzoo time / baseline time)")
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kernelzoo", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="versions, build configuration, ops and their backends")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=_cmd_info)

    b = sub.add_parser("bench", help="each op against its peer: agreement, then speed")
    b.add_argument("ops", nargs="*", metavar="OP", help="ops to run (default: all)")
    b.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    b.add_argument("--dtype", action="append",
                   help="dtype to run (repeatable; default: each case's own list)")
    b.add_argument("--json", action="store_true", help="print results as JSON")
    b.add_argument("--quick", action="store_true", help="small shapes, for a smoke test")
    b.add_argument("--repeats", type=int, default=15, help="timed samples per function")
    b.add_argument("--warmup", type=int, default=3, help="untimed calls per function")
    b.set_defaults(func=_cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
