"""The recipe schema: every key a recipe may hold, its type and its default."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Strict):
    factory: str = Field(description="'module:attr' of a callable that returns the model")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the factory")
    checkpoint: str | None = Field(default=None, description="trained weights (a state_dict file) to start from")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto",
        description="the weights' dtype through every stage and in the export; auto: as the factory built them"
        " (a Hugging Face checkpoint's own dtype)",
    )


class Deployment(_Strict):
    """Where latency is measured and predicted."""

    device: Literal["cpu", "cuda"] = "cpu"
    batch_size: PositiveInt = 1
    repeats: PositiveInt = Field(default=10, description="timed runs per latency-table entry (median)")


class DataSpec(_Strict):
    """A built-in dataset (see nascli.data); cifar10 and imagefolder read a local root; text is
    token windows of a corpus or of the user's files for language models (see nascli.text_data)."""

    name: Literal["digits", "fashion_mnist", "cifar10", "imagefolder", "fake", "text"] = "digits"
    root: str | None = None
    corpus: Literal["python_stdlib"] | None = Field(default=None, description="text: a corpus on every machine")
    files: list[str] = Field(
        default_factory=list,
        description="text: globs of files instead of a corpus: a .jsonl file holds a document per record, a .parquet"
        " file one per row, any other file is one document of UTF-8 text",
    )
    text_field: str = Field(
        default="text", min_length=1, description="text: the field of a .jsonl record, or .parquet column, to read"
    )
    tokenizer: str | None = Field(
        default=None,
        description="text: the model's tokenizer, a local directory (AutoTokenizer) or tokenizer.json file; default:"
        " a nascli.hf:from_pretrained model's own directory, else a BPE trained on the train documents",
    )
    vocab_size: int = Field(
        default=4096, description="text: tokens of the BPE trained on the train documents when there is no tokenizer"
    )
    val_fraction: float = Field(default=0.15, gt=0, lt=1)
    batch_size: PositiveInt = Field(default=64, description="global batch size, split across processes")
    eval_batch_size: PositiveInt = 256


class TrainSpec(_Strict):
    """Supernet training. The ModelOpt guide's advice: 2-3x the usual epochs, a decaying LR."""

    epochs: PositiveInt = 30
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(default=0.1, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(default=5e-4, ge=0)
    warmup_epochs: float = Field(default=1.0, ge=0)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    grad_clip: float | None = Field(default=None, gt=0)
    plain: bool = Field(default=False, description="train the model as built only, no supernet (a teacher to prune)")
    sandwich: bool = Field(default=True, description="false: one random subnet per step (ModelOpt's AutoNAS)")
    num_random: int = Field(default=2, ge=0, description="random subnets per sandwich step")
    split_students: bool = Field(
        default=False,
        description="the min and random subnets of a sandwich step each train on their own slice of the batch:"
        " a cheaper sandwich step (with num_random 1, 0.6x the default step's seconds on a ResNet-20), less"
        " training per subnet; sandwich steps only",
    )
    distill: bool = True
    temperature: float = Field(default=1.0, gt=0)
    bn_calib_batches: PositiveInt = 10
    checkpoint_every: int = Field(default=0, ge=0, description="steps between checkpoints; 0: each epoch end")
    seed: int | None = Field(default=None, description="default: the recipe's seed")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: cuda when available")
    bf16: bool = Field(default=False, description="bfloat16 autocast of the forward passes (CUDA or CPU)")
    channels_last: bool | Literal["auto"] = Field(
        default="auto",
        description="convolutions on NHWC tensors (a ResNet-20 sandwich step 13-17 % faster on a CPU); auto: where"
        " the model runs a training sample so, checked on a copy (a .view of a feature map fails in NHWC)",
    )


class SearchSpec(_Strict):
    """Subnet search. Population, parents and mutation follow ModelOpt's defaults."""

    algorithm: Literal["evolve", "random", "sensitivity"] | None = Field(
        default=None, description="default: sensitivity (FastNAS's map and threshold) in fastnas mode, else evolve"
    )
    constraints: dict[str, str | float] = Field(default_factory=dict, description="flops / params / latency")
    population: PositiveInt = 100
    parents: PositiveInt = Field(default=25, description="the best this many (at most half the population) breed")
    mutation_prob: float = Field(default=0.1, ge=0, le=1)
    crossover: bool = True
    iterations: PositiveInt = 10
    time_budget: float | None = Field(default=None, gt=0, description="seconds")
    lower_bound_ratio: float = Field(default=0.85, ge=0, le=1)
    bn_calib_batches: PositiveInt = 10
    score_func: str | None = Field(default=None, description="'module:fn' taking (model, val_loader) -> float")
    score_samples: PositiveInt | None = Field(
        default=None, description="random validation samples each candidate is scored on; default: all"
    )
    importance: Literal["weights", "activations"] = Field(
        default="weights", description="fastnas: sort channels by weight norms, or by activations (Minitron)"
    )
    importance_samples: PositiveInt = Field(default=64, description="training samples the activations are read on")
    uniform: bool = Field(
        default=False,
        description="one value per role in every block (every layer's MLP width alike), as --format hf needs",
    )
    seed: int | None = None


class LoraSpec(_Strict):
    """Low-rank adapters on the frozen subnet, merged into it at the end (nascli/train/lora.py)."""

    rank: PositiveInt = 16
    alpha: float = Field(default=32.0, gt=0, description="the adapters' output is scaled by alpha / rank")
    dropout: float = Field(default=0.0, ge=0, lt=1)
    targets: list[str] | None = Field(
        default=None,
        min_length=1,
        description="names (or last name parts) of the linear layers to adapt; default every linear layer but the"
        " output layer",
    )


class FinetuneSpec(_Strict):
    """Fine-tuning of the searched subnet; defaults: the training schedule at half the LR."""

    epochs: PositiveInt | None = None
    lr: float | None = Field(default=None, gt=0)
    distill: bool = Field(default=False, description="learn from the supernet's max subnet")
    temperature: float = Field(default=1.0, gt=0)
    distill_weight: float = Field(
        default=1.0, ge=0, le=1, description="with distill: loss = w * KL(teacher, student) + (1 - w) * labels' loss"
    )
    teacher_bf16: bool = Field(
        default=False,
        description="with distill: the frozen teacher's forward in bfloat16 autocast (fast on GPUs and on CPUs with"
        " AVX512-BF16 or AMX); the student keeps train.bf16's precision",
    )
    lora: LoraSpec | None = Field(
        default=None,
        description="train low-rank adapters on the frozen subnet instead of all its weights: the memory of the"
        " weights plus the adapters'",
    )
    activation_checkpointing: bool = Field(
        default=True,
        description="Hugging Face models: keep each layer's input only and recompute the layer in backward, the"
        " activation memory of one layer for about one more forward pass",
    )


class Recipe(_Strict):
    model: ModelSpec
    input_shape: list[PositiveInt] = Field(min_length=1, description="shape of one input sample, without batch")
    input_dtype: Literal["float32", "int64"] = Field(
        default="float32", description="int64 for token ids: input_shape is then [sequence length]"
    )
    mode: Literal["autonas", "fastnas"] = "autonas"
    rules: dict[str, Any] = Field(default_factory=dict, description="overrides of the mode's default rules")
    run_dir: str | None = Field(default=None, description="where the stages write; default runs/<recipe name>")
    deployment: Deployment = Field(default_factory=Deployment)
    data: DataSpec = Field(default_factory=DataSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)
    finetune: FinetuneSpec = Field(default_factory=FinetuneSpec)
    seed: int = 0
