"""The registry's public API on in-process families: names, patterns, natural
sorting, presets and overrides, errors; and check_family catching defects."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import kernelzoo
import kernelzoo.registry as registry
from kernelzoo import ModelFamily
from kernelzoo.registry import UnknownModelError
from kernelzoo.testing import FamilyCheckError, check_family

from _plugin_helpers import fresh_registry  # noqa: F401  (fixture)


@dataclasses.dataclass
class MLPConfig:
    features: int = 4
    hidden: int = 8
    bias: bool = True


class MLP(nn.Module):
    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        self.fc1 = nn.Linear(config.features, config.hidden, bias=config.bias)
        self.fc2 = nn.Linear(config.hidden, 1, bias=config.bias)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def mlp_inputs(model, batch_size=2):
    return (torch.randn(batch_size, model.config.features),)


def mlp_family(name="mlp", **kw) -> ModelFamily:
    presets = {"test": MLPConfig(), "s2": MLPConfig(hidden=16), "s10": MLPConfig(hidden=32),
               "s1": MLPConfig(hidden=2), "wide-x2": MLPConfig(hidden=64)}
    return ModelFamily(name=name, build=MLP, presets=kw.pop("presets", presets),
                       example_inputs=mlp_inputs, **kw)


@pytest.fixture
def mlp(fresh_registry):
    return kernelzoo.register_family(mlp_family())


# --------------------------------------------------------------------------- names


def test_list_models_sorts_naturally(mlp):
    assert kernelzoo.list_models("mlp-*") == [
        "mlp-s1", "mlp-s2", "mlp-s10", "mlp-test", "mlp-wide-x2"]


@pytest.mark.parametrize("pattern, expected", [
    ("mlp-s?", ["mlp-s1", "mlp-s2"]),
    ("mlp-s[12]*", ["mlp-s1", "mlp-s2", "mlp-s10"]),
    ("MLP-S1*", ["mlp-s1", "mlp-s10"]),                  # case-insensitive
    ("*-x2", ["mlp-wide-x2"]),
    (["mlp-test", "mlp-s1"], ["mlp-s1", "mlp-test"]),   # a list: any of them
    ("mlp-s1", ["mlp-s1"]),
    ("mlp", []),
    ("nothing*", []),
])
def test_list_models_patterns(mlp, pattern, expected):
    got = [m for m in kernelzoo.list_models(pattern) if m.startswith("mlp")]
    assert got == expected


def test_list_models_spans_families(mlp):
    every = kernelzoo.list_models()
    others = [m for f in kernelzoo.list_families() if f != "mlp"
              for m in kernelzoo.get_family(f).model_names()]
    assert others and set(every) == set(others) | set(mlp.model_names())
    assert every == sorted(every, key=registry._natural_key)
    assert kernelzoo.list_models("*x2*") == sorted(
        [m for m in every if "x2" in m], key=registry._natural_key)
    assert "mlp-wide-x2" in kernelzoo.list_models("*x2*")
    with pytest.raises(TypeError, match="pattern must be a string"):
        kernelzoo.list_models(3)


def test_list_families(mlp):
    builtin = sorted(p.family for p in kernelzoo.list_plugins() if p.builtin)
    assert builtin and kernelzoo.list_families() == sorted(builtin + ["mlp"])


# --------------------------------------------------------------------------- create_model


def test_create_model_builds_the_preset_with_overrides(mlp):
    m = kernelzoo.create_model("mlp-s10")
    assert isinstance(m, MLP) and m.fc1.out_features == 32 and m.fc1.bias is not None
    m = kernelzoo.create_model("mlp-s10", hidden=3, bias=False)
    assert m.fc1.out_features == 3 and m.fc1.bias is None
    # Overrides never leak into the preset.
    assert mlp.presets["s10"] == MLPConfig(hidden=32)
    assert registry.model_config("mlp-s10", hidden=5) == MLPConfig(hidden=5)
    assert kernelzoo.create_model("mlp-wide-x2").fc1.out_features == 64


def test_dict_presets_call_build_with_keywords(fresh_registry):
    seen = []

    def build(width, depth=1):
        seen.append((width, depth))
        return nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)])

    kernelzoo.register_family(ModelFamily(
        name="seq", build=build, presets={"a": {"width": 3}, "test": {"width": 2, "depth": 2}},
        example_inputs=lambda m, batch_size=2: (torch.randn(batch_size, m[0].in_features),)))
    kernelzoo.create_model("seq-a")
    kernelzoo.create_model("seq-a", depth=3)
    kernelzoo.create_model("seq-test", width=5)
    assert seen == [(3, 1), (3, 3), (5, 2)]
    with pytest.raises(TypeError, match=r"seq-a: unknown override 'height'; valid keys: depth, "
                                        r"width$"):
        kernelzoo.create_model("seq-a", height=2)


def test_unknown_override_lists_valid_keys(mlp):
    with pytest.raises(TypeError) as exc:
        kernelzoo.create_model("mlp-s2", hiden=3, bais=False)
    assert str(exc.value) == ("mlp-s2: unknown overrides 'hiden', 'bais'; valid keys: "
                              "features, hidden, bias")


def test_unknown_model_suggests_close_names(mlp):
    with pytest.raises(UnknownModelError) as exc:
        kernelzoo.create_model("mlp-s3")
    msg = str(exc.value)
    assert "family 'mlp' has no preset 's3'" in msg
    assert "did you mean mlp-s1 or mlp-s2" in msg or "did you mean mlp-s2 or mlp-s1" in msg
    with pytest.raises(UnknownModelError, match="unknown model 'mpl-s10'; did you mean "
                                                "mlp-s10"):
        kernelzoo.create_model("mpl-s10")
    with pytest.raises(UnknownModelError, match="^unknown model 'zzz' \\(kernelzoo.list_models"):
        kernelzoo.create_model("zzz")
    with pytest.raises(UnknownModelError, match="'mlp' is a model family, not a model; model "
                                                "names are <family>-<preset>: mlp-s1, mlp-s2"):
        kernelzoo.create_model("mlp")
    with pytest.raises(TypeError, match="model names are strings"):
        kernelzoo.create_model(None)


def test_get_family(mlp):
    assert kernelzoo.get_family("mlp") is mlp
    with pytest.raises(UnknownModelError, match="unknown model family 'mpl'; did you mean mlp"):
        kernelzoo.get_family("mpl")


def test_build_must_return_a_module(fresh_registry):
    kernelzoo.register_family(ModelFamily(name="notmod", build=lambda: "x",
                                          presets={"test": {}}, example_inputs=mlp_inputs))
    with pytest.raises(TypeError, match="build returned str, not a torch.nn.Module"):
        kernelzoo.create_model("notmod-test")


# --------------------------------------------------------------------------- ModelFamily


@pytest.mark.parametrize("kwargs, error, match", [
    ({"name": "my-family"}, ValueError, "invalid family name 'my-family'"),
    ({"name": "Upper"}, ValueError, "invalid family name 'Upper'"),
    ({"name": ""}, ValueError, "invalid family name ''"),
    ({"presets": {}}, TypeError, "presets must be a non-empty mapping"),
    ({"presets": {"Big": MLPConfig()}}, ValueError, "invalid preset name 'Big'"),
    ({"presets": {"a b": MLPConfig()}}, ValueError, "invalid preset name 'a b'"),
    ({"presets": {"a": MLPConfig}}, TypeError, "preset 'a': a config is a dataclass instance"),
    ({"presets": {"a": [1]}}, TypeError, "got list"),
    ({"build": None}, TypeError, "build must be callable"),
    ({"example_inputs": 3}, TypeError, "example_inputs must be callable"),
    ({"api_version": "1"}, TypeError, "api_version must be an int"),
    ({"small": ("huge",)}, TypeError, "small names unknown presets \\['huge'\\]"),
    ({"train": "yes"}, TypeError, "train must be callable or None"),
    ({"load_pretrained": 1}, TypeError, "load_pretrained must be callable or None"),
    ({"from_pretrained": "x"}, TypeError, "from_pretrained must be callable or None"),
    ({"model_types": ("mlp",)}, TypeError, "model_types needs a from_pretrained hook"),
    ({"model_types": ("",), "from_pretrained": lambda p: None}, TypeError,
     "model_types must be non-empty strings"),
])
def test_model_family_validates(kwargs, error, match):
    base = dict(name="ok", build=MLP, presets={"test": MLPConfig()}, example_inputs=mlp_inputs)
    with pytest.raises(error, match=match):
        ModelFamily(**{**base, **kwargs})


def test_model_family_copies_presets_and_finds_small_ones():
    presets = {"test": MLPConfig(), "big": MLPConfig(hidden=512), "mid": MLPConfig(hidden=16),
               "x-test": MLPConfig(), "attest": MLPConfig()}
    fam = ModelFamily(name="f", build=MLP, presets=presets, example_inputs=mlp_inputs,
                      small=["mid"])
    presets["evil"] = MLPConfig()
    assert "evil" not in fam.presets
    assert fam.small_presets == ["mid", "test", "x-test"]
    assert fam.api_version == registry.API_VERSION
    assert fam.model_names() == ["f-attest", "f-big", "f-mid", "f-test", "f-x-test"]


# --------------------------------------------------------------------------- check_family


def test_check_family_passes_a_good_family():
    assert check_family(mlp_family(), compile=False) == ["mlp-test"]
    assert check_family(mlp_family(small=("s1",)), presets=["s1", "s2"], compile=False) == \
        ["mlp-s1", "mlp-s2"]


class Counting(MLP):
    built = 0

    def __init__(self, config):
        super().__init__(config)
        Counting.built += 1


@pytest.mark.parametrize("kwargs, error, match", [
    ({"batch_size": 0}, ValueError, "batch_size must be at least 1, got 0: a batch of 0 "
                                    "samples would test nothing"),
    ({"batch_size": -2}, ValueError, "batch_size must be at least 1, got -2"),
    ({"batch_size": True}, TypeError, "batch_size must be an int, got bool True"),
    ({"batch_size": 2.0}, TypeError, "batch_size must be an int, got float 2.0"),
    ({"batch_size": "2"}, TypeError, "batch_size must be an int, got str '2'"),
    ({"batch_size": None}, TypeError, "batch_size must be an int, got NoneType"),
    ({"presets": []}, ValueError, "presets=\\[\\] checks nothing"),
    ({"presets": ["tset"]}, UnknownModelError, "family 'mlp' has no preset 'tset'; did you "
                                               "mean mlp-test"),
    ({"seed": "0"}, TypeError, "seed must be an int"),
    ({"device": "gpu:0"}, ValueError, "invalid device 'gpu:0'"),
])
def test_check_family_rejects_arguments_that_test_nothing(kwargs, error, match):
    Counting.built = 0
    fam = ModelFamily(name="mlp", build=Counting, presets={"test": MLPConfig()},
                      example_inputs=mlp_inputs)
    with pytest.raises(error, match=match):
        check_family(fam, compile=False, **kwargs)
    assert Counting.built == 0          # refused before building anything


def test_check_family_takes_one_preset_name_and_large_batches():
    fam = mlp_family(small=("s1",))
    assert check_family(fam, presets="s2", compile=False, batch_size=5) == ["mlp-s2"]
    import numpy as np

    assert check_family(fam, presets=("s1",), compile=False, batch_size=np.int64(1)) == \
        ["mlp-s1"]


def test_check_family_needs_a_small_preset():
    fam = mlp_family(presets={"big": MLPConfig(hidden=100)})
    with pytest.raises(FamilyCheckError, match="no small preset to test: add a tiny "
                                               "'<family>-test' preset"):
        check_family(fam)


class Unused(MLP):
    def __init__(self, config):
        super().__init__(config)
        self.spare = nn.Linear(2, 2)


class Unsaved(MLP):
    """Keeps a random tensor outside the state dict: reloading cannot reproduce it."""

    def __init__(self, config):
        super().__init__(config)
        self.scale = torch.rand(1) + 0.5

    def forward(self, x):
        return super().forward(x) * self.scale


class NaNs(MLP):
    def forward(self, x):
        return super().forward(x) / 0 * 0


class GraphBreak(MLP):
    def forward(self, x):
        y = super().forward(x)
        if y.sum().item() > 1e9:   # data-dependent control flow: a graph break
            return y * 2
        return y


@pytest.mark.parametrize("cls, match", [
    (Unused, "mlp-test: backward: no gradient reached spare.weight, spare.bias"),
    (Unsaved, "mlp-test: state-dict round trip: output 0 differs"),
    (NaNs, "mlp-test: forward: output 0 has non-finite values"),
])
def test_check_family_catches_defects(cls, match):
    fam = ModelFamily(name="mlp", build=cls, presets={"test": MLPConfig()},
                      example_inputs=mlp_inputs)
    with pytest.raises(FamilyCheckError, match=match):
        check_family(fam, compile=False)


def test_check_family_catches_graph_breaks():
    fam = ModelFamily(name="mlp", build=GraphBreak, presets={"test": MLPConfig()},
                      example_inputs=mlp_inputs)
    assert check_family(fam, compile=False) == ["mlp-test"]
    with pytest.raises(FamilyCheckError, match="torch.compile\\(fullgraph=True, "
                                               "backend='eager'\\) raised"):
        check_family(fam, compile_backend="eager")
    assert check_family(fam, fullgraph=False, compile_backend="eager") == ["mlp-test"]


def test_check_family_compares_integer_outputs_exactly():
    from kernelzoo.testing import _compare
    labels = torch.tensor([3, 90001])
    _compare("torch.compile", [torch.tensor([0.5001])], [torch.tensor([0.5])], rtol=1e-3, atol=0)
    with pytest.raises(FamilyCheckError, match="torch.compile: output 1 differs"):
        # within rtol 1e-4 of 90001, but a different integer
        _compare("torch.compile", [torch.ones(1), labels + torch.tensor([0, 1])],
                 [torch.ones(1), labels], rtol=1e-4, atol=1e-5)


def test_check_family_catches_bad_example_inputs_and_configs():
    fam = ModelFamily(name="mlp", build=MLP, presets={"test": MLPConfig()},
                      example_inputs=lambda m, batch_size=2: torch.randn(batch_size, 4))
    with pytest.raises(FamilyCheckError, match="example_inputs must return a tuple"):
        check_family(fam, compile=False)
    fam = ModelFamily(name="mlp", build=lambda width: nn.Linear(width, 1),
                      presets={"test": {"width": 4}, "bad": {"depth": 3}},
                      example_inputs=lambda m, batch_size=2: (torch.randn(batch_size, 4),))
    with pytest.raises(FamilyCheckError, match="mlp-bad: its config does not resolve"):
        check_family(fam, compile=False)


class Detectorish(nn.Module):
    """Data-dependent like a detector: a compilable head, then a Python
    decision on values (a graph break), and a list of dicts with an integer
    output."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        self.head = MLP(config)
        self.spare = nn.Identity()      # never called

    def forward(self, x):
        y = self.head(x)
        if y.sum().item() > 1e9:        # graph break
            y = y * 2
        return [{"scores": y[i], "labels": (y[i] > 0).long()} for i in range(len(y))]


