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
    report["families"] = _families_report()
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
    _print_families(report["families"])
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


# --------------------------------------------------------------------------- model families


class _plain_warnings:
    """Shows kernelzoo's plugin warnings as one short line each (or hides them)."""

    def __init__(self, show: bool = True) -> None:
        self.show = show

    def __enter__(self):
        import warnings

        from kernelzoo.registry import PluginWarning

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        if not self.show:
            warnings.simplefilter("ignore", PluginWarning)
            return self
        original = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, PluginWarning):
                print(f"warning: {message}", file=sys.stderr)
            else:
                original(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def _families_report() -> list[dict]:
    """One entry per discovered provider of a family (for `kernelzoo info`)."""
    import kernelzoo

    out = []
    with _plain_warnings():
        for p in kernelzoo.list_plugins():
            entry = {"family": p.family, "status": p.status, "distribution": p.distribution,
                     "version": p.version, "builtin": p.builtin, "models": [],
                     "description": "", "error": p.error}
            if p.status == "ok":
                fam = kernelzoo.get_family(p.family)
                entry["models"] = fam.model_names()
                entry["description"] = fam.description
            out.append(entry)
    return out


def _print_families(families: list[dict]) -> None:
    print("model families (kernelzoo models / kernelzoo plugins for details)")
    if not families:
        print("  none found (the entry points of group kernelzoo.families are missing: "
              "is kernelzoo installed with pip?)")
    width = max((len(f["family"]) for f in families), default=0)
    for f in families:
        source = "built-in" if f["builtin"] else f"{f['distribution']} {f['version'] or ''}".strip()
        if f["status"] == "ok":
            n = len(f["models"])
            print(f"  {f['family']:<{width}}  {n} model{'s' if n != 1 else ''}, {source}"
                  f"{': ' + f['description'] if f['description'] else ''}")
        else:
            print(f"  {f['family']:<{width}}  {f['status'].upper()}, {source}: {f['error']}")


def _cmd_models(args) -> int:
    import kernelzoo
    from kernelzoo.registry import model_config

    patterns = args.patterns or ["*"]
    with _plain_warnings():
        names = kernelzoo.list_models(patterns)
        rows = [(n, model_config(n)) for n in names] if args.long or args.json else []
    if args.json:
        import dataclasses

        def cfg(c):
            return dataclasses.asdict(c) if dataclasses.is_dataclass(c) else dict(c)

        print(json.dumps([{"model": n, "config": cfg(c)} for n, c in rows], indent=2,
                         default=repr))
    elif args.long:
        width = max(len(n) for n in names) if names else 0
        for n, c in rows:
            print(f"{n:<{width}}  {c}")
    else:
        for n in names:
            print(n)
    if not names:
        print(f"kernelzoo models: no model matches {' '.join(patterns)} "
              f"(`kernelzoo plugins` shows every plugin and its status)", file=sys.stderr)
        return 1
    return 0


def _cmd_plugins(args) -> int:
    import dataclasses

    import kernelzoo

    with _plain_warnings(show=False):  # the table says it all
        plugins = kernelzoo.list_plugins()
    if args.json:
        print(json.dumps([dataclasses.asdict(p) for p in plugins], indent=2))
        return 0
    if not plugins:
        print("no plugins found in the entry-point group kernelzoo.families")
        return 0
    rows = [(p.family, p.status,
             f"{p.distribution or '(register_family)'} {p.version or ''}".strip()
             + (" (built-in)" if p.builtin else ""), p.entry_point or "-") for p in plugins]
    cols = ("family", "status", "distribution", "entry point")
    widths = [max(len(x) for x in [c] + [r[i] for r in rows]) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip())
    print("  ".join("-" * w for w in widths))
    for p, r in zip(plugins, rows):
        print("  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip())
        if p.error:
            print(f"    {p.error}")
    return 0


def _cmd_train(args) -> int:
    from kernelzoo.registry import PluginError, UnknownModelError, get_family, model_config

    try:
        with _plain_warnings():
            model_config(args.model)   # validates the name, imports only its family
            family = get_family(args.model.partition("-")[0])
    except (UnknownModelError, PluginError) as e:
        print(f"kernelzoo train: {e}", file=sys.stderr)
        return 2
    if family.train is None:
        print(f"kernelzoo train: family {family.name!r} ships no training example",
              file=sys.stderr)
        return 2
    options = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size),
                                 ("lr", args.lr)) if v is not None}
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("kernelzoo train: --device cuda needs a visible GPU", file=sys.stderr)
        return 2
    if args.threads is not None:
        if args.threads < 1:
            print("kernelzoo train: --threads must be at least 1", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    try:
        result = family.train(args.model, seed=args.seed, device=args.device, save=args.save,
                              progress=not args.no_progress, verbose=not args.json, **options)
    except ValueError as e:
        print(f"kernelzoo train: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2, default=repr))
    return 0


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

    m = sub.add_parser("models", help="list models (<family>-<preset>)")
    m.add_argument("patterns", nargs="*", metavar="PATTERN",
                   help="shell-style wildcards, e.g. 'espcn-*' (default: all)")
    m.add_argument("-l", "--long", action="store_true", help="show each model's config")
    m.add_argument("--json", action="store_true", help="print models and configs as JSON")
    m.set_defaults(func=_cmd_models)

    pl = sub.add_parser("plugins", help="model-family plugins and their status")
    pl.add_argument("--json", action="store_true", help="machine-readable output")
    pl.set_defaults(func=_cmd_plugins)

    t = sub.add_parser("train", help="run a family's training example, e.g. espcn-x3")
    t.add_argument("model", help="model name, e.g. espcn-x3")
    t.add_argument("--steps", type=int, help="optimizer steps (default: the family's)")
    t.add_argument("--batch-size", type=int, help="batch size (default: the family's)")
    t.add_argument("--lr", type=float, help="learning rate (default: the family's)")
    t.add_argument("--seed", type=int, default=0, help="seed of weights and data")
    t.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    t.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads (torch.set_num_threads); 1 is often faster on a "
                        "machine whose cores are busy with other work")
    t.add_argument("--save", metavar="PATH", help="save the trained state dict there")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--json", action="store_true", help="print the results as JSON")
    t.set_defaults(func=_cmd_train)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
