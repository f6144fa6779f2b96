"""Architectures: built-ins, the head/features contract, config validation, registry, entry points."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from unlearning.architectures import (
    ModelSpec,
    architecture_spec,
    build_model,
    list_architectures,
    model_spec,
    register_architecture,
    unregister_architecture,
)
from unlearning.architectures.registry import ArchConfig, IOSpec, bounded_int
from unlearning.checkpoints import load_checkpoint, save_checkpoint
from unlearning.errors import ArchitectureError, InvalidInputError

TT = {"vocab_size": 50, "max_len": 16, "d_model": 32, "n_layers": 2, "n_heads": 4}

BUILTINS: list[tuple[dict[str, Any], torch.Tensor, tuple[int, ...]]] = [
    (
        {"name": "mlp", "config": {"input_dim": 8, "hidden_dims": [16, 12], "num_classes": 3}},
        torch.randn(5, 8),
        (5, 3),
    ),
    (
        {"name": "mlp", "config": {"input_dim": 8, "hidden_dims": [], "num_classes": 3}},
        torch.randn(5, 8),
        (5, 3),
    ),
    (
        {"name": "lenet", "config": {"in_channels": 1, "image_size": 8, "num_classes": 10}},
        torch.randn(4, 1, 8, 8),
        (4, 10),
    ),
    (
        {"name": "lenet", "config": {"in_channels": 1, "image_size": 28, "num_classes": 10}},
        torch.randn(4, 1, 28, 28),
        (4, 10),
    ),
    (
        {"name": "lenet", "config": {"in_channels": 3, "image_size": 32, "num_classes": 7}},
        torch.randn(4, 3, 32, 32),
        (4, 7),
    ),
    (
        {"name": "resnet18", "config": {"in_channels": 3, "num_classes": 10}},
        torch.randn(2, 3, 32, 32),
        (2, 10),
    ),
    ({"name": "tiny-transformer", "config": TT}, torch.randint(0, 50, (3, 10)), (3, 10, 50)),
]


@pytest.mark.parametrize(
    ("spec", "x", "shape"), BUILTINS, ids=lambda v: v["name"] if isinstance(v, dict) else ""
)
def test_builtin_forward_and_head_contract(
    spec: dict[str, Any], x: torch.Tensor, shape: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    model = build_model(spec)
    assert not model.training  # built in eval mode
    with torch.no_grad():
        out = model(x)
        assert tuple(out.shape) == shape
        assert isinstance(model.head, nn.Linear)
        assert torch.allclose(model.head(model.features(x)), out, atol=1e-6)
    # The head is the last layer: its output dimension is the number of classes / vocabulary.
    assert model.head.out_features == shape[-1] == model.spec.num_classes
    assert model_spec(model) is model.spec
    assert model.spec.name == spec["name"]


def test_specs_describe_inputs() -> None:
    lenet = build_model({"name": "lenet", "config": {"in_channels": 1, "image_size": 8, "num_classes": 10}})
    assert lenet.spec.task == "classification"
    assert lenet.spec.input_kind == "float"
    assert lenet.spec.input_shape == (1, 8, 8)
    assert lenet.spec.max_len is None
    lm = build_model({"name": "tiny-transformer", "config": TT})
    assert (lm.spec.task, lm.spec.input_kind, lm.spec.num_classes, lm.spec.max_len) == (
        "causal-lm",
        "tokens",
        50,
        16,
    )
    # Defaults are written into the recorded config, so it rebuilds the same model.
    assert lm.spec.config["dropout"] == 0.0
    assert build_model(lm.spec).spec == lm.spec


def test_architecture_spec_without_building() -> None:
    spec = architecture_spec(
        {"name": "mlp", "config": {"input_dim": 4, "hidden_dims": [3], "num_classes": 2}}
    )
    assert isinstance(spec, ModelSpec)
    assert spec.input_shape == (4,)
    assert spec.num_classes == 2


def test_resnet_accepts_other_image_sizes() -> None:
    model = build_model({"name": "resnet18", "config": {"in_channels": 1, "num_classes": 4}})
    assert model.spec.input_shape == (1, -1, -1)
    with torch.no_grad():
        assert model(torch.randn(2, 1, 16, 16)).shape == (2, 4)


def test_transformer_is_causal_and_checks_length() -> None:
    torch.manual_seed(0)
    model = build_model({"name": "tiny-transformer", "config": TT})
    ids = torch.randint(0, 50, (2, 8))
    changed = ids.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 50
    with torch.no_grad():
        a, b = model(ids), model(changed)
    # Changing the last token must not change earlier positions' logits.
    assert torch.allclose(a[:, :-1], b[:, :-1], atol=1e-6)
    assert not torch.allclose(a[:, -1], b[:, -1])
    with pytest.raises(InvalidInputError, match="max_len 16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_meta_device_build_allocates_nothing() -> None:
    model = build_model({"name": "resnet18", "config": {"in_channels": 3, "num_classes": 10}}, device="meta")
    assert all(p.is_meta for p in model.parameters())
    assert model.spec.num_classes == 10


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"name": "mlp", "config": {"input_dim": 0, "hidden_dims": [4], "num_classes": 2}}, "input_dim"),
        ({"name": "mlp", "config": {"input_dim": True, "hidden_dims": [4], "num_classes": 2}}, "input_dim"),
        ({"name": "mlp", "config": {"input_dim": "8", "hidden_dims": [4], "num_classes": 2}}, "input_dim"),
        (
            {"name": "mlp", "config": {"input_dim": 8, "hidden_dims": [4, -1], "num_classes": 2}},
            "hidden_dims.1",
        ),
        ({"name": "mlp", "config": {"input_dim": 8, "hidden_dims": [4]}}, "num_classes"),
        (
            {"name": "mlp", "config": {"input_dim": 8, "hidden_dims": [4], "num_classes": 2, "depth": 3}},
            "depth",
        ),
        ({"name": "lenet", "config": {"in_channels": 1, "image_size": 3, "num_classes": 2}}, "image_size"),
        ({"name": "resnet18", "config": {"in_channels": 3, "num_classes": 10**9}}, "num_classes"),
        ({"name": "tiny-transformer", "config": {**TT, "n_heads": 3}}, "n_heads"),
        ({"name": "tiny-transformer", "config": {**TT, "dropout": 1.5}}, "dropout"),
        ({"name": "mlp", "config": [8, 4]}, "object"),
        ({"name": "mlp", "config": {}, "extra": 1}, "extra"),
        ({"name": "no-such-net", "config": {}}, "no-such-net"),
        ({"name": "hf-causal-lm", "config": {}}, "hf_config"),
    ],
)
def test_bad_configs_name_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ArchitectureError, match=field):
        build_model(spec)


def test_model_spec_requires_a_built_model() -> None:
    with pytest.raises(ArchitectureError, match="build_model"):
        model_spec(nn.Linear(2, 2))


class _ToyConfig(ArchConfig):
    width: bounded_int(64)  # type: ignore[valid-type]


class _Toy(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.head = nn.Linear(width, 2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


def test_register_architecture_decorator_and_duplicates() -> None:
    name = f"toy-{uuid.uuid4().hex[:8]}"

    @register_architecture(
        name,
        task="classification",
        config_model=_ToyConfig,
        describe=lambda c: IOSpec("float", 2, input_shape=(c.width,)),
    )
    def build(cfg: _ToyConfig) -> nn.Module:
        return _Toy(cfg.width)

    try:
        assert name in list_architectures()
        model = build_model({"name": name, "config": {"width": 3}})
        assert model(torch.ones(1, 3)).shape == (1, 2)
        assert model.spec.input_shape == (3,)
        with pytest.raises(ArchitectureError, match="already registered"):
            register_architecture(
                name, task="classification", config_model=_ToyConfig, describe=lambda c: IOSpec("float", 2)
            )(build)
        with pytest.raises(ArchitectureError, match="width"):
            build_model({"name": name, "config": {"width": 0}})
    finally:
        unregister_architecture(name)
    assert name not in list_architectures()


PLUGIN = """
from torch import nn
from unlearning.architectures import Architecture, IOSpec, register_architecture
from unlearning.architectures.registry import ArchConfig, bounded_int