def detectorish_family(**kw) -> ModelFamily:
    return ModelFamily(name="det", build=Detectorish, presets={"test": MLPConfig()},
                       example_inputs=mlp_inputs, **kw)


def test_compile_modules_compiles_submodules_instead_of_the_model():
    with pytest.raises(FamilyCheckError, match="torch.compile\\(fullgraph=True, "
                                               "backend='eager'\\) raised"):
        check_family(detectorish_family(), compile_backend="eager")
    fam = detectorish_family(compile_modules=("head.fc1", "head.fc2"))
    assert fam.compile_modules == ("head.fc1", "head.fc2")
    assert check_family(fam, compile_backend="eager") == ["det-test"]
    fam = detectorish_family(compile_modules="head")
    assert fam.compile_modules == ("head",)
    assert check_family(fam, compile_backend="eager") == ["det-test"]
    assert check_family(fam) == ["det-test"]                     # inductor


def test_compile_modules_errors():
    with pytest.raises(FamilyCheckError, match="det-test: compile_modules: the model has no "
                                               "sub-module 'nope'"):
        check_family(detectorish_family(compile_modules="nope"), compile_backend="eager")
    with pytest.raises(FamilyCheckError, match="no graph was compiled for sub-module\\(s\\) "
                                               "spare \\(does the forward call them\\?\\)"):
        check_family(detectorish_family(compile_modules=("head", "spare")),
                     compile_backend="eager")
    with pytest.raises(TypeError, match="compile_modules must be dotted sub-module names"):
        detectorish_family(compile_modules=("head", ""))
    with pytest.raises(TypeError, match="compile_modules: 'head.fc1' is inside 'head', which is "
                                        "compiled with everything it calls"):
        detectorish_family(compile_modules=("head.fc1", "head"))


