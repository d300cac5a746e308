"""The recipe schema: every key a recipe may hold, its type and its default."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Strict):
    factory: str = Field(description="'module:attr' of a callable that returns the model")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the factory")


class Deployment(_Strict):
    """Where latency is measured and predicted."""

    device: Literal["cpu", "cuda"] = "cpu"
    batch_size: PositiveInt = 1
    repeats: PositiveInt = Field(default=10, description="timed runs per latency-table entry (median)")


class Recipe(_Strict):
    model: ModelSpec
    input_shape: list[PositiveInt] = Field(min_length=1, description="shape of one input sample, without batch")
    mode: Literal["autonas", "fastnas"] = "autonas"
    rules: dict[str, Any] = Field(default_factory=dict, description="overrides of the mode's default rules")
    run_dir: str | None = Field(default=None, description="where the stages write; default runs/<recipe name>")
    deployment: Deployment = Field(default_factory=Deployment)
    seed: int = 0
