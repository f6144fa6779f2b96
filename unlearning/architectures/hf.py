"""Hugging Face ``transformers`` models, an optional extra (``pip install unlearn-service[hf]``).

Models are built from a config only (``AutoConfig`` + ``from_config``, ``trust_remote_code=False``):
nothing is fetched from the hub and no pickled ``.bin`` is ever read; the weights come from our own
safetensors checkpoint. The model returned is the HF model itself, so state-dict keys are HF's own.

Forward returns a ``ModelOutput``; callers take ``getattr(out, "logits", out)`` to treat built-in
and HF models alike. ``model.head`` / ``model.features`` are attached where the model has a
linear output layer (LM head, or a linear classifier) with ``model(x).logits == head(features(x))``
for the usual HF layout; they are plain attributes, not submodules, so the state dict is unchanged.
Note that many causal LMs tie ``head.weight`` to the input embeddings (``tie_word_embeddings``):
updating the head then updates the embeddings too.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import torch
from pydantic import model_validator
from torch import nn

from unlearning.architectures.registry import ArchConfig, IOSpec, register_architecture
from unlearning.errors import ArchitectureError


class HFConfig(ArchConfig):
    # A local directory holding config.json (weights there, if any, are ignored).
    path: str | None = None
    # Or the config inline, e.g. {"model_type": "gpt2", "n_layer": 2, ...}.
    hf_config: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _exactly_one_source(self) -> HFConfig:
        if (self.path is None) == (self.hf_config is None):
            raise ValueError("give exactly one of 'path' (local directory with config.json) or 'hf_config'")
        return self


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise ArchitectureError(
            "Hugging Face models need the optional 'transformers' package: pip install 'unlearn-service[hf]'"
        ) from exc
    return transformers


def load_hf_config(cfg: HFConfig) -> Any:
    transformers = _transformers()
    if cfg.path is not None:
        try:
            directory = Path(cfg.path)
            if (directory / "config.json").is_file():
                return transformers.AutoConfig.from_pretrained(
                    str(directory), local_files_only=True, trust_remote_code=False
                )
        except Exception:
            pass
        # One message whether the directory is missing, unreadable or holds a bad config.json, and
        # no parser text (it may quote the file): a caller must not learn what exists on this machine.
        raise ArchitectureError(f"path: cannot load a Hugging Face config.json from {cfg.path!r}")
    try:
        fields = dict(cfg.hf_config or {})
        model_type = fields.pop("model_type", None)
        if not isinstance(model_type, str):
            raise ArchitectureError("hf_config.model_type is required (e.g. 'gpt2')")
        return transformers.AutoConfig.for_model(model_type, **fields)
    except ArchitectureError:
        raise
    except Exception as exc:
        raise ArchitectureError(f"hf_config: cannot load the Hugging Face config: {exc}") from exc


def _max_len(conf: Any) -> int | None:
    value = getattr(conf, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) else None


def _describe_lm(cfg: HFConfig) -> IOSpec:
    conf = load_hf_config(cfg)
    return IOSpec(
        input_kind="tokens", num_classes=conf.vocab_size, max_len=_max_len(conf), vocab_size=conf.vocab_size
    )


def _describe_seq_cls(cfg: HFConfig) -> IOSpec:
    conf = load_hf_config(cfg)
    return IOSpec(
        input_kind="tokens", num_classes=conf.num_labels, max_len=_max_len(conf), vocab_size=conf.vocab_size
    )


# ``self`` is a Hugging Face model (Any): its base_model, head and config are read at run time.
def _lm_features(self: Any, input_ids: torch.Tensor) -> torch.Tensor:
    # The usual HF causal LM is logits = lm_head(base_model(...).last_hidden_state).
    return self.base_model(input_ids=input_ids)[0]


def _hooked_features(self: Any, input_ids: torch.Tensor) -> torch.Tensor:
    """The head's input, captured during a normal forward pass, pooled as HF pools the logits."""
    captured: list[torch.Tensor] = []
    handle = self.head.register_forward_pre_hook(lambda _mod, args: captured.append(args[0]))
    try:
        self(input_ids=input_ids)
    finally:
        handle.remove()
    hidden = captured[-1]
    if hidden.dim() == 3:
        # Decoder-style classifiers score every position, then keep the rightmost non-pad token.
        pad = self.config.pad_token_id
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        if pad is None:
            return hidden[:, -1]
        positions = torch.arange(input_ids.shape[-1], device=input_ids.device)
        last = (positions * input_ids.ne(pad).int()).argmax(-1)
        return hidden[rows, last.to(hidden.device)]
    return hidden


def _attach(model: nn.Module, head: nn.Module | None, features: Any) -> nn.Module:
    if isinstance(head, nn.Linear):
        # object.__setattr__ bypasses nn.Module registration: no duplicate "head.*" state-dict keys.
        object.__setattr__(model, "head", head)
        object.__setattr__(model, "features", types.MethodType(features, model))
    return model


def _from_config(auto_class_name: str, cfg: HFConfig) -> Any:
    # Any: a transformers PreTrainedModel (an nn.Module with base_model, get_output_embeddings...).
    transformers = _transformers()
    conf = load_hf_config(cfg)
    auto_class = getattr(transformers, auto_class_name)
    try:
        return auto_class.from_config(conf, trust_remote_code=False)
    except Exception as exc:
        raise ArchitectureError(f"cannot build {auto_class_name} from this config: {exc}") from exc


@register_architecture("hf-causal-lm", task="causal-lm", config_model=HFConfig, describe=_describe_lm)
def build_hf_causal_lm(cfg: HFConfig) -> nn.Module:
    model = _from_config("AutoModelForCausalLM", cfg)
    has_base = model.base_model is not model
    return _attach(model, model.get_output_embeddings(), _lm_features if has_base else _hooked_features)


@register_architecture(
    "hf-sequence-classification", task="classification", config_model=HFConfig, describe=_describe_seq_cls
)
def build_hf_sequence_classification(cfg: HFConfig) -> nn.Module:
    model = _from_config("AutoModelForSequenceClassification", cfg)
    head = next(
        (
            getattr(model, n)
            for n in ("score", "classifier")
            if isinstance(getattr(model, n, None), nn.Linear)
        ),
        None,
    )
    return _attach(model, head, _hooked_features)
