"""Sweep every architecture transformers and timm ship through conversion, export, costs and restore.

Each model is built with random weights from a small config derived from its config class's
defaults (hidden 64, MLP 128, 2 layers, 4 heads in 2 key/value groups, head size 16, vocab 128,
64 positions, 32x32 images in 8x8 patches, 10 labels; the fields tied to these follow them, a hybrid
keeps a layer of each kind its defaults interleave, attention among them, and ``FAMILY_OVERRIDES`` set
what a few families need beyond that), run in eval mode, and then:

1. instantiated (built and run once, the output kept as the reference);
2. converted with ``mtn.convert(model, mode, dummy_input=x)`` (fastnas; for transformers with
   ``min_depth: 1`` on ``nn.ModuleList`` and ``nn.Sequential``, since fastnas alone searches no depth);
3. its search dimensions read from ``get_space(model).hparams`` and classified (heads, key/value
   groups, query heads per group, MLP, hidden, depth, channels), with the first reason
   ``get_space(model).fixed_reasons`` gives for each kind a family misses;
4. the max subnet compared with the reference;
5. a random subnet (``random.Random(0)``) compared with its ``mtn.export_copy``;
6. the analytic cost model of that subnet compared with fvcore's flops and ``numel`` on the export;
7. ``nascli.opt.save`` then ``nascli.opt.restore`` into a fresh model, outputs compared.

The models are: one ``*ForCausalLM`` per transformers model type (or the auto class's causal LM
where the type has no class of that name) for decoder families, one ``*ForSequenceClassification``
per remaining (encoder) model type, one ``*ForImageClassification`` per model type, and the model
of fewest parameters (counted on the meta device) of each timm family.

Every model runs in a worker process (spawned, so a crash or hang costs that model only): a
model that takes longer than ``--timeout`` seconds has its worker killed and records the step it
was in. One JSON line per model goes to the results file as soon as it finishes, and a rerun
skips the models recorded there, so an interrupted sweep resumes where it stopped.

    OMP_NUM_THREADS=1 python scripts/sweep_architectures.py                  # the whole sweep (about an hour)
    OMP_NUM_THREADS=1 python scripts/sweep_architectures.py --only causal --limit 5
    python scripts/sweep_architectures.py --table                            # the table and summary so far
    python scripts/sweep_architectures.py --markdown                         # the same as markdown (docs/coverage.md)
    python scripts/sweep_architectures.py --crashes                          # tracebacks of crashes inside nascli

Options: ``--results PATH`` (default /tmp/nascli-sweep/results.jsonl; the model lists are cached
beside it as ``*.plan.json``: listing the timm families builds all timm models on the meta
device once, about 10 minutes on one core), ``--only causal|encoder|vision|timm``, ``--limit N``
(new models this run), ``--timeout S`` (per model, default 120). The table and summary show the
models the cached lists hold.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import random
import re
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

GROUPS = ("causal", "encoder", "vision", "timm")
DEFAULT_RESULTS = Path("/tmp/nascli-sweep/results.jsonl")
STEPS = ("instantiate", "convert", "max", "export", "costs", "restore")
DIM_KINDS = ("heads", "kv", "query", "mlp", "hidden", "depth", "channels", "other")
#: a worker is replaced after this many models or this much memory: tracing leaves caches behind
RECYCLE_MODELS = 40
RECYCLE_RSS_BYTES = 4 << 30
PLAN_TIMEOUT_S = 1800  # listing the timm families builds every timm model once on the meta device

# The small config: field names per role, as the config classes of transformers spell them.
# (``hidden_size_global``: BLT's local encoder and decoder name the global transformer's width.)
HIDDEN_FIELDS = (
    "hidden_size",
    "n_embd",
    "d_model",
    "dim",
    "embed_dim",
    "model_dim",
    "n_embed",
    "d_embed",
    "hidden_size_global",
)
MLP_FIELDS = (
    "intermediate_size",
    "ffn_dim",
    "n_inner",
    "d_ff",
    "ffn_hidden_size",
    "encoder_ffn_dim",
    "decoder_ffn_dim",
    "mlp_dim",
    "inner_hidden_size",
    "moe_intermediate_size",
    "shared_expert_intermediate_size",
    "expert_intermediate_size",
)
LAYER_FIELDS = (
    "num_hidden_layers",
    "n_layer",
    "num_layers",
    "n_layers",
    "num_decoder_layers",
    "num_encoder_layers",
    "encoder_layers",
    "decoder_layers",
    "depth",
)
HEAD_FIELDS = (
    "num_attention_heads",
    "n_head",
    "num_heads",
    "n_heads",
    "encoder_attention_heads",
    "decoder_attention_heads",
)
KV_FIELDS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "multi_query_group_num")
HEAD_DIM_FIELDS = ("attention_head_dim", "kv_channels", "d_kv", "attention_head_size")
POSITION_FIELDS = (
    "max_position_embeddings",
    "n_positions",
    "n_ctx",
    "max_seq_len",
    "max_sequence_length",
    "max_seq_length",
    "seq_length",
)
EXPERT_FIELDS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
TOP_K_FIELDS = ("num_experts_per_tok", "moe_topk", "num_experts_per_token", "top_k", "moe_top_k", "moe_k")
LIST_DEPTH_FIELDS = ("depths", "encoder_depths", "decoder_depths", "num_layers_per_stage", "layers")
LIST_WIDTH_FIELDS = ("hidden_sizes", "embed_dims", "embed_dim", "dims", "hidden_dims", "widths")
LIST_HEAD_FIELDS = ("num_heads", "num_attention_heads", "heads")
VOCAB, HIDDEN, MLP, LAYERS, HEADS, KV_HEADS, HEAD_DIM, POSITIONS = 128, 64, 128, 2, 4, 2, 16, 64
IMAGE, PATCH, LABELS, EXPERTS, TOP_K = 32, 8, 10, 4, 2
#: counts of layers (dense ones before the MoE ones, ones reusing another's cache), of expert groups and of
#: shared experts: at most 1 each, so that 2 layers keep one of each kind and groups divide EXPERTS
ONE_FIELDS = (
    "n_group",
    "num_expert_group",
    "topk_group",
    "n_shared_experts",
    "first_k_dense_replace",
    "num_dense_layers",
    "num_kv_shared_layers",
)
#: (expansion, heads, head size) of a Mamba-2 mixer: heads * head size == expansion * hidden
SSM_HEAD_FIELDS = (("expand", "num_heads", "head_dim"),)
#: the lists naming each layer's token mixer, one entry per layer or a pattern repeated over the layers
#: (RecurrentGemma's ``block_types``): a hybrid's small config keeps one layer of each kind (``hybrid_layers``)
MIXER_FIELDS = ("layer_types", "layers_block_type", "block_types")
TOKENS_BELOW = 100  # token ids of the input; special token ids are moved above it, still below VOCAB
ATOL, RTOL = 1e-5, 1e-4

# Hparam name fragments of each kind of search dimension (classify_hparam).
MLP_WORDS = (
    "mlp",
    "fc",
    "ffn",
    "intermediate",
    "feed_forward",
    "up_proj",
    "gate_proj",
    "c_fc",
    "dense_h_to_4h",
    "w1",
    "w3",
    "wi",
    "experts",
    "gate_up",
)


# ----------------------------------------------------------------------------------------------
# Results: one JSON line per model
# ----------------------------------------------------------------------------------------------
def key_of(entry: dict[str, Any]) -> str:
    """A model's identity in the results file: its group and family."""
    return f"{entry['group']}/{entry['family']}"


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    """The records of a results file by key; the last line of a key wins, a torn last line is skipped."""
    records: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return records
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        records[key_of(record)] = record
    return records


