"""The model-family registry: entry-point discovery, model names, presets.

A *model family* (:class:`ModelFamily`) is a named builder with presets. Every
family, built-in or third-party, is found through the entry-point group
``kernelzoo.families``: the entry point's name is the family name and it
refers to a :class:`ModelFamily` or to a zero-argument callable returning one.
A model is named ``<family>-<preset>`` (``espcn-x3``).

Discovery is lazy. Importing kernelzoo reads no metadata and imports no
plugin. The first call that needs the registry reads the entry points (once
per process, cached; :func:`refresh` reads them again) without importing
anything; a plugin module is imported only when its family is used, and
building a model imports only that model's family.

Every entry point gets a status (see :func:`list_plugins`):

``ok``
    loaded (or not yet needed: ``list_plugins`` loads each one to report it).
``failed``
    importing it raised, it yields something that is not a ``ModelFamily``, or
    its name is not a valid family name. One warning is issued; asking for one
    of its models raises :class:`PluginError` chained to the original error.
``conflict``
    another provider (another distribution, or :func:`register_family`) uses
    the same family name. All of them are marked and none is imported or used:
    a third party cannot replace a built-in family, silently or otherwise.
``incompatible``
    written for a plugin API version (:attr:`ModelFamily.api_version`) that
    this kernelzoo does not support.
``disabled``
    excluded by an environment variable:

``KERNELZOO_PLUGINS``
    allow-list; when set (and not empty), only the entry points it matches are
    used. A comma- or space-separated list of items, each ``FAMILY`` or
    ``DISTRIBUTION:FAMILY``, with shell-style wildcards: ``espcn``,
    ``kernelzoo:*`` (every built-in family), ``my-plugin:*``.
``KERNELZOO_DISABLE_PLUGINS``
    deny-list, same syntax; wins over the allow-list.
``KERNELZOO_NO_THIRD_PARTY_PLUGINS``
    ``1`` (or ``true``, ``yes``, ``on``): only the families of the kernelzoo
    distribution itself are used; every other entry point is disabled and
    never imported.

The variables are read when discovery runs (the first use in a process, or
:func:`refresh`). Families added in-process with :func:`register_family` are
not subject to them.

Pretrained checkpoints (optional, per family). A family that can load a
checkpoint folder (``config.json`` plus weights, e.g. a Hugging Face one)
gives :class:`ModelFamily` a ``load_pretrained(model, path)`` hook, and may
give ``from_pretrained(path, **overrides)`` and the ``model_types`` it
handles. Then ``create_model(name, pretrained=PATH)`` builds the preset and
loads the folder into it (the family checks that the folder's config matches
the preset), and :func:`from_pretrained` builds a model from the folder alone,
picking the family whose ``model_types`` holds ``config.json``'s
``model_type``. A family without the hooks is unaffected.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import fnmatch
import inspect
import io
import os
import re
import signal
import sys
import threading
import warnings
from typing import Any, Callable, Iterable, Mapping

__all__ = [
    "API_VERSION", "SUPPORTED_API_VERSIONS", "ENTRY_POINT_GROUP",
    "ModelFamily", "PluginInfo", "PluginError", "PluginWarning", "UnknownModelError",
    "register_family", "unregister_family", "get_family", "list_families", "list_models",
    "create_model", "model_config", "list_plugins", "refresh", "from_pretrained",
]

#: The plugin API version families are written for (:attr:`ModelFamily.api_version`).
API_VERSION = 1
#: The plugin API versions this kernelzoo can load.
SUPPORTED_API_VERSIONS = (1,)
#: The entry-point group families are registered under.
ENTRY_POINT_GROUP = "kernelzoo.families"

ENV_ALLOW = "KERNELZOO_PLUGINS"
ENV_DENY = "KERNELZOO_DISABLE_PLUGINS"
ENV_NO_THIRD_PARTY = "KERNELZOO_NO_THIRD_PARTY_PLUGINS"

#: The distribution whose entry points are the built-in families.
BUILTIN_DISTRIBUTION = "kernelzoo"

_FAMILY_NAME = re.compile(r"[a-z0-9][a-z0-9_]*\Z")
_PRESET_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*\Z")
_STATUSES = ("ok", "failed", "conflict", "incompatible", "disabled")


class UnknownModelError(LookupError):
    """No model (or family) of that name is registered."""


class PluginError(RuntimeError):
    """A family exists but cannot be used: it failed to load, it conflicts with
    another provider, it is incompatible, or it is disabled."""


class PluginWarning(UserWarning):
    """Issued once per plugin that failed to load, conflicts or is incompatible."""


# --------------------------------------------------------------------------- running plugin code
#
# A plugin is third-party code: importing it, or calling its factory or
# builder, may raise anything, including what ``except Exception`` does not
# catch (``sys.exit()``, argparse's ``parse_args()`` on kernelzoo's own
# command line, ``GeneratorExit``, a custom ``BaseException``). None of that
# may take the registry, or the process, down. The one exception let through
# is a real Ctrl-C: a SIGINT that arrived while the plugin code ran.


class _SigintWatch:
    """Records whether SIGINT arrives while plugin code runs, so that a
    ``KeyboardInterrupt`` from the user (let through) can be told from one a
    plugin raises itself (a failure like any other).

    It chains to the handler in place, so Ctrl-C behaves as before. Where it
    cannot watch (not the main thread, a handler not installed from Python)
    or the plugin installs its own SIGINT handler, every
    ``KeyboardInterrupt`` counts as real.
    """

    def __init__(self) -> None:
        self.hit = False
        self.watching = False
        self._prev = None

    def _handler(self, signum, frame):
        self.hit = True
        if callable(self._prev):
            return self._prev(signum, frame)
        raise KeyboardInterrupt

    def __enter__(self) -> "_SigintWatch":
        if threading.current_thread() is not threading.main_thread():
            return self
        try:
            prev = signal.getsignal(signal.SIGINT)
        except (ValueError, OSError):
            return self
        if prev in (signal.SIG_IGN, signal.SIG_DFL):
            # Ctrl-C is ignored or kills the process: no KeyboardInterrupt
            # that reaches us comes from the user.
            self.watching = True
            return self
        if not callable(prev):
            return self
        self._prev = prev
        try:
            signal.signal(signal.SIGINT, self._handler)
        except (ValueError, OSError):
            return self
        self.watching = True
        return self

    def __exit__(self, *exc) -> None:
        if self._prev is None:
            return
        try:
            if signal.getsignal(signal.SIGINT) == self._handler:
                signal.signal(signal.SIGINT, self._prev)
            else:
                self.watching = False   # the plugin installed its own handler
        except (ValueError, OSError):
            pass

    def real_interrupt(self, e: BaseException) -> bool:
        """Whether ``e`` is a KeyboardInterrupt to let through."""
        return isinstance(e, KeyboardInterrupt) and (self.hit or not self.watching)


def _describe_exception(e: BaseException) -> str:
    """``Type: message`` on one line; says what a ``SystemExit`` means."""
    name = type(e).__name__
    if isinstance(e, SystemExit):
        return (f"SystemExit({e.code!r}): the plugin called sys.exit() (argparse's "
                f"parse_args() does, on command-line arguments it does not understand)")
    text = " ".join(str(e).split())
    return f"{name}: {text}" if text else name


def _condense_output(text: str, limit: int = 400) -> str:
    """What a plugin printed, on one line: non-empty lines joined by ' | '."""
    lines = [" ".join(ln.split()) for ln in text.splitlines()]
    one = " | ".join(ln for ln in lines if ln)
    return one if len(one) <= limit else one[:limit - 3] + "..."


@contextlib.contextmanager
def _captured_output():
    """Redirects ``sys.stdout`` and ``sys.stderr`` into one buffer while a
    plugin is imported (output written to the file descriptors directly, by C
    code, is not captured)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        yield buf