class UnsavedLabels(Detectorish):
    """Labels from a random threshold kept outside the state dict: only the
    integer outputs differ after reloading."""

    def __init__(self, config):
        super().__init__(config)
        self.threshold = torch.randn(())

    def forward(self, x):
        out = super().forward(x)
        for d in out:
            d["labels"] = (d["scores"] > self.threshold).long() + torch.randint(0, 1000, ())
        return out


def test_integer_outputs_are_compared():
    fam = ModelFamily(name="det", build=UnsavedLabels, presets={"test": MLPConfig()},
                      example_inputs=mlp_inputs)
    with pytest.raises(FamilyCheckError, match="det-test: state-dict round trip: output 1 "
                                               "differs"):
        check_family(fam, compile=False)


# --------------------------------------------------------------------------- pretrained hooks


def _mlp_checkpoint(tmp_path, model, model_type="mlp"):
    import json

    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": model_type, **dataclasses.asdict(model.config)}))
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    return tmp_path


def _mlp_load(model, path):
    import json

    config = json.loads((path_ := __import__("pathlib").Path(path) / "config.json").read_text())
    if config["hidden"] != model.config.hidden:
        raise ValueError(f"{path_}: hidden is {config['hidden']}, the preset's "
                         f"{model.config.hidden}")
    model.load_state_dict(torch.load(f"{path}/weights.pt", weights_only=True))