def append_result(path: Path, record: dict[str, Any]) -> None:
    """Append one record and flush it, so a killed sweep loses at most the model it was running."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ----------------------------------------------------------------------------------------------
# Worker side: imports, model lists, small configs and the per-model steps
# ----------------------------------------------------------------------------------------------
def quiet() -> None:
    """Silence what the libraries print on import and on every model: warnings and logs are not results."""
    warnings.filterwarnings("ignore")  # fvcore.nn's FutureWarning about torch.jit.script among them
    import logging

    logging.disable(logging.WARNING)
    import transformers

    transformers.logging.set_verbosity_error()


def timm_family(name: str) -> str:
    """The family of a timm model name: its first word before an ``_`` (``tf_``, ``gluon_``, ``legacy_``
    and ``dm_`` skipped), with a trailing size number dropped (``resnet50d`` -> ``resnet``) but a version
    kept (``mobilenetv3``), so one model stands for each architecture rather than for each size."""
    words = name.split("_")
    while len(words) > 1 and words[0] in ("tf", "gluon", "legacy", "dm"):
        words = words[1:]
    word = words[0]
    if re.search(r"v\d+$", word):
        return word
    match = re.match(r"^(.*[a-z])\d+[a-z]{0,2}$", word)
    return match.group(1) if match else word


def plan_timm() -> list[dict[str, Any]]:
    """One timm model per family: the one of fewest parameters, each model built on the meta device
    (no memory, no initialization) to count them. Models that cannot be built there count last."""
    import timm
    import torch

    sizes: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for name in timm.list_models():
        try:
            with torch.device("meta"):
                model = timm.create_model(name, pretrained=False)
            params = float(sum(p.numel() for p in model.parameters()))
        except Exception:
            params = math.inf
        sizes[timm_family(name)].append((params, name))
    plan = []
    for family, models in sorted(sizes.items()):
        params, name = min(models)
        plan.append(
            {"group": "timm", "family": family, "model": name, "params": None if math.isinf(params) else int(params)}
        )
    return plan


def plan_hf() -> list[dict[str, Any]]:
    """The transformers models, one per model type: causal LMs of decoder families, sequence
    classifiers of the other (encoder) families, and image classifiers.

    A model type with a ``*ForMaskedLM`` class is an encoder even when it also offers a causal
    head (``RobertaForCausalLM`` is RoBERTa made a decoder): it is swept as a sequence classifier.
    A decoder type whose causal LM is not named ``*ForCausalLM`` (``GPT2LMHeadModel``) is taken
    from the auto mapping, multimodal ``*ForConditionalGeneration`` classes and classes of another
    model type left out.
    """
    import transformers
    from transformers.models.auto import modeling_auto

    by_suffix: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    errors: dict[str, str] = {}
    suffixes = ("ForCausalLM", "ForSequenceClassification", "ForImageClassification", "ForMaskedLM")
    for name in sorted(dir(transformers)):
        suffix = next((s for s in suffixes if name.endswith(s)), None)
        if suffix is None or "pretrained" in name.lower() or name.startswith(("Auto", "TF", "Flax")):
            continue
        try:
            model_type = getattr(transformers, name).config_class.model_type
        except Exception as exc:  # an optional dependency missing: the class is listed, unbuilt
            model_type = name.removesuffix(suffix).lower()
            errors[name] = first_line(exc)
        by_suffix[suffix][model_type or name.removesuffix(suffix).lower()].append(name)
    auto = modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    causal = dict(by_suffix["ForCausalLM"])
    for model_type, name in auto.items():
        cls = getattr(transformers, name, None) if "ConditionalGeneration" not in name else None
        # a type whose auto class is another type's (internlm3 -> LlamaForCausalLM) would sweep that type again
        if model_type not in causal and getattr(getattr(cls, "config_class", None), "model_type", None) == model_type:
            causal[model_type] = [name]
    encoders = set(by_suffix["ForMaskedLM"])
    plan = []

    def add(group: str, classes: dict[str, list[str]], preferred: dict[str, Any]) -> None:
        for model_type, names in sorted(classes.items()):
            name = preferred.get(model_type) if preferred.get(model_type) in names else names[0]
            plan.append({"group": group, "family": model_type, "model": name, "error": errors.get(name)})

    add("causal", {t: n for t, n in causal.items() if t not in encoders}, auto)
    add(
        "encoder",
        {t: n for t, n in by_suffix["ForSequenceClassification"].items() if t not in causal or t in encoders},
        modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    )
    add("vision", dict(by_suffix["ForImageClassification"]), modeling_auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES)
    return plan


def _is_config(value: Any) -> bool:
    from transformers import PretrainedConfig

    return isinstance(value, PretrainedConfig)


# Per model type (the config's ``model_type``), what no generic rule of ``small_overrides`` derives; each
# entry keeps one relation the model needs, or its size small. A dict value is merged into the sub-config's.
FAMILY_OVERRIDES: dict[str, dict[str, Any]] = {
    # DbrxAttention reads attn_config.rope_theta and clamps q/k/v to clip_qkv, which the defaults leave unset
    "dbrx": {"attn_config": {"rope_theta": 10_000.0, "clip_qkv": 8.0}},
    # MLA expands keys and values to every query head: key/value heads == heads (None derives it); top-k unset
    "deepseek_v2": {"num_key_value_heads": None, "num_experts_per_tok": TOP_K},
    # every layer from first_k_dense_replace on is a MoE, whose sizes the defaults leave None
    "dots1": {"n_routed_experts": EXPERTS, "num_experts_per_tok": TOP_K, "n_shared_experts": 1},
    # the layers index layer_types, which the defaults leave None: one convolution, one attention layer
    "lfm2_moe": {"layer_types": ["conv", "full_attention"]},
    # hybrids whose defaults build one kind of layer only (Bamba and Granite 4.0-H all Mamba, LFM2 all attention),
    # though the architecture and its checkpoints interleave them: a layer of each kind, the attention one second
    "bamba": {"attn_layer_indices": [1]},
    "granitemoehybrid": {"layer_types": ["linear_attention", "full_attention"]},
    "lfm2": {"layer_types": ["conv", "full_attention"]},
    # the full-attention layer is MLA, whose keys and values expand to every query head: key/value heads == heads
    "kimi_linear": {"num_key_value_heads": None},
    "bailing_hybrid": {"num_key_value_heads": None},
    # the attention layers need the QSA token indexer, whose sizes the defaults leave None (the model cannot build)
    "qwen4_exp_text": {
        "indexer_n_heads": HEADS,
        "indexer_kv_heads": 1,
        "indexer_head_dim": HEAD_DIM,
        "indexer_budget": 4,
        "indexer_compress_ratio": 2,
    },
    # input_ids hold batch * num_codebooks rows: one codebook makes the (1, 8) input one sample
    "musicgen_decoder": {"num_codebooks": 1},
    "musicgen_melody_decoder": {"num_codebooks": 1},
    # the shared transformer's weights are tied from the first hybrid layer to the others: two hybrid layers,
    # after a Mamba layer (the kinds of the defaults, which begin with two Mamba layers)
    "zamba": {"num_hidden_layers": 3, "layers_block_type": ["linear_attention", "hybrid", "hybrid"]},
    # the per-layer embeddings (vocab x layers x width) are 134M parameters at their defaults
    "gemma3n_text": {"vocab_size_per_layer_input": VOCAB, "hidden_size_per_layer_input": HEAD_DIM},
    # the byte-group hash embeddings (one of 500002 rows per group size) are 192M parameters at their default
    "blt": {"encoder_hash_byte_group_vocab": VOCAB},
}


def per_layer_lists(config: Any, done: dict[str, Any]) -> dict[str, Any]:
    """The per-layer lists of ``config`` (as many entries as the default depth) cut to LAYERS entries,
    where the config refuses the smaller depth with the default lists.

    Most configs derive their per-layer lists (``layer_types``) from the depth, or ignore the depth for
    the lists' length; the probe, the class built with only the depth changed, shows it, and their lists
    are left alone. A config whose validation ties a list spelled out in the defaults to the depth
    (Zamba 2's ``layers_block_type``, GPT-Neo's ``attention_types``) refuses the probe: its lists of the
    default depth's length (``done``'s fields aside) are cut, or it would not build. The layers kept are
    the first of each kind in the first list of strings (a mamba and a hybrid layer of Zamba 2's), then the
    first layers, in their order, the same layers in every list. A run-length list of ``[pattern, count]``
    pairs (GPT-Neo's ``[[["global", "local"], 12]]``) is expanded to cut it, and kept as one such pair.
    """
    fields = vars(config)
    depth_name = next((n for n in LAYER_FIELDS if isinstance(fields.get(n), int)), None)
    depth = fields.get(depth_name) if depth_name else None
    if not isinstance(depth, int) or depth <= LAYERS:
        return {}
    try:
        type(config)(**{depth_name: LAYERS})
        return {}
    except Exception:  # the validation the cut lists satisfy
        pass

    def expanded(value: Any) -> list[Any] | None:
        """A list's entries, a run-length list of ``[pattern, count]`` pairs expanded."""
        if not isinstance(value, (list, tuple)) or not value:
            return None
        runs = all(
            isinstance(v, (list, tuple)) and len(v) == 2 and isinstance(v[0], (list, tuple)) and isinstance(v[1], int)
            for v in value
        )
        return [k for pattern, count in value for k in list(pattern) * count] if runs else list(value)

    lists = {n: expanded(v) for n, v in fields.items() if n not in done and not n.startswith("_")}
    lists = {n: v for n, v in lists.items() if v is not None and len(v) == depth}
    kinds = next((v for v in lists.values() if all(isinstance(k, str) for k in v)), list(range(depth)))
    first: dict[Any, int] = {}
    for index, kind in enumerate(kinds):
        first.setdefault(kind, index)
    keep = list(first.values())[:LAYERS]
    keep = sorted(keep + [i for i in range(depth) if i not in keep][: LAYERS - len(keep)])
    out: dict[str, Any] = {}
    for name, layers in lists.items():
        cut = [layers[i] for i in keep]
        out[name] = [[cut, 1]] if len(fields[name]) != depth else cut
    return out


def has_attention(kind: str) -> bool:
    """Whether a layer of this kind (an entry of a ``MIXER_FIELDS`` list) holds attention. The configs name
    recurrent, state-space and linear-attention mixers ``linear_attention`` (a few ``mamba``, ``recurrent``
    or ``conv``), and a layer pairing attention with another mixer ``hybrid`` (Zamba's, Falcon-H1's)."""
    return kind.startswith("hybrid") or ("attention" in kind and "linear" not in kind)


def mixer_kinds(config: Any) -> list[str] | None:
    """The kind of each layer of ``config``: the first of ``MIXER_FIELDS``, a field or a property (Jamba's
    ``layer_types`` derives from its periods), that names one per layer."""
    depth = None
    for name in LAYER_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            depth = value
            break
    for name in MIXER_FIELDS:
        try:
            kinds = getattr(config, name, None)
        except Exception:  # a property that cannot derive its list
            continue
        if isinstance(kinds, (list, tuple)) and len(kinds) == depth and all(isinstance(k, str) for k in kinds):
            return list(kinds)
    return None


def hybrid_layers(config: Any, done: dict[str, Any]) -> dict[str, Any]:
    """For a hybrid (its default layers hold attention and other mixers: Mamba, linear attention, convolution,
    recurrence), the fields that give its small config one layer of each kind of the defaults' layers, in
    the order they first come in, or nothing where LAYERS layers (with ``done``'s periodic fields) have them.

    Most hybrids place their attention layers by a period (Qwen3-Next's full attention every 4th layer,
    RecurrentGemma's pattern of two recurrent layers then attention), so that the first LAYERS layers are
    often all of the other kind: the small model would hold no attention, and its search space no heads,
    for want of layers rather than by the architecture. The first of ``MIXER_FIELDS`` that the config takes
    as a list (the per-layer list, or the repeated pattern) becomes one entry per kind, the depth as many
    layers where that is more than LAYERS (LFM3's convolution, full and sliding attention). Models whose
    default layers all hold attention (sliding and full attention alike) or none (Mamba) are left alone,
    as are those whose small config has every kind already (MiniMax, OLMo-Hybrid).
    """
    fields = vars(config)
    default = mixer_kinds(config)
    depth_name = next((n for n in LAYER_FIELDS if isinstance(fields.get(n), int)), None)
    if default is None or depth_name is None or len({has_attention(k) for k in default}) < 2:
        return {}
    try:
        periodic = {n: v for n, v in done.items() if n.endswith(("_offset", "_period"))}
        small = mixer_kinds(type(config)(**{depth_name: LAYERS, **periodic}))
    except Exception:  # a config refusing the depth: its lists are cut by per_layer_lists
        return {}
    if small is None or set(default) <= set(small):
        return {}
    name = next(
        (
            n
            for n in MIXER_FIELDS
            if isinstance(fields.get(n), (list, tuple)) and all(isinstance(k, str) for k in fields[n])
        ),
        None,
    )
    if name is None:
        return {}
    kinds = list(dict.fromkeys(fields[name]))
    return {name: kinds, **({depth_name: len(kinds)} if len(kinds) > LAYERS else {})}


def small_overrides(config: Any, tier: int) -> dict[str, Any]:
    """The constructor arguments that shrink ``config`` (an instance holding the class's defaults).

    Tier 0 shrinks every size field the config has; the fallbacks, when a tier does not build or
    run, leave as the defaults have them the fields whose defaults are tied to one another in ways
    a generic rule cannot know: tier 1 the key/value heads and head sizes (a model without grouped
    attention, a head size fixed by hidden / heads), tier 2 also the head counts and per-stage lists
    (per-stage widths divisible by per-stage heads). Tier 0 also gives a key/value head count or a
    ``head_dim`` the defaults leave None (for the model to derive, which some forget) the small value.

    Fields tied to the shrunk ones follow them, at every tier: a ``rotary_dim`` wider than a head is cut
    to the head size (GPT-J and CodeGen rotate that many channels of each head); Mamba-2's head count is
    re-derived so that heads * head size == expand * hidden, which its config validates; an empty
    ``rope_parameters`` gets the default rope (one per layer type where there are ``layer_types``: Cohere
    Compass reads it by layer type); the counts of ``ONE_FIELDS`` drop to 1 (2 layers keep a dense and a
    MoE layer, a cache producer and a consumer; expert groups divide 4 experts), or to LAYERS where they
    count every layer; a per-layer MLP width list gets MLP per layer; an ``X_offset`` of a layer every
    ``X_period`` layers at or past LAYERS is taken modulo LAYERS (Jamba's attention every 8th layer from
    the 4th: 2 layers would hold none; modulo 2 keeps it off the MoE layers, every 2nd from the 1st, as at
    full size); a hybrid keeps one layer of each kind its default layers have (``hybrid_layers``); the
    per-layer lists a config ties to its depth are cut (``per_layer_lists``). ``FAMILY_OVERRIDES`` of the
    config's model type come last.
    Sub-configs (``text_config``, ``vision_config``...) are shrunk the same way and passed as dicts.
    """
    fields = vars(config)
    out: dict[str, Any] = {}

    def put(names: Iterable[str], value: int, only_larger: bool = False, fill_none: bool = False) -> None:
        for name in names:
            current = fields.get(name)
            if isinstance(current, int) and not isinstance(current, bool):
                out[name] = min(current, value) if only_larger else value
            elif fill_none and name in fields and current is None:
                out[name] = value

    def size(names: Iterable[str]) -> int | None:
        """The first of ``names`` the small config sets, or the defaults set, to an int."""
        for name in names:
            value = out.get(name, fields.get(name))
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return None

    has_hidden = any(isinstance(fields.get(n), int) for n in HIDDEN_FIELDS)
    put(HIDDEN_FIELDS, HIDDEN)
    if isinstance(fields.get("word_embed_proj_dim"), int):  # OPT projects embeddings to the hidden size
        out["word_embed_proj_dim"] = HIDDEN
    put(("hidden_dim",), MLP if has_hidden else HIDDEN)  # DistilBERT's FFN width beside ``dim``
    put(MLP_FIELDS, MLP)
    depth = size(LAYER_FIELDS)
    for name in MLP_FIELDS:  # a width per layer (Gemma 3n's intermediate_size): one per layer left
        value = fields.get(name)
        if isinstance(value, (list, tuple)) and len(value) == depth and all(isinstance(v, int) for v in value):
            out[name] = [MLP] * LAYERS
    put(LAYER_FIELDS, LAYERS)
    put(("vocab_size",), VOCAB)
    if "vocab_size" in fields and fields["vocab_size"] is None:  # ESM leaves it to the tokenizer
        out["vocab_size"] = VOCAB
    if isinstance(fields.get("embedding_size"), int):  # ALBERT's factorized embedding, SqueezeBERT's
        out["embedding_size"] = min(fields["embedding_size"], HIDDEN)
    put(POSITION_FIELDS, POSITIONS)
    put(EXPERT_FIELDS, EXPERTS, only_larger=True)
    put(TOP_K_FIELDS, TOP_K, only_larger=True)
    put(ONE_FIELDS, 1, only_larger=True)
    for name in ONE_FIELDS:  # a count of every layer (Gemma 4's assistants share all layers' caches) stays so
        if depth is not None and fields.get(name) == depth:
            out[name] = LAYERS
    put(("kv_lora_rank", "q_lora_rank"), 32, only_larger=True)
    if tier <= 1:
        put(HEAD_FIELDS, HEADS)
    if tier == 0:
        # a key/value head count or head size the defaults leave None for the model to derive gets the small
        # one: some models read it as it is (Nemotron's key/value heads, HunYuan's and Ministral's head_dim)
        put(KV_FIELDS, KV_HEADS, fill_none=True)
        put(HEAD_DIM_FIELDS + ("head_dim",), HEAD_DIM, fill_none=True)
        for name, value in fields.items():
            if name.endswith("head_dim") and isinstance(value, int) and not isinstance(value, bool):
                out[name] = HEAD_DIM
    for name, value in fields.items():
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) for v in value):
            if name in LIST_DEPTH_FIELDS:
                out[name] = [1] * len(value)
            elif tier <= 1 and name in LIST_WIDTH_FIELDS:
                out[name] = [16 * (i + 1) for i in range(len(value))]
            elif tier <= 1 and name in LIST_HEAD_FIELDS:
                out[name] = [HEADS] * len(value)
    if isinstance(fields.get("image_size"), (int, list, tuple)):
        out["image_size"] = IMAGE
    staged = any(isinstance(fields.get(n), (list, tuple)) for n in LIST_DEPTH_FIELDS)
    if isinstance(fields.get("patch_size"), int):
        # a model of stages halves its map per stage: 8x8 patches of a 32x32 image leave nothing to halve
        out["patch_size"] = min(fields["patch_size"], 4) if staged else PATCH
    elif isinstance(fields.get("patch_size"), (list, tuple)):
        out["patch_size"] = PATCH
    head_size = size(("head_dim",))
    if head_size is None and size(HIDDEN_FIELDS) and size(HEAD_FIELDS):
        head_size = size(HIDDEN_FIELDS) // size(HEAD_FIELDS)
    rotary = fields.get("rotary_dim")
    if isinstance(rotary, int) and head_size and rotary > head_size:  # GPT-J, CodeGen: rotate part of a head
        out["rotary_dim"] = head_size
    for expand, heads, head in SSM_HEAD_FIELDS:  # Mamba-2: heads * head size == expansion * hidden
        sizes = [fields.get(n) for n in (expand, heads, head, "hidden_size")]
        if all(isinstance(v, int) for v in sizes) and sizes[1] * sizes[2] == sizes[0] * sizes[3]:
            out[heads] = size((expand,)) * size(("hidden_size",)) // size((head,))
    for name, offset in fields.items():  # a layer every ``period`` from ``offset`` (Jamba's attention, its MoE)
        period = fields.get(name.removesuffix("_offset") + "_period")
        if name.endswith("_offset") and isinstance(offset, int) and isinstance(period, int) and offset >= LAYERS:
            out[name] = offset % LAYERS
    out.update(hybrid_layers(config, out))
    if "rope_parameters" in fields and not fields["rope_parameters"]:  # a rope the defaults leave empty
        rope = {"rope_type": "default", "rope_theta": 10_000.0}
        kinds = out.get("layer_types", fields.get("layer_types"))  # read per layer type (Cohere Compass)
        out["rope_parameters"] = {k: dict(rope) for k in dict.fromkeys(kinds)} if kinds else rope
    out.update(per_layer_lists(config, out))
    if "use_cache" in fields:
        out["use_cache"] = False
    if fields.get("is_encoder_decoder") and fields.get("decoder_start_token_id") is None:
        out["decoder_start_token_id"] = fields.get("pad_token_id") or 0  # T5's sequence classifier reads it
    vocab = out.get("vocab_size", fields.get("vocab_size"))
    spare = iter(range(VOCAB - 1, TOKENS_BELOW - 1, -1))
    for name, value in fields.items():  # special tokens must stay inside the smaller vocab
        if name.endswith(("_token_id", "_token_index")) and isinstance(vocab, int):
            if isinstance(value, int) and value >= vocab:
                out[name] = next(spare, 0)
            elif isinstance(value, list) and any(isinstance(v, int) and v >= vocab for v in value):
                out[name] = [next(spare, 0) if isinstance(v, int) and v >= vocab else v for v in value]
    for name, value in fields.items():
        if _is_config(value):
            out[name] = {**small_overrides(value, tier), "model_type": value.model_type}
    for name, value in FAMILY_OVERRIDES.get(getattr(config, "model_type", ""), {}).items():
        out[name] = {**out[name], **value} if isinstance(value, dict) and isinstance(out.get(name), dict) else value
    return out