def _run_plugin_code(fn, args, kwargs, *, passthrough, wrap):
    """``fn(*args, **kwargs)``, plugin code: an exception of type
    ``passthrough`` and a real Ctrl-C pass through unchanged; anything else
    raised becomes ``wrap(e)``, chained to it."""
    with _SigintWatch() as watch:
        try:
            return fn(*args, **kwargs)
        except passthrough:
            raise
        except BaseException as e:
            if watch.real_interrupt(e):
                raise
            raise wrap(e) from e


def _call_plugin(what: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, plugin code: an ``Exception`` passes through
    unchanged; any other ``BaseException`` but a real Ctrl-C becomes a
    :class:`PluginError` (``"<what> raised SystemExit(2): ..."``) chained to it."""
    return _run_plugin_code(
        fn, args, kwargs, passthrough=Exception,
        wrap=lambda e: PluginError(f"{what} raised {_describe_exception(e)}"))


# --------------------------------------------------------------------------- families


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class ModelFamily:
    """A model family: a builder, its presets and how to feed it.

    Args:
        name: the family name, the first part of every model name: lowercase
            letters, digits and ``_`` (no ``-``, which separates the preset).
            For a discovered family it must equal the entry point's name.
        build: ``build(config) -> torch.nn.Module`` when presets are dataclass
            instances; ``build(**config)`` when presets are dicts of keyword
            arguments.
        presets: preset name -> config (a dataclass instance, or a dict of
            keyword arguments for ``build``). Preset names are lowercase
            letters, digits, ``_``, ``.`` and ``-``; model ``<name>-<preset>``.
        example_inputs: ``example_inputs(model, batch_size=2) -> tuple`` of
            inputs for ``model(*inputs)`` (used by tests, benchmarks and
            :func:`kernelzoo.testing.check_family`).
        description: one line for listings.
        api_version: the plugin API version the family was written for
            (default: this kernelzoo's :data:`API_VERSION`).
        small: names of presets that are cheap enough for tests. Presets named
            ``test`` or ending in ``-test``/``_test`` are small without being
            listed; every family needs at least one small preset.
        train: optional training example, run by ``kernelzoo train <model>``:
            ``train(model_name, *, steps=None, batch_size=None, lr=None,
            seed=0, device="cpu", save=None, progress=True, verbose=True)``
            returning a dict of JSON-serialisable results (``None`` arguments
            mean the family's defaults).
        compile_modules: dotted names of sub-modules (as in
            ``model.get_submodule``) that :func:`kernelzoo.testing.check_family`
            compiles, each on its own, instead of the whole model, which then
            runs eagerly around them. For models whose forward cannot be
            captured as one graph because shapes depend on the data (a
            detector's proposal filtering and NMS). Empty (the default): the
            whole model is compiled. A listed module is compiled with
            everything it calls, so none may be inside another.
        load_pretrained: optional ``load_pretrained(model, path) -> None``:
            loads the checkpoint folder ``path`` into ``model``, built from one
            of the presets (``create_model(name, pretrained=path)``). Raises
            ``ValueError`` naming the key when the folder's config does not
            match the model, keys are missing or unexpected, or a shape
            differs; ``FileNotFoundError`` when files are missing.
        from_pretrained: optional ``from_pretrained(path, **overrides) ->
            torch.nn.Module``: builds a model from the checkpoint folder's own
            config and loads its weights (:func:`kernelzoo.from_pretrained`).
        model_types: the ``model_type`` values of ``config.json`` (Hugging
            Face's convention) that ``from_pretrained`` handles; how
            :func:`kernelzoo.from_pretrained` finds the family of a folder.
    """

    name: str
    build: Callable[..., Any]
    presets: Mapping[str, Any]
    example_inputs: Callable[..., tuple]
    description: str = ""
    api_version: int = API_VERSION
    small: tuple[str, ...] = ()
    train: Callable[..., dict] | None = None
    compile_modules: tuple[str, ...] = ()
    load_pretrained: Callable[..., None] | None = None
    from_pretrained: Callable[..., Any] | None = None
    model_types: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _FAMILY_NAME.match(self.name):
            raise ValueError(
                f"ModelFamily: invalid family name {self.name!r}: use lowercase letters, digits "
                f"and '_', starting with a letter or digit ('-' separates family and preset "
                f"in model names)")

        def bad(msg):
            return TypeError(f"ModelFamily {self.name!r}: {msg}")

        if not callable(self.build):
            raise bad(f"build must be callable, got {type(self.build).__name__}")
        if not callable(self.example_inputs):
            raise bad(f"example_inputs must be callable, got {type(self.example_inputs).__name__}")
        if not isinstance(self.presets, Mapping) or not self.presets:
            raise bad("presets must be a non-empty mapping of preset name -> config")
        for preset, config in self.presets.items():
            if not isinstance(preset, str) or not _PRESET_NAME.match(preset):
                raise ValueError(
                    f"ModelFamily {self.name!r}: invalid preset name {preset!r}: use lowercase "
                    f"letters, digits, '_', '.' and '-', starting with a letter or digit")
            if not (isinstance(config, dict) or (dataclasses.is_dataclass(config)
                                                 and not isinstance(config, type))):
                raise bad(f"preset {preset!r}: a config is a dataclass instance or a dict of "
                          f"keyword arguments for build, got {type(config).__name__}")
        if isinstance(self.api_version, bool) or not isinstance(self.api_version, int):
            raise bad(f"api_version must be an int, got {self.api_version!r}")
        small = (self.small,) if isinstance(self.small, str) else tuple(self.small)
        unknown = [s for s in small if s not in self.presets]
        if unknown:
            raise bad(f"small names unknown presets {unknown}; presets: {sorted(self.presets)}")
        if self.train is not None and not callable(self.train):
            raise bad("train must be callable or None")
        compile_modules = ((self.compile_modules,) if isinstance(self.compile_modules, str)
                           else tuple(self.compile_modules))
        if not all(isinstance(m, str) and m for m in compile_modules):
            raise bad(f"compile_modules must be dotted sub-module names, got "
                      f"{self.compile_modules!r}")
        nested = [(a, b) for a in compile_modules for b in compile_modules
                  if b.startswith(a + ".")]
        if nested:
            raise bad(f"compile_modules: {nested[0][1]!r} is inside {nested[0][0]!r}, which is "
                      f"compiled with everything it calls; list only the outer one")
        for hook in ("load_pretrained", "from_pretrained"):
            if getattr(self, hook) is not None and not callable(getattr(self, hook)):
                raise bad(f"{hook} must be callable or None")
        model_types = ((self.model_types,) if isinstance(self.model_types, str)
                       else tuple(self.model_types))
        if not all(isinstance(t, str) and t for t in model_types):
            raise bad(f"model_types must be non-empty strings, got {self.model_types!r}")
        if model_types and self.from_pretrained is None:
            raise bad("model_types needs a from_pretrained hook (it is what they select)")
        object.__setattr__(self, "model_types", model_types)
        # Freeze a copy so that later edits of the caller's dict do not leak in.
        object.__setattr__(self, "presets", dict(self.presets))
        object.__setattr__(self, "small", small)
        object.__setattr__(self, "compile_modules", compile_modules)

    # -- presets and configs

    def model_names(self) -> list[str]:
        """``<family>-<preset>`` for every preset, naturally sorted."""
        return sorted((f"{self.name}-{p}" for p in self.presets), key=_natural_key)

    @property
    def small_presets(self) -> list[str]:
        """Presets cheap enough for tests (``small`` plus ``*test`` names)."""
        out = [p for p in self.presets
               if p in self.small or p == "test" or p.endswith(("-test", "_test"))]
        return sorted(out, key=_natural_key)

    def override_keys(self, preset: str) -> list[str]:
        """The keys :meth:`config` accepts as overrides for ``preset``: the
        fields of a dataclass config; for a dict config, the keyword
        parameters of ``build`` (plus the preset's own keys if ``build`` takes
        ``**kwargs``)."""
        config = self._preset(preset)
        if isinstance(config, dict):
            keys, var_kw = self._build_keywords()
            return sorted(keys | set(config) if var_kw else keys)
        return [f.name for f in dataclasses.fields(config) if f.init]

    def _build_keywords(self) -> tuple[set[str], bool]:
        try:
            params = inspect.signature(self.build).parameters.values()
        except (TypeError, ValueError):  # no signature (some builtins): trust the presets
            return set(), True
        keys = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        return keys, any(p.kind == p.VAR_KEYWORD for p in params)

    def config(self, preset: str, **overrides) -> Any:
        """The config of ``preset`` with ``overrides`` applied (a new object)."""
        config = self._preset(preset)
        valid = self.override_keys(preset)
        if isinstance(config, dict):
            bad = [k for k in config if k not in valid]
            if bad:
                raise TypeError(f"{self.name}-{preset}: the preset has keys that build does "
                                f"not accept: {', '.join(map(repr, bad))}; build's keywords: "
                                f"{', '.join(valid)}")
        unknown = [k for k in overrides if k not in valid]
        if unknown:
            s = "s" if len(unknown) > 1 else ""
            raise TypeError(
                f"{self.name}-{preset}: unknown override{s} {', '.join(map(repr, unknown))}; "
                f"valid keys: {', '.join(valid)}")
        if isinstance(config, dict):
            return {**config, **overrides}
        # The dataclass's __init__/__post_init__ is plugin code.
        return _call_plugin(f"family {self.name!r}: the config of {self.name}-{preset}",
                            dataclasses.replace, config, **overrides)

    def create(self, preset: str, *, pretrained=None, **overrides):
        """Builds ``preset`` with ``overrides`` applied; with ``pretrained`` (a
        checkpoint folder), loads it through the family's ``load_pretrained``."""
        if pretrained is not None and self.load_pretrained is None:
            raise ValueError(f"family {self.name!r} cannot load pretrained weights (it has no "
                             f"load_pretrained hook)")
        config = self.config(preset, **overrides)
        what = f"family {self.name!r}: building {self.name}-{preset}"
        if isinstance(config, dict):
            model = _call_plugin(what, self.build, **config)
        else:
            model = _call_plugin(what, self.build, config)
        import torch

        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"family {self.name!r}: build returned {type(model).__name__}, "
                            f"not a torch.nn.Module")
        if pretrained is not None:
            _call_plugin(f"family {self.name!r}: loading {pretrained!s} into {self.name}-{preset}",
                         self.load_pretrained, model, _checkpoint_folder(pretrained))
        return model

    def _preset(self, preset: str):
        try:
            return self.presets[preset]
        except KeyError:
            name = f"{self.name}-{preset}"
            close = difflib.get_close_matches(name, self.model_names(), n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise UnknownModelError(
                f"unknown model {name!r}: family {self.name!r} has no preset {preset!r}{hint} "
                f"(its models: {', '.join(self.model_names())})") from None

    def __repr__(self) -> str:
        return f"ModelFamily(name={self.name!r}, presets={list(self.presets)})"


# --------------------------------------------------------------------------- records


@dataclasses.dataclass(frozen=True)
class PluginInfo:
    """One provider of a family, as reported by :func:`list_plugins`."""

    family: str
    distribution: str | None   # None for register_family
    version: str | None
    entry_point: str | None    # "name = module:attr"; None for register_family
    status: str                # ok, failed, conflict, incompatible, disabled
    error: str | None = None
    builtin: bool = False


@dataclasses.dataclass(eq=False)
class _Provider:
    family_name: str
    distribution: str | None
    version: str | None
    entry_point: Any = None            # importlib.metadata.EntryPoint, or None
    family: ModelFamily | None = None  # set when loaded (or registered in-process)
    status: str = "ok"
    error: str | None = None
    exc: BaseException | None = None
    builtin: bool = False
    loaded: bool = False

    @property
    def ep_text(self) -> str | None:
        ep = self.entry_point
        return None if ep is None else f"{ep.name} = {ep.value}"

    def describe(self) -> str:
        if self.entry_point is None:
            return "register_family() in this process"
        dist = self.distribution or "<unknown distribution>"
        ver = f" {self.version}" if self.version else ""
        return f"distribution {dist!r}{ver} (entry point '{self.ep_text}')"

    def info(self) -> PluginInfo:
        return PluginInfo(self.family_name, self.distribution, self.version, self.ep_text,
                          self.status, self.error, self.builtin)


def _entry_point_value_problem(value) -> str | None:
    """What is wrong with an entry point's value for kernelzoo (``None`` if
    nothing): it must be ``module:attribute`` (dotted Python names, optionally
    followed by ``[extras]``); a module alone cannot be a family."""
    if not isinstance(value, str) or not value.strip():
        return "it is empty"
    v = value.strip()
    if "[" in v or "]" in v:
        head, sep, extras = v.partition("[")
        if not sep or not extras.endswith("]") or "[" in extras or "]" in extras[:-1]:
            return "unbalanced brackets"
        v = head.rstrip()
    if ":" not in v:
        return "no ':attribute' part (a module alone cannot be a family)"
    if v.count(":") > 1:
        return "more than one ':'"
    module, _, attr = (t.strip() for t in v.partition(":"))
    if not module:
        return "no module before ':'"
    if not attr:
        return "no attribute after ':'"
    for ref in (module, attr):
        if not all(part.isidentifier() for part in ref.split(".")):
            return f"{ref!r} is not a dotted Python name"
    return None


def _normalize_dist(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _natural_key(s: str):
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t)
                 for t in re.split(r"(\d+)", s.lower()) if t)


def _env_rules(var: str) -> list[tuple[str | None, str]]:
    """Parses ``a, dist:b`` into [(None, "a"), ("dist", "b")]."""
    rules = []
    for item in re.split(r"[,\s]+", os.environ.get(var, "").strip()):
        if not item:
            continue
        dist, sep, fam = item.rpartition(":")
        rules.append((_normalize_dist(dist) if sep else None, fam.lower()))
    return rules


def _matches(rules, provider: _Provider) -> bool:
    dist = _normalize_dist(provider.distribution or "")
    for rdist, rfam in rules:
        if fnmatch.fnmatchcase(provider.family_name, rfam) and \
                (rdist is None or fnmatch.fnmatchcase(dist, rdist)):
            return True
    return False


def _truthy(var: str) -> bool:
    return os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")


def _kernelzoo_version() -> str:
    import kernelzoo

    return getattr(kernelzoo, "__version__", "?")


# --------------------------------------------------------------------------- the registry


class _Registry:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._discovered = False
        self._providers: list[_Provider] = []   # discovered entry points
        self._local: list[_Provider] = []       # register_family

    # -- discovery (metadata only; imports nothing)

    def _discover(self) -> None:
        with self._lock:
            if self._discovered:
                return
            rules = _env_rules(ENV_ALLOW), _env_rules(ENV_DENY), _truthy(ENV_NO_THIRD_PARTY)
            self._providers = [self._provider_for(ep, *rules) for ep in self._entry_points()]
            self._discovered = True
            self._resolve_conflicts()

    @staticmethod
    def _entry_points():
        from importlib import metadata

        try:
            return list(metadata.entry_points(group=ENTRY_POINT_GROUP))
        except Exception as e:  # broken metadata somewhere in the environment
            warnings.warn(f"kernelzoo: reading the entry points of group {ENTRY_POINT_GROUP!r} "
                          f"failed ({type(e).__name__}: {e}); no plugin is available",
                          PluginWarning, stacklevel=4)
            return []

    def _provider_for(self, ep, allow, deny, no_third_party) -> _Provider:
        dist = getattr(ep, "dist", None)
        dist_name = version = None
        if dist is not None:
            try:
                dist_name, version = dist.metadata["Name"], dist.version
            except Exception:
                pass
        builtin = dist_name is not None and _normalize_dist(dist_name) == BUILTIN_DISTRIBUTION
        p = _Provider(ep.name, dist_name, version, entry_point=ep, builtin=builtin)
        if no_third_party and not builtin:
            p.status = "disabled"
            p.error = (f"third-party plugins are disabled by "
                       f"{ENV_NO_THIRD_PARTY}={os.environ[ENV_NO_THIRD_PARTY]}")
        elif deny and _matches(deny, p):
            p.status, p.error = "disabled", f"disabled by {ENV_DENY}={os.environ[ENV_DENY]!r}"
        elif allow and not _matches(allow, p):
            p.status = "disabled"
            p.error = f"not in the allow-list {ENV_ALLOW}={os.environ[ENV_ALLOW]!r}"
        elif not _FAMILY_NAME.match(ep.name):
            p.status = "failed"
            p.error = (f"invalid family name {ep.name!r} in entry point '{p.ep_text}': use "
                       f"lowercase letters, digits and '_'")
            p.exc = ValueError(p.error)
            self._warn(p)
        elif (problem := _entry_point_value_problem(ep.value)) is not None:
            # Caught here, before importlib.metadata fails on it with an
            # unhelpful "'NoneType' object has no attribute 'group'".
            dist = repr(dist_name) if dist_name else "unknown"
            p.status = "failed"
            p.error = (f"malformed value {ep.value!r} of entry point {ep.name!r} (distribution "
                       f"{dist}): {problem}; expected 'module:attribute', e.g. "
                       f"'{ep.name} = my_plugin:family'")
            p.exc = ValueError(p.error)
            self._warn(p)
        return p

    def _resolve_conflicts(self) -> None:
        by_name: dict[str, list[_Provider]] = {}
        for p in self._providers + self._local:
            if p.status == "ok":   # not disabled, and a valid name
                by_name.setdefault(p.family_name, []).append(p)
        for name, ps in by_name.items():
            if len(ps) < 2:
                continue
            for p in ps:
                others = "; ".join(o.describe() for o in ps if o is not p)
                p.status = "conflict"
                p.error = (f"family {name!r} is also provided by {others}; none is used. "
                           f"Uninstall all but one, or disable the others, e.g. "
                           f"{ENV_DENY}='<distribution>:{name}'")
            self._warn_conflict(name, ps)

    @staticmethod
    def _warn_conflict(name: str, ps: list[_Provider]) -> None:
        warnings.warn(f"kernelzoo: model family {name!r} is provided by "
                      f"{' and by '.join(p.describe() for p in ps)}; none of them is used",
                      PluginWarning, stacklevel=5)

    @staticmethod
    def _warn(p: _Provider) -> None:
        warnings.warn(f"kernelzoo: plugin {p.describe()} {p.status}: {p.error}",
                      PluginWarning, stacklevel=5)

    # -- loading (imports one plugin module)

    def _load(self, p: _Provider) -> None:
        with self._lock:
            if p.loaded or p.status != "ok" or p.entry_point is None:
                return
            # Importing the plugin and calling its factory run third-party
            # code: whatever it raises (sys.exit() included) or prints is
            # kept away from the caller; see _call_plugin.
            failure = None
            with _SigintWatch() as watch, _captured_output() as output:
                try:
                    family = self._load_family(p)
                except BaseException as e:
                    if watch.real_interrupt(e):
                        raise
                    failure = e
            printed = output.getvalue()
            p.loaded = True
            if failure is not None:
                p.status, p.exc = "failed", failure
                p.error = _describe_exception(failure)
                if printed.strip():
                    p.error += f" (it printed while loading: {_condense_output(printed)})"
                self._warn(p)
                return
            if printed:
                # A plugin that loads but talks: its text goes to stderr,
                # never into the caller's stdout (`kernelzoo models --json`).
                try:
                    sys.stderr.write(printed)
                except Exception:
                    pass
            if family.api_version not in SUPPORTED_API_VERSIONS:
                p.status = "incompatible"
                p.error = _incompatible_message(family)
                self._warn(p)
                return
            p.family = family

    @staticmethod
    def _load_family(p: _Provider) -> ModelFamily:
        obj = p.entry_point.load()
        family = obj if isinstance(obj, ModelFamily) else None
        if family is None and callable(obj) and not isinstance(obj, type):
            family = obj()
        if not isinstance(family, ModelFamily):
            got = obj if family is None else family
            raise TypeError(f"entry point yields {type(got).__name__} {got!r:.80}, "
                            f"not a kernelzoo.ModelFamily (or a zero-argument "
                            f"callable returning one)")
        if family.name != p.family_name:
            raise ValueError(f"entry point {p.family_name!r} yields a family named "
                             f"{family.name!r}; the names must match")
        return family

    # -- lookups

    def providers(self) -> list[_Provider]:
        self._discover()
        return self._providers + self._local

    def candidates(self, family_name: str) -> list[_Provider]:
        return [p for p in self.providers() if p.family_name == family_name]

    def family(self, name: str) -> ModelFamily:
        """The usable family ``name``, importing its plugin if needed."""
        with self._lock:
            ps = self.candidates(name)
            if not ps:
                raise UnknownModelError(self._unknown_message(name, family=True))
            live = [p for p in ps if p.status != "disabled"]
            if not live:
                p = ps[0]
                raise PluginError(f"model family {name!r} from {p.describe()} is disabled: "
                                  f"{p.error}")
            if len(live) > 1 or live[0].status == "conflict":
                raise PluginError(
                    f"model family {name!r} is provided by more than one source: "
                    f"{'; '.join(p.describe() for p in live)}. None of them is used; uninstall "
                    f"one, or choose one with {ENV_ALLOW} or {ENV_DENY}")
            p = live[0]
            self._load(p)
            if p.status == "ok":
                return p.family
            if p.status == "incompatible":
                raise PluginError(f"model family {name!r} from {p.describe()} is incompatible: "
                                  f"{p.error}")
            raise PluginError(f"model family {name!r} could not be loaded from {p.describe()}: "
                              f"{p.error}") from p.exc

    def usable_families(self, may_match: Callable[[str], bool] = lambda n: True):
        out = []
        for p in self.providers():
            if p.status == "ok" and may_match(p.family_name):
                self._load(p)
                if p.status == "ok":
                    out.append(p.family)
        return out

    def all_model_names(self) -> list[str]:
        return [m for f in self.usable_families() for m in f.model_names()]

    def _unknown_message(self, name: str, family: bool = False) -> str:
        what = "model family" if family else "model"
        pool = self.all_model_names() + [f.name for f in self.usable_families()]
        close = difflib.get_close_matches(name.lower(), pool, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        return (f"unknown {what} {name!r}{hint} (kernelzoo.list_models() lists the models; "
                f"`kernelzoo plugins` shows every plugin and its status)")

    # -- mutation

    def register(self, family: ModelFamily) -> None:
        if not isinstance(family, ModelFamily):
            raise TypeError(f"register_family expects a kernelzoo.ModelFamily, got "
                            f"{type(family).__name__}")
        if family.api_version not in SUPPORTED_API_VERSIONS:
            raise ValueError(_incompatible_message(family))
        with self._lock:
            existing = [p for p in self.candidates(family.name) if p.status != "disabled"]
            if existing:
                raise ValueError(
                    f"register_family: a model family named {family.name!r} already exists "
                    f"({'; '.join(p.describe() for p in existing)}); families are never "
                    f"replaced. Use another name" +
                    (", or kernelzoo.registry.unregister_family() first"
                     if all(p.entry_point is None for p in existing) else ""))
            self._local.append(_Provider(family.name, None, None, family=family, loaded=True))

    def unregister(self, name: str) -> ModelFamily:
        with self._lock:
            for p in self._local:
                if p.family_name == name:
                    self._local.remove(p)
                    return p.family
        if self.candidates(name):
            raise ValueError(f"unregister_family: {name!r} comes from an entry point; only "
                             f"families added with register_family can be removed (disable "
                             f"an entry point with {ENV_DENY})")
        raise UnknownModelError(f"unregister_family: no family named {name!r} was registered")

    def refresh(self) -> None:
        with self._lock:
            self._discovered = False
            self._providers = []
            for p in self._local:
                p.status, p.error = "ok", None
            self._discover()


def _incompatible_message(family: ModelFamily) -> str:
    supported = ", ".join(map(str, SUPPORTED_API_VERSIONS))
    return (f"family {family.name!r} was written for kernelzoo plugin API version "
            f"{family.api_version}; kernelzoo {_kernelzoo_version()} supports API version(s) "
            f"{supported}. Install a version of the plugin written for API version "
            f"{SUPPORTED_API_VERSIONS[-1]}, or a kernelzoo that supports version "
            f"{family.api_version}")


_REGISTRY = _Registry()


def _split(name: str) -> tuple[str, str]:
    if not isinstance(name, str):
        raise TypeError(f"model names are strings, got {type(name).__name__}")
    family, sep, preset = name.partition("-")
    return family, preset if sep else ""


# --------------------------------------------------------------------------- public API


def register_family(family: ModelFamily) -> ModelFamily:
    """Registers ``family`` in this process (notebooks, tests).

    Raises ``ValueError`` if a family of that name already exists (from an
    entry point or an earlier call): nothing is ever replaced. Returns
    ``family``, so it can decorate a factory's result. Undo with
    :func:`unregister_family`.
    """
    _REGISTRY.register(family)
    return family


def unregister_family(name: str) -> ModelFamily:
    """Removes a family added with :func:`register_family` and returns it."""
    return _REGISTRY.unregister(name)


def get_family(name: str) -> ModelFamily:
    """The family ``name`` (imports its plugin, and only it).

    Raises :class:`UnknownModelError` for an unknown name and
    :class:`PluginError` when the family failed to load, conflicts, is
    incompatible or is disabled.
    """
    return _REGISTRY.family(name)


def list_families() -> list[str]:
    """Names of the usable families (imports every enabled plugin)."""
    return sorted({f.name for f in _REGISTRY.usable_families()}, key=_natural_key)


def list_models(pattern: str | Iterable[str] = "*") -> list[str]:
    """Model names matching ``pattern``, naturally sorted (``x2`` before ``x10``).

    ``pattern`` is a shell-style wildcard (``*``, ``?``, ``[seq]``), matched
    case-insensitively, or a list of them (a name matching any is listed).
    Only the plugins whose family could match are imported (``espcn-*``
    imports only espcn's).
    """
    try:
        patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    except TypeError:
        patterns = [pattern]
    if not all(isinstance(p, str) for p in patterns):
        raise TypeError("list_models: pattern must be a string or a list of strings")
    patterns = [p.lower() for p in patterns]

    def may_match(family: str) -> bool:
        head = family + "-"
        for p in patterns:
            literal = re.split(r"[*?\[]", p, maxsplit=1)[0]
            if head.startswith(literal) or literal.startswith(head):
                return True
        return False

    names = {m for f in _REGISTRY.usable_families(may_match) for m in f.model_names()
             if any(fnmatch.fnmatchcase(m, p) for p in patterns)}
    return sorted(names, key=_natural_key)


def model_config(name: str, **overrides) -> Any:
    """The config :func:`create_model` would build ``name`` from."""
    family, preset = _resolve(name)
    return family.config(preset, **overrides)


def create_model(name: str, *, pretrained=None, **overrides):
    """Builds model ``name`` (``<family>-<preset>``) with ``overrides`` applied.

    Only the plugin of ``name``'s family is imported. Raises
    :class:`UnknownModelError` (suggesting close names) for an unknown name,
    ``TypeError`` (listing the valid keys) for an unknown override, and
    :class:`PluginError` when the family cannot be used.

    ``pretrained``: a checkpoint folder (``config.json`` and weights) to load
    into the model through the family's ``load_pretrained`` hook
    (``ValueError`` for a family without one, or from the family for a folder
    that does not fit; ``FileNotFoundError`` for a missing folder).
    """
    family, preset = _resolve(name)
    return family.create(preset, pretrained=pretrained, **overrides)


def _checkpoint_folder(path) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"pretrained: expected the path of a checkpoint folder, got "
                        f"{type(path).__name__}")
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"pretrained: {path!r} is not a folder (a checkpoint folder "
                                f"holds config.json and the weights)")
    return path


def from_pretrained(path, **overrides):
    """Builds the model saved in the checkpoint folder ``path`` and loads its weights.

    The family is the one whose ``model_types`` holds ``config.json``'s
    ``model_type`` (every enabled plugin is imported to find it); its
    ``from_pretrained(path, **overrides)`` hook builds the model. Raises
    ``FileNotFoundError`` without ``config.json``, ``ValueError`` for a
    config without ``model_type``, and :class:`UnknownModelError` when no
    family handles the model type.
    """
    import json

    path = _checkpoint_folder(path)
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"from_pretrained: {path!r} has no config.json")
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"from_pretrained: cannot read {config_path!r}: {e}") from e
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if not isinstance(model_type, str) or not model_type:
        raise ValueError(f"from_pretrained: {config_path!r} has no \"model_type\" naming the "
                         f"architecture")
    families = [f for f in _REGISTRY.usable_families() if model_type in f.model_types]
    if not families:
        known = sorted({t for f in _REGISTRY.usable_families() for t in f.model_types})
        raise UnknownModelError(
            f"from_pretrained: no model family handles model_type {model_type!r} of "
            f"{config_path!r}; families handle: {', '.join(known) or 'none'}")
    if len(families) > 1:
        raise PluginError(f"from_pretrained: model_type {model_type!r} is handled by more than "
                          f"one family: {', '.join(f.name for f in families)}; use "
                          f"create_model('<family>-<preset>', pretrained=...)")
    family = families[0]
    model = _call_plugin(f"family {family.name!r}: from_pretrained({path!r})",
                         family.from_pretrained, path, **overrides)
    import torch

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"family {family.name!r}: from_pretrained returned "
                        f"{type(model).__name__}, not a torch.nn.Module")
    return model


def _resolve(name: str) -> tuple[ModelFamily, str]:
    fam, preset = _split(name)
    if not _REGISTRY.candidates(fam):
        raise UnknownModelError(_REGISTRY._unknown_message(name))
    family = _REGISTRY.family(fam)
    if not preset:
        raise UnknownModelError(
            f"{name!r} is a model family, not a model; model names are <family>-<preset>: "
            f"{', '.join(family.model_names())}")
    return family, preset


def list_plugins() -> list[PluginInfo]:
    """Every discovered entry point (and in-process family) with its status.

    Loads each enabled, non-conflicting plugin, so that import failures and
    incompatible API versions show up. Sorted by family, then distribution.
    """
    out = []
    for p in _REGISTRY.providers():
        _REGISTRY._load(p)
        out.append(p.info())
    return sorted(out, key=lambda i: (_natural_key(i.family), i.distribution or ""))


def refresh() -> None:
    """Forgets the cached discovery and reads the entry points again (after
    installing a plugin into a running process, or changing the environment
    variables). In-process families are kept."""
    _REGISTRY.refresh()