def _mlp_from(path, **overrides):
    import json

    config = json.loads(open(f"{path}/config.json").read())
    config.pop("model_type")
    model = MLP(MLPConfig(**{**config, **overrides}))
    _mlp_load(model, path)
    return model


@pytest.fixture
def pretrained_mlp(fresh_registry):
    return kernelzoo.register_family(mlp_family(load_pretrained=_mlp_load,
                                                from_pretrained=_mlp_from, model_types=("mlp",)))


def test_create_model_pretrained_calls_the_hook(pretrained_mlp, tmp_path):
    torch.manual_seed(1)
    src = MLP(MLPConfig(hidden=16))
    path = _mlp_checkpoint(tmp_path, src)
    torch.manual_seed(2)
    model = kernelzoo.create_model("mlp-s2", pretrained=path)
    x = torch.randn(3, 4)
    torch.testing.assert_close(model(x), src(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="hidden is 16, the preset's 8"):
        kernelzoo.create_model("mlp-test", pretrained=path)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        kernelzoo.create_model("mlp-s2", pretrained=tmp_path / "nowhere")


def test_from_pretrained_picks_the_family_by_model_type(pretrained_mlp, tmp_path):
    torch.manual_seed(1)
    src = MLP(MLPConfig(hidden=16))
    model = kernelzoo.from_pretrained(_mlp_checkpoint(tmp_path, src))
    assert isinstance(model, MLP) and model.config.hidden == 16
    x = torch.randn(3, 4)
    torch.testing.assert_close(model(x), src(x), rtol=0, atol=0)


def test_from_pretrained_errors(pretrained_mlp, tmp_path):
    import json

    with pytest.raises(FileNotFoundError, match="has no config.json"):
        kernelzoo.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"hidden": 3}))
    with pytest.raises(ValueError, match='has no "model_type"'):
        kernelzoo.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "nosuchtype"}))
    with pytest.raises(UnknownModelError, match="no model family handles model_type "
                                                "'nosuchtype'.*families handle: .*mlp"):
        kernelzoo.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read"):
        kernelzoo.from_pretrained(tmp_path)


def test_pretrained_needs_the_hook(mlp, tmp_path):
    with pytest.raises(ValueError, match="family 'mlp' cannot load pretrained weights"):
        kernelzoo.create_model("mlp-test", pretrained=tmp_path)