def small_config(config_class: type, tier: int) -> Any:
    """The config class's defaults, shrunk (``small_overrides``), with 10 labels."""
    defaults = config_class()
    return config_class(**small_overrides(defaults, tier), num_labels=LABELS)


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message``, the form every failure is recorded in."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


def describe_failure(exc: BaseException) -> dict[str, Any]:
    """The error, where it was raised, and for an error raised inside nascli that is not one of its
    own clean errors (``NasCliError``), the end of the traceback: those are nascli's crashes."""
    from nascli.errors import NasCliError

    frames = traceback.extract_tb(exc.__traceback__)
    nascli_dir = str(Path(__import__("nascli").__file__).parent)
    inner = frames[-1] if frames else None
    failure: dict[str, Any] = {"error": first_line(exc)}
    if inner is not None:
        failure["where"] = f"{_short_path(inner.filename)}:{inner.lineno} {inner.name}"
    if inner is not None and inner.filename.startswith(nascli_dir) and not isinstance(exc, NasCliError):
        failure["nascli_crash"] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-8:])[-3000:]
    return failure


def _short_path(path: str) -> str:
    parts = Path(path).parts
    for anchor in ("nascli", "transformers", "timm", "torch", "fvcore"):
        if anchor in parts:
            return "/".join(parts[len(parts) - parts[::-1].index(anchor) - 1 :])
    return Path(path).name


