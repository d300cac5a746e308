"""Hugging Face decoders whose layers differ in width, as a directory ``from_pretrained`` loads.

A per-layer search result (each decoder layer with its own MLP width, key/value groups and query
heads) is no instance of the model's own class: its config holds one value per field for every
layer, and the classes of Llama, Qwen2 and Mistral in transformers read no per-layer config.
Such a subnet is written, as NVIDIA's heterogeneous Nemotron checkpoints are, with a modeling
file of its own beside the weights: a config subclass holding ``layer_sizes`` (one dict of
overrides per layer) and a subclass of the model's class that builds each decoder layer from
the config with that layer's overrides. Everything else is the library's own code, so the
layers compute exactly what the stock ones do. ``AutoModelForCausalLM.from_pretrained(path,
trust_remote_code=True)`` loads it; without ``trust_remote_code`` transformers refuses it
instead of building a model of the wrong sizes (the config's ``model_type`` is its own).

The file is written from one template for any decoder that follows transformers' convention
(``<Prefix>ForCausalLM`` holding ``model.layers`` of ``<Prefix>DecoderLayer(config,
layer_idx)``, with ``o_proj`` and ``k_proj`` or a fused ``qkv_proj`` in ``self_attn``, and
``down_proj`` in ``mlp``); the
caller loads the subnet's weights strictly and compares logits, so a family the template does
not describe is refused rather than written wrong.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
import types
from typing import Any

from torch import nn

MODULE_FILE = "modeling_nascli.py"

_TEMPLATE = '''"""A {prefix} model whose decoder layers differ in width, written by ``nascli export --format hf``.

``config.layer_sizes`` holds one dict per decoder layer: the fields (intermediate_size,
num_attention_heads, num_key_value_heads) in which that layer differs from the rest of the
config. Each layer is transformers' own {prefix}DecoderLayer built from the config with its
overrides; nothing else differs from {prefix}ForCausalLM. Load with
AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).
"""

import copy

from huggingface_hub.dataclasses import strict
from torch import nn
from transformers.models.{family}.configuration_{family} import {config_class}
from transformers.models.{family}.modeling_{family} import {prefix}DecoderLayer, {prefix}ForCausalLM


@strict
class Nascli{prefix}Config({config_class}):
    model_type = "nascli_{family}"
    layer_sizes: list | None = None

    def layer_config(self, index: int) -> {config_class}:
        """This config with layer ``index``'s own sizes."""
        config = copy.copy(self)
        for key, value in (self.layer_sizes or [{{}}] * self.num_hidden_layers)[index].items():
            object.__setattr__(config, key, value)  # a plain attribute: the per-layer view skips validation
        return config


class Nascli{prefix}ForCausalLM({prefix}ForCausalLM):
    config_class = Nascli{prefix}Config

    def __init__(self, config: Nascli{prefix}Config) -> None:
        super().__init__(config)
        self.model.layers = nn.ModuleList(
            {prefix}DecoderLayer(config.layer_config(index), index) for index in range(config.num_hidden_layers)
        )
        self.post_init()
'''


def modeling_source(model: nn.Module) -> str | None:
    """The modeling file for ``model``'s class, or None where it does not follow the convention."""
    cls = type(model)
    prefix = cls.__name__.removesuffix("ForCausalLM")
    parts = cls.__module__.split(".")
    if prefix == cls.__name__ or parts[:2] != ["transformers", "models"] or len(parts) != 4:
        return None
    family = parts[2]
    library = importlib.import_module(cls.__module__)
    layers = getattr(getattr(model, "model", None), "layers", None)
    layer_class = getattr(library, f"{prefix}DecoderLayer", None)
    if (
        layer_class is None
        or not isinstance(layers, nn.ModuleList)
        or not all(_has(layer, "self_attn.o_proj", "mlp.down_proj") for layer in layers)
        or not all(_has(layer, "self_attn.k_proj") or _has(layer, "self_attn.qkv_proj") for layer in layers)
    ):
        return None
    config_class = type(model.config).__name__
    return _TEMPLATE.format(prefix=prefix, family=family, config_class=config_class)


def layer_sizes(model: nn.Module) -> list[dict[str, int]]:
    """Each decoder layer's MLP width, query heads and key/value heads, read off its projections: what
    ``o_proj`` and ``down_proj`` read, and ``k_proj``'s output or, in a fused ``qkv_proj`` (Phi-3), what
    is left of it after the queries, halved."""
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    sizes = []
    for layer in model.model.layers:
        attention = layer.self_attn
        heads = attention.o_proj.in_features // head_dim
        if hasattr(attention, "k_proj"):
            kv_heads = attention.k_proj.out_features // head_dim
        else:
            kv_heads = (attention.qkv_proj.out_features - heads * head_dim) // (2 * head_dim)
        sizes.append(
            {
                "intermediate_size": layer.mlp.down_proj.in_features,
                "num_attention_heads": heads,
                "num_key_value_heads": kv_heads,
            }
        )
    return sizes


def heterogeneous_classes(source: str) -> tuple[type, type]:
    """The config and model classes ``source`` defines, executed here as it will be when loaded."""
    name = f"nascli_modeling_{hashlib.sha256(source.encode()).hexdigest()[:16]}"
    module = sys.modules.get(name)
    if module is None:  # registered first: the dataclass decorator of configs looks its module up
        module = sys.modules[name] = types.ModuleType(name)
        exec(compile(source, MODULE_FILE, "exec"), module.__dict__)  # nascli's own template, not user code
    names = [name for name in vars(module) if name.startswith("Nascli")]
    config_class = next(getattr(module, n) for n in names if n.endswith("Config"))
    model_class = next(getattr(module, n) for n in names if n.endswith("ForCausalLM"))
    return config_class, model_class


def heterogeneous_config(config_class: type, base: Any, fields: dict[str, Any], sizes: list[dict[str, int]]) -> Any:
    """A config of ``config_class`` with ``base``'s fields, ``fields`` set, the layers' largest sizes as the
    global values (any reader of the global fields sees sizes of a layer that exists) and each layer's
    differences from them in ``layer_sizes``."""
    values = {**base.to_dict(), **fields}
    for key in ("model_type", "architectures", "auto_map", "transformers_version"):
        values.pop(key, None)
    globals_ = {key: max(size[key] for size in sizes) for key in sizes[0]}
    values.update(globals_)
    values["layer_sizes"] = [{k: v for k, v in size.items() if v != globals_[k]} for size in sizes]
    config = config_class(**values)
    config.architectures = [config_class.__name__.removesuffix("Config") + "ForCausalLM"]
    module = MODULE_FILE.removesuffix(".py")
    config.auto_map = {
        "AutoConfig": f"{module}.{config_class.__name__}",
        "AutoModelForCausalLM": f"{module}.{config.architectures[0]}",
    }
    return config


def _has(module: nn.Module, *paths: str) -> bool:
    try:
        for path in paths:
            module.get_submodule(path)
    except AttributeError:
        return False
    return True