class Cfg(ArchConfig):
    width: bounded_int(64)


class Net(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.head = nn.Linear(width, 3)

    def features(self, x):
        return x

    def forward(self, x):
        return self.head(x)


def describe(cfg):
    return IOSpec("float", 3, input_shape=(cfg.width,))


def register():
    register_architecture("{registers}", task="classification", config_model=Cfg, describe=describe,
                          builder=lambda cfg: Net(cfg.width))


def make():
    return Architecture("{returns}", "classification", Cfg, lambda cfg: Net(cfg.width), describe)


def broken():
    raise RuntimeError("plugin exploded")
"""


def test_entry_point_architectures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tag = uuid.uuid4().hex[:8]
    module = f"toy_arch_plugin_{tag}"
    registers, returns, broken = f"ep-reg-{tag}", f"ep-ret-{tag}", f"ep-broken-{tag}"
    (tmp_path / f"{module}.py").write_text(
        PLUGIN.replace("{registers}", registers).replace("{returns}", returns)
    )
    dist = tmp_path / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        textwrap.dedent(
            f"""\
            [unlearning.architectures]
            {registers} = {module}:register
            {returns} = {module}:make
            {broken} = {module}:broken
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        # Listed before anything is imported: discovery is lazy.
        assert {registers, returns, broken} <= set(list_architectures())
        a = build_model({"name": registers, "config": {"width": 4}})
        assert a(torch.ones(2, 4)).shape == (2, 3)
        b = build_model({"name": returns, "config": {"width": 5}})
        assert b.spec.input_shape == (5,)
        with pytest.raises(ArchitectureError, match="plugin exploded"):
            build_model({"name": broken, "config": {}})
    finally:
        for name in (registers, returns, broken):
            unregister_architecture(name)


# --- Hugging Face extra ---------------------------------------------------------------------

GPT2 = {"model_type": "gpt2", "n_layer": 1, "n_embd": 16, "n_head": 2, "vocab_size": 50, "n_positions": 32}
GPT2_IDS = {"bos_token_id": 0, "eos_token_id": 0}


def _logits(out: Any) -> torch.Tensor:
    return getattr(out, "logits", out)


def test_hf_causal_lm_build_checkpoint_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    spec = {"name": "hf-causal-lm", "config": {"hf_config": {**GPT2, **GPT2_IDS}}}
    torch.manual_seed(0)
    model = build_model(spec)
    ids = torch.randint(0, 50, (2, 7))
    assert model.spec.task == "causal-lm"
    assert (model.spec.num_classes, model.spec.max_len) == (50, 32)
    # The HF model's own keys, and no duplicates from the attached head.
    keys = set(model.state_dict())
    assert "lm_head.weight" in keys
    assert not any(k.startswith("head.") for k in keys)
    with torch.no_grad():
        logits = _logits(model(ids))
        assert logits.shape == (2, 7, 50)
        assert torch.allclose(model.head(model.features(ids)), logits, atol=1e-5)

    path = tmp_path / "gpt2.safetensors"
    save_checkpoint(model, path)  # tied embeddings: shared storage must not break saving
    torch.manual_seed(1)
    other = build_model(spec)
    with torch.no_grad():
        assert not torch.allclose(_logits(other(ids)), logits)
        load_checkpoint(other, path)
        assert torch.equal(_logits(other(ids)), logits)


def test_hf_sequence_classification_from_local_dir(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    conf = transformers.AutoConfig.for_model(**GPT2, num_labels=3, pad_token_id=0, **GPT2_IDS)
    conf.save_pretrained(tmp_path)
    model = build_model({"name": "hf-sequence-classification", "config": {"path": str(tmp_path)}})
    assert (model.spec.task, model.spec.input_kind, model.spec.num_classes, model.spec.vocab_size) == (
        "classification",
        "tokens",
        3,
        50,
    )
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])  # second row right-padded
    with torch.no_grad():
        logits = _logits(model(ids))
        assert logits.shape == (2, 3)
        assert torch.allclose(model.head(model.features(ids)), logits, atol=1e-5)