def output_tensor(out: Any) -> Any:
    """The tensor of a model output: Hugging Face's ``.logits`` (its first field), timm's tensor."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    return logits if isinstance(logits, torch.Tensor) else out[0]


def classify_hparam(name: str, cnn: bool) -> str:
    """The kind of search dimension an hparam name stands for (see DIM_KINDS)."""
    if name.endswith(".num_heads_per_group"):
        return "query"
    if name.endswith(".num_kv_heads"):
        return "kv"
    if name.endswith(".num_heads"):
        return "heads"
    if name.endswith(".depth"):
        return "depth"
    lowered = name.lower()
    words = re.split(r"[._\[\]]", lowered)
    # a short word counts as a whole name part, plural or not, with an optional index: ``fc1``, ``wi_0``,
    # ``ffns.0``, not ``wfc`` or ``ffc``
    short = [w for w in MLP_WORDS if len(w) <= 3]
    if any(w in lowered for w in MLP_WORDS if len(w) > 3) or any(
        re.fullmatch(rf"({'|'.join(short)})s?\d*", w) for w in words
    ):
        return "mlp"
    if ".shape[" in name or "embed" in lowered or "cls_token" in lowered or "pos_" in lowered:
        return "hidden"
    if cnn or name.endswith(("out_channels", "num_features")):
        return "channels"
    return "other"


def dimension_report(model: Any, cnn: bool) -> tuple[dict[str, int], dict[str, str]]:
    """Counts of configurable hparams per kind, and for each of heads, MLP, hidden and depth that the
    space lacks, the first reason nascli gives for a dimension of that kind staying fixed."""
    from nascli.space.space import get_space

    space = get_space(model)
    counts = dict.fromkeys(DIM_KINDS, 0)
    for name in space.hparams:
        counts[classify_hparam(name, cnn)] += 1
    wanted = {"heads": ("heads", "kv", "query"), "mlp": ("mlp",), "hidden": ("hidden",), "depth": ("depth",)}
    missing: dict[str, str] = {}
    for kind, kinds in wanted.items():
        if any(counts[k] for k in kinds):
            continue
        why = next(
            (f"{n}: {r}" for n, r in space.fixed_reasons.items() if classify_hparam(n, cnn) in kinds),
            None,
        )
        if why is None and space.untraceable:
            module, reason = next(iter(space.untraceable.items()))
            why = f"{module} kept whole: {reason}"
        missing[kind] = why or "no hparam of this kind and no fixed dimension of it"
    return counts, missing


def build_model(task: dict[str, Any]) -> tuple[Callable[[], Any], Any, Any, Any, dict[str, Any]]:
    """A factory of the task's model, the model, its input, its reference output and how it was built.

    Transformers: the small config (tier 0, else the fallback tiers), and ``hf_input``; a model no
    tier builds reports tier 0's error, the one that says what the generic small config missed.
    timm: ``num_classes=10`` and the first input side of 32, 64 and the model's default that its
    forward takes (many timm models fix their input size when built).
    """
    import torch

    info: dict[str, Any] = {}
    error: BaseException | None = None
    if task["group"] == "timm":
        import timm

        def build_timm() -> Any:
            torch.manual_seed(0)
            return timm.create_model(task["model"], pretrained=False, num_classes=LABELS).eval()

        model = build_timm()
        default = tuple(model.pretrained_cfg.get("input_size", (3, 224, 224)))
        for size in dict.fromkeys([(3, IMAGE, IMAGE), (3, 64, 64), default]):
            x = torch.randn(1, *size, generator=torch.Generator().manual_seed(0))
            try:
                with torch.no_grad():
                    reference = output_tensor(model(x))
            except Exception as exc:
                error = exc
                info[f"input{size[-1]}_error"] = first_line(exc)
                continue
            info["input"] = list(x.shape)
            return build_timm, model, x, reference, info
        assert error is not None
        raise error

    import transformers

    cls = getattr(transformers, task["model"])
    first: BaseException | None = None
    for tier in (0, 1, 2):
        try:
            config = small_config(cls.config_class, tier)

            def build_hf(config: Any = config) -> Any:
                torch.manual_seed(0)
                return cls(config).eval()

            model = build_hf()
            x = hf_input(model, config, task["group"])
            with torch.no_grad():
                reference = output_tensor(model(x))
            info.update(tier=tier, input=list(x.shape))
            return build_hf, model, x, reference, info
        except Exception as exc:
            first = first or exc
            info[f"tier{tier}_error"] = first_line(exc)
    assert first is not None
    raise first


def hf_input(model: Any, config: Any, group: str) -> Any:
    """The input a transformers model's forward reads first: ``(1, 8)`` token ids below the vocab,
    one 32x32 image, or for the audio encoders among the sequence classifiers a 0.1 s waveform
    (``input_values``) or 8 frames of features (``input_features``). A sequence classifier's ids
    end with its EOS token: encoder-decoders (T5, BART) classify from the last EOS and need one."""
    import torch

    seeded = torch.Generator().manual_seed(0)
    name = getattr(model, "main_input_name", "input_ids")
    if name == "pixel_values":
        return torch.randn(1, getattr(config, "num_channels", 3), IMAGE, IMAGE, generator=seeded)
    if name == "input_values":
        return torch.randn(1, 1600, generator=seeded)
    if name == "input_features":
        size = getattr(config, "feature_projection_input_dim", None) or getattr(config, "feature_size", 80)
        return torch.randn(1, 8, size, generator=seeded)
    vocab = getattr(config, "vocab_size", None) or VOCAB
    ids = torch.randint(0, min(TOKENS_BELOW, vocab), (1, 8), generator=seeded)
    eos = getattr(config, "eos_token_id", None)
    if group == "encoder" and isinstance(eos, int) and 0 <= eos < vocab:
        ids[0, -1] = eos
    return ids


def convert_mode(group: str) -> Any:
    """fastnas; for transformers with depth searched on block lists too, as fastnas alone searches none."""
    if group == "timm":
        return "fastnas"
    depth = {"*": {"min_depth": 1}}
    return ("fastnas", {"nn.ModuleList": depth, "nn.Sequential": depth})


def close(got: Any, expected: Any) -> float:
    """The largest absolute difference, after ``torch.testing.assert_close`` at ATOL/RTOL passed."""
    import torch

    torch.testing.assert_close(got, expected, atol=ATOL, rtol=RTOL)
    return float((got.double() - expected.double()).abs().max()) if got.numel() else 0.0


def run_model(task: dict[str, Any], send: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Run the steps on one model; each failure is recorded and skips only the steps that need it.

    ``send`` gets the record before each step, so the parent knows which step a hang stopped in.
    """
    import torch

    import nascli.nas as mtn
    import nascli.opt as mto
    from nascli.cost.fvcore_count import count_params, fvcore_flops
    from nascli.cost.model import cost_model
    from nascli.space.space import get_space

    record: dict[str, Any] = {k: task[k] for k in ("group", "family", "model")}
    record["steps"] = {}
    state: dict[str, Any] = {}

    def step(name: str, body: Callable[[], Any]) -> bool:
        record["running"] = name
        send(record)
        start = time.perf_counter()
        try:
            result = body()
        except Exception as exc:
            record["steps"][name] = {"ok": False, "s": round(time.perf_counter() - start, 3), **describe_failure(exc)}
            return False
        record["steps"][name] = {"ok": True, "s": round(time.perf_counter() - start, 3), **(result or {})}
        return True

    def instantiate() -> dict[str, Any]:
        if task.get("error"):
            raise ImportError(task["error"])
        state["build"], state["model"], state["x"], state["reference"], info = build_model(task)
        return {**info, "params": sum(p.numel() for p in state["model"].parameters())}

    def convert() -> dict[str, Any]:
        mtn.convert(state["model"], convert_mode(task["group"]), dummy_input=state["x"])
        state["model"].eval()
        return {"hparams": len(get_space(state["model"]).hparams)}

    def at_max() -> dict[str, Any]:
        space = get_space(state["model"])
        mtn.select(state["model"], {name: max(hp.choices) for name, hp in space.hparams.items()})
        return {"diff": close(output_tensor(state["model"](state["x"])), state["reference"])}

    def export() -> dict[str, Any]:
        rng = random.Random(0)
        space = get_space(state["model"])
        mtn.select(state["model"], {name: rng.choice(list(hp.choices)) for name, hp in space.hparams.items()})
        expected = output_tensor(state["model"](state["x"]))
        state["exported"] = mtn.export_copy(state["model"]).eval()
        return {"diff": close(output_tensor(state["exported"](state["x"])), expected)}

    def costs() -> dict[str, Any]:
        exported = state["exported"]
        analytic = cost_model(state["model"]).cost()
        counted = {"flops": fvcore_flops(first_output(exported), (state["x"],)), "params": count_params(exported)}
        result = {"analytic": analytic, "counted": counted}
        if analytic != counted:
            raise AssertionError(f"analytic {analytic} != fvcore/numel {counted}")
        return result

    def restore() -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.pt"
            mto.save(state["model"], path)
            restored = mto.restore(state["build"](), path).eval()
        if mtn.get_subnet_config(restored) != mtn.get_subnet_config(state["model"]):
            raise AssertionError("restored subnet config differs from the saved one")
        expected = output_tensor(state["model"](state["x"]))
        return {"diff": close(output_tensor(restored(state["x"])), expected)}

    started = time.perf_counter()
    with torch.no_grad():
        if step("instantiate", instantiate) and step("convert", convert):
            try:
                record["dims"], record["missing"] = dimension_report(state["model"], task["group"] == "timm")
                record["hparam_names"] = list(get_space(state["model"]).hparams)  # to classify them again later
            except Exception as exc:
                record["dims_error"] = describe_failure(exc)
            step("max", at_max)
            if step("export", export):
                step("costs", costs)
            step("restore", restore)
    record.pop("running", None)
    record["seconds"] = round(time.perf_counter() - started, 2)
    return record


def first_output(model: Any) -> Any:
    """fvcore traces tensors only: the model wrapped to return its first output, as the zoo test counts it."""
    import torch

    class FirstOutput(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.model = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return output_tensor(self.model(x))

    return FirstOutput(model)


def nascli_commit() -> str:
    """The commit of the nascli checkout imported, ``+dirty`` when its package differs from it: a
    sweep of a checkout that changes while it runs says which code each model ran."""
    import subprocess

    root = Path(__import__("nascli").__file__).parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--", ".") else "")


def worker_main(conn: Connection, log_path: str) -> None:
    """Serve tasks until told to stop: ``{"kind": "plan_hf" | "plan_timm"}`` or a model task.

    The worker's own output (library prints, C++ warnings) goes to a log file, so the sweep's
    table stays readable and a crash's last words are kept.
    """
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    quiet()
    import torch

    torch.set_num_threads(1)
    import nascli.nas  # noqa: F401  (now, so the commit below is the code every model of this worker runs)

    commit = nascli_commit()
    conn.send(("ready", os.getpid()))
    while True:
        task = conn.recv()
        if task is None:
            return
        print(f"--- {time.strftime('%H:%M:%S')} {task}", flush=True)
        if task.get("kind") == "plan_hf":
            conn.send(("done", plan_hf()))
        elif task.get("kind") == "plan_timm":
            conn.send(("done", plan_timm()))
        else:
            record = run_model(task, lambda partial: conn.send(("partial", partial)))
            conn.send(("done", record | {"nascli": commit}))


# ----------------------------------------------------------------------------------------------
# Parent side: workers, the sweep, the table
# ----------------------------------------------------------------------------------------------
class Worker:
    """One spawned worker process, restarted after a timeout, a crash, or RECYCLE_* use."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: Any = None
        self.conn: Connection | None = None
        self.served = 0

    def _start(self) -> None:
        context = mp.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=worker_main, args=(child, str(self.log_path)), daemon=True)
        self.process.start()
        child.close()
        self.served = 0
        if not self.conn.poll(300):  # imports only; not counted against any model's timeout
            self.stop()
            raise RuntimeError(f"worker did not start; see {self.log_path}")
        self.conn.recv()

    def stop(self) -> None:
        """Stop the worker this object started (its own process id only)."""
        if self.process is not None:
            if self.process.is_alive():
                self.process.kill()
            self.process.join(10)
        self.process = self.conn = None

    def _rss(self) -> int:
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return 0
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        return int(match.group(1)) * 1024 if match else 0

    def run(self, task: dict[str, Any], timeout: float) -> tuple[str, Any]:
        """``("done", result)``, or ``("timeout" | "crashed", last partial record or None)``."""
        if self.process is not None and (self.served >= RECYCLE_MODELS or self._rss() > RECYCLE_RSS_BYTES):
            self.stop()
        if self.process is None or not self.process.is_alive():
            self._start()
        assert self.conn is not None
        self.served += 1
        self.conn.send(task)
        deadline = time.monotonic() + timeout
        partial = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.conn.poll(remaining):
                self.stop()
                return "timeout", partial
            try:
                kind, payload = self.conn.recv()
            except (EOFError, OSError):
                self.process.join(5)
                code = self.process.exitcode
                self.stop()
                return f"crashed (worker exit code {code})", partial
            if kind == "partial":
                partial = payload
            else:
                return "done", payload


def plan_path(results: Path) -> Path:
    return results.with_name(results.stem + ".plan.json")


def load_plan(results: Path, groups: Iterable[str], worker: Worker) -> list[dict[str, Any]]:
    """The models of ``groups``, listed once by a worker and cached beside the results file."""
    path = plan_path(results)
    cached: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    groups = list(groups)
    for part, needed in (("hf", {"causal", "encoder", "vision"}), ("timm", {"timm"})):
        if part in cached or not needed & set(groups):
            continue
        print(f"listing the {part} models (cached in {path}) ...", flush=True)
        status, listed = worker.run({"kind": f"plan_{part}"}, PLAN_TIMEOUT_S)
        if status != "done":
            raise RuntimeError(f"listing the {part} models: {status}; see {worker.log_path}")
        cached[part] = listed
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cached, indent=1))
    plan = cached.get("hf", []) + cached.get("timm", [])
    return [entry for group in groups for entry in plan if entry["group"] == group]


def sweep(args: argparse.Namespace) -> None:
    """Run every planned model not yet in the results file, printing a row as each finishes."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    results: Path = args.results
    results.parent.mkdir(parents=True, exist_ok=True)
    worker = Worker(results.with_name(results.stem + ".worker.log"))
    groups = [args.only] if args.only else list(GROUPS)
    try:
        plan = load_plan(results, groups, worker)
        done = read_results(results)
        todo = [entry for entry in plan if key_of(entry) not in done]
        if args.limit is not None:
            todo = todo[: args.limit]
        print(
            f"{len(plan)} models planned, {len(plan) - len(todo)} recorded or left out by --limit, {len(todo)} to run"
        )
        print(format_row(HEADER), flush=True)
        for entry in todo:
            start = time.perf_counter()
            status, payload = worker.run(entry, args.timeout)
            if status == "done":
                record = payload
            else:
                record = payload or {k: entry[k] for k in ("group", "family", "model")} | {"steps": {}}
                running = record.pop("running", "instantiate")
                record["steps"][running] = {"ok": False, "error": f"{status} after {args.timeout:.0f} s"}
                if status == "timeout":
                    record["steps"][running]["error"] = f"timeout: over {args.timeout:.0f} s"
                record["seconds"] = round(time.perf_counter() - start, 2)
            record["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
            append_result(results, record)
            print(format_row(row_of(record)), flush=True)
    finally:
        if worker.conn is not None:
            try:
                worker.conn.send(None)
            except OSError:
                pass
        worker.stop()
    print_summary(ordered(results, args.only), plan)


HEADER = [
    "group",
    "family",
    "model",
    "inst",
    "conv s",
    "heads",
    "mlp",
    "hidden",
    "depth",
    "chan",
    "max",
    "export",
    "costs",
    "restore",
    "s",
    "note",
]
WIDTHS = [7, 18, 34, 4, 6, 5, 4, 6, 5, 4, 4, 6, 5, 7, 6, 0]


def format_row(cells: list[str]) -> str:
    """One plain row, each cell padded to its column's width (a longer cell pushes the rest right)."""
    return " ".join(cell.ljust(width) for cell, width in zip(cells, WIDTHS, strict=True)).rstrip()


def step_mark(record: dict[str, Any], name: str) -> str:
    found = record.get("steps", {}).get(name)
    return "-" if found is None else ("ok" if found["ok"] else "FAIL")


def dims_found(record: dict[str, Any]) -> dict[str, int]:
    """Configurable hparams per reported kind; heads counts key/value groups and query heads too."""
    dims = record.get("dims") or {}
    return {
        "heads": dims.get("heads", 0) + dims.get("kv", 0) + dims.get("query", 0),
        "mlp": dims.get("mlp", 0),
        "hidden": dims.get("hidden", 0),
        "depth": dims.get("depth", 0),
        "channels": dims.get("channels", 0),
    }


def first_failure(record: dict[str, Any]) -> tuple[str, str] | None:
    """The first step that failed and its error."""
    for name in STEPS:
        found = record.get("steps", {}).get(name)
        if found is not None and not found["ok"]:
            return name, found.get("error", "")
    return None


def note_of(record: dict[str, Any]) -> str:
    """What a row says: the first failure, else the first dimension missing and why."""
    failed = first_failure(record)
    if failed is not None:
        return f"{failed[0]}: {failed[1]}"
    wanted = ("heads", "mlp", "hidden", "depth") if record["group"] != "timm" else ()
    for kind in wanted:
        if kind in (record.get("missing") or {}):
            return f"no {kind}: {record['missing'][kind]}"
    return ""


def row_of(record: dict[str, Any]) -> list[str]:
    steps = record.get("steps", {})
    converted = steps.get("convert", {}).get("ok")
    found = dims_found(record)
    dims = [str(found[k]) if converted and found[k] else ("-" if converted else "") for k in found]
    convert_s = f"{steps['convert']['s']:.2f}" if converted else ""
    return [
        record["group"],
        record["family"],
        record["model"],
        step_mark(record, "instantiate"),
        convert_s,
        *dims,
        *(step_mark(record, s) for s in ("max", "export", "costs", "restore")),
        f"{record.get('seconds', 0):.1f}",
        note_of(record)[:160],
    ]


def passed(record: dict[str, Any]) -> bool:
    """The goal of a family: converted, max and export exact; for causal LMs, also heads, MLP, hidden and depth."""
    steps = record.get("steps", {})
    ok = all(steps.get(s, {}).get("ok") for s in ("convert", "max", "export"))
    if record["group"] == "causal":
        found = dims_found(record)
        ok = ok and all(found[k] for k in ("heads", "mlp", "hidden", "depth"))
    return bool(ok)


GOALS = {"causal": 0.90, "timm": 0.95}


def summary_lines(records: list[dict[str, Any]], plan: list[dict[str, Any]] | None) -> list[str]:
    """Per group: how many families were recorded, converted, exact at max and on export, costed and
    restored; and the share meeting the goal (decoder families and timm families)."""
    planned = Counter(entry["group"] for entry in plan or [])
    lines = []
    for group in GROUPS:
        mine = [r for r in records if r["group"] == group]
        if not mine:
            continue
        count = {s: sum(1 for r in mine if r.get("steps", {}).get(s, {}).get("ok")) for s in STEPS}
        n = len(mine)
        of = f" of {planned[group]} planned" if planned.get(group, n) != n else ""
        good = sum(passed(r) for r in mine)
        what = (
            "converted with heads, MLP, hidden and depth found, max exact and export exact"
            if group == "causal"
            else "converted with max exact and export exact"
        )
        goal = f" (goal >= {GOALS[group]:.0%})" if group in GOALS else ""
        lines.append(
            f"{group}: {n} families{of}; instantiated {count['instantiate']}, converted {count['convert']},"
            f" max exact {count['max']}, export exact {count['export']}, costs equal {count['costs']},"
            f" restore equal {count['restore']}; {good}/{n} = {good / n:.1%} {what}{goal}"
        )
    return lines


def print_summary(records: list[dict[str, Any]], plan: list[dict[str, Any]] | None) -> None:
    for line in summary_lines(records, plan):
        print(line)


def cached_plan(results: Path) -> list[dict[str, Any]] | None:
    path = plan_path(results)
    if not path.is_file():
        return None
    cached = json.loads(path.read_text())
    return cached.get("hf", []) + cached.get("timm", [])


def ordered(results: Path, only: str | None) -> list[dict[str, Any]]:
    """The records of ``results`` in table order; where the model lists are cached, only the models
    they hold (a record of a model the lists no longer name is not shown)."""
    rank = {g: i for i, g in enumerate(GROUPS)}
    plan = cached_plan(results)
    planned = None if plan is None else {key_of(entry) for entry in plan}
    chosen = [
        r
        for r in read_results(results).values()
        if only in (None, r["group"]) and (planned is None or key_of(r) in planned)
    ]
    return sorted(chosen, key=lambda r: (rank[r["group"]], r["family"]))


def print_table(args: argparse.Namespace) -> None:
    """The table and summary of the results file, as rich renders them."""
    from rich.console import Console
    from rich.table import Table

    records = ordered(args.results, args.only)
    table = Table(*HEADER, title=str(args.results))
    for record in records:
        table.add_row(*row_of(record))
    console = Console(width=250)
    console.print(table)
    for line in summary_lines(records, cached_plan(args.results)):
        console.print(line, highlight=False)


COST_MISMATCH = re.compile(
    r"analytic \{'flops': ([\d.]+), 'params': ([\d.]+)\} != fvcore/numel \{'flops': ([\d.]+), 'params': ([\d.]+)\}"
)


def normalized(reason: str) -> str:
    """A reason with its model-specific parts abstracted, so reasons of one cause group together.

    The hparam or module a reason starts with, module paths, temporary files and numbers are
    abstracted; the operation named (``aten.expm1``) is kept, as it is the cause. A cost mismatch
    says which of flops and params differ.
    """
    mismatch = COST_MISMATCH.search(reason)
    if mismatch:
        flops_a, params_a, flops_c, params_c = (float(g) for g in mismatch.groups())
        differ = [name for name, a, c in (("flops", flops_a, flops_c), ("params", params_a, params_c)) if a != c]
        return f"AssertionError: analytic {' and '.join(differ)} differ from fvcore/numel on the export"
    text = re.sub(r"^[\w\[\]-]+(\.[\w\[\]-]+)+: ", "", reason)  # the hparam a fixed-dimension reason starts with
    text = re.sub(r"/tmp/\S+", "<file>", text)
    text = re.sub(r"\b(?!aten\.)[A-Za-z_][\w-]*(\.[\w\[\]-]+)+", "<name>", text)
    text = re.sub(r"(?<![A-Za-z])'[^']*'|\"[^\"]*\"|`[^`]*`", "'…'", text)
    text = re.sub(r"(?<![a-z_])\d+", "N", text)
    return text[:200]


GOAL_STEPS = ("instantiate", "convert", "max", "export")


def miss_reasons(records: list[dict[str, Any]], goal: bool = True) -> list[tuple[str, list[str]]]:
    """Reasons with the families they hit, most common first.

    ``goal``: why families miss their goal: the first of instantiate, convert, max and export that
    failed, and for a converted decoder one reason per kind of dimension (heads, MLP, hidden,
    depth) it lacks. Otherwise: the costs and restore checks that failed, which the goals leave out.
    """
    groups: dict[str, list[str]] = defaultdict(list)
    for record in records:
        name = (
            f"{record['family']} ({record['group']})" if record["group"] not in ("causal", "timm") else record["family"]
        )
        steps = record.get("steps", {})
        if not goal:
            for step_name in ("costs", "restore"):
                if steps.get(step_name, {}).get("ok") is False:
                    groups[f"{step_name}: {normalized(steps[step_name].get('error', ''))}"].append(name)
            continue
        if passed(record):
            continue
        failed = next(((s, steps[s]) for s in GOAL_STEPS if steps.get(s, {}).get("ok") is False), None)
        if failed is not None:
            groups[f"{failed[0]}: {normalized(failed[1].get('error', ''))}"].append(name)
        elif record["group"] == "causal":
            for kind in ("heads", "mlp", "hidden", "depth"):
                if kind in (record.get("missing") or {}):
                    groups[f"no {kind}: {normalized(record['missing'][kind])}"].append(name)
    return sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))


def markdown(args: argparse.Namespace) -> None:
    """The summary, one table per group and the grouped miss reasons, as markdown for docs/coverage.md."""
    records = ordered(args.results, args.only)
    for line in summary_lines(records, cached_plan(args.results)):
        print(f"- {line}")
    for group in GROUPS:
        mine = [r for r in records if r["group"] == group]
        if not mine:
            continue
        print(f"\n### {group}\n")
        print("| " + " | ".join(HEADER[1:]) + " |")
        print("|" + "---|" * (len(HEADER) - 1))
        for record in mine:
            cells = [c.replace("|", "\\|") for c in row_of(record)[1:]]
            print("| " + " | ".join(cells) + " |")
    print("\n### Why families miss their goal (most common first)\n")
    for reason, families in miss_reasons(records):
        print(f"- {len(families)} x `{reason}`: {', '.join(families)}")
    print("\n### Costs and restore checks that failed (outside the goals)\n")
    for reason, families in miss_reasons(records, goal=False):
        print(f"- {len(families)} x `{reason}`: {', '.join(families)}")


def crashes(args: argparse.Namespace) -> None:
    """Tracebacks of errors raised inside nascli that are not its clean errors, per model and step."""
    for record in ordered(args.results, args.only):
        failures = [(s, f) for s, f in record.get("steps", {}).items() if f.get("nascli_crash")]
        if record.get("dims_error", {}).get("nascli_crash"):
            failures.append(("dims", record["dims_error"]))
        for name, failure in failures:
            print(f"== {record['group']}/{record['family']} ({record['model']}) {name}: {failure['error']}")
            print(failure["nascli_crash"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="JSON lines, one per model")
    parser.add_argument("--only", choices=GROUPS, help="sweep or show one group")
    parser.add_argument("--limit", type=int, help="run at most N models not yet recorded")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per model before its worker is killed")
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--table", action="store_true", help="print the table and summary of the results file")
    shown.add_argument("--markdown", action="store_true", help="print the markdown of docs/coverage.md's tables")
    shown.add_argument("--crashes", action="store_true", help="print the tracebacks of crashes inside nascli")
    args = parser.parse_args(argv)
    if args.table:
        print_table(args)
    elif args.markdown:
        markdown(args)
    elif args.crashes:
        crashes(args)
    else:
        sweep(args)


if __name__ == "__main__":
    sys.exit(main())
