"""Latency on the user's device: a per-layer lookup table plus a measured fixed overhead.

Each dynamic layer is timed in isolation, at the input shape recorded at convert time (batch
size of the deployment), for the active sizes a subnet gives it. A subnet's latency is predicted
from the sum of its layers' entries by a line fitted on the measured min, centroid and max
subnets (its intercept covers what the table does not time: pooling, Python dispatch). Entries are timed
on first use and cached in a JSON file per model, machine, device, torch version, batch size and
threads.
"""

from __future__ import annotations

import hashlib
import json
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nascli.atomic import atomic_write_text
from nascli.cost.terms import ancestors, gated_blocks
from nascli.errors import NasCliError
from nascli.space.export import export_model
from nascli.space.hparam import Hparam, size_in
from nascli.space.kinds import DynamicModule, kind_of
from nascli.space.space import example_inputs, get_space
from nascli.userdirs import ANOTHER_CACHE


def _sync(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def time_call(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs, after ``warmup`` runs."""
    sync = _sync(device)
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        sync()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_latency(model: nn.Module, inputs: tuple[torch.Tensor, ...], repeats: int = 20) -> float:
    """Median seconds of one forward of a (plain, exported) model on the inputs' device."""
    model.eval()
    return time_call(lambda: model(*inputs), inputs[0].device, repeats)


class _Layer:
    """One call of one dynamic layer: how to build and time it at given active sizes."""

    def __init__(self, name: str, call: int, module: DynamicModule, in_shape: tuple):
        self.name, self.call, self.module, self.in_shape = name, call, module, in_shape
        # every size the layer's cost depends on: (out, in, kernel), (out, in) or (features,)
        self.dims = [getattr(module, field, None) for _, field in module._hparam_fields]

    def sizes(self, config: dict[str, Any]) -> tuple[int, ...]:
        return tuple(size_in(dim, config) if dim is not None else 0 for dim in self.dims)

    def build(self, sizes: tuple[int, ...], batch: int, device: torch.device) -> tuple[nn.Module, torch.Tensor]:
        layer, x = kind_of(self.module).latency_layer(self.module, sizes, (batch, *self.in_shape[1:]))
        return layer.to(device), x.to(device)

    @property
    def key(self) -> str:
        return f"{self.name}#{self.call}"


class LatencyModel:
    """Predicted latency (seconds) of any subnet of a converted model on one device."""

    def __init__(
        self,
        model: nn.Module,
        device: str = "cpu",
        batch_size: int = 1,
        repeats: int = 10,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.model, self.space = model, get_space(model)
        self.device, self.batch_size, self.repeats = torch.device(device), batch_size, repeats
        modules = dict(model.named_modules())
        blocks = gated_blocks(modules)
        self.layers: list[tuple[_Layer, list[tuple[Hparam, int]]]] = []
        for name, module in modules.items():
            if not isinstance(module, DynamicModule) or not kind_of(module).timed:
                continue
            conditions = [blocks[p] for p in ancestors(name) if p in blocks]
            for call, (in_shape, _) in enumerate(self.space.shapes.get(name, [])):
                self.layers.append((_Layer(name, call, module, in_shape), conditions))
        self.cache_path = None
        self.entries: dict[str, float] = {}
        self.scale, self.overhead = 1.0, 0.0
        self.calibrated = False  # scale and overhead fitted (an overhead of 0 is a valid fit)
        if cache_dir is not None:
            tag = f"{self.device.type}-torch{torch.__version__}-b{batch_size}-t{torch.get_num_threads()}"
            self.cache_path = Path(cache_dir) / f"latency-{tag}-{self._fingerprint()}.json"
            if self.cache_path.is_file():
                cached = json.loads(self.cache_path.read_text())
                self.entries, self.scale, self.overhead = cached["entries"], cached["scale"], cached["overhead"]
                self.calibrated = cached.get("calibrated", bool(self.overhead))

    def _fingerprint(self) -> str:
        """What the table's entries depend on besides the file name's settings, hashed.

        The entries are keyed by layer name and sizes only, so one cache directory holding the
        tables of many models (and machines sharing a home directory) needs a file per model
        and device: its modules' types, parameter shapes and traced input and output shapes,
        the machine and the device's name.
        """
        device = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else platform.processor()
        described = [
            [(name, type(module).__name__) for name, module in self.model.named_modules()],
            [(name, tuple(value.shape)) for name, value in self.model.state_dict().items()],
            sorted((name, repr(shapes)) for name, shapes in self.space.shapes.items()),
            [platform.node(), platform.machine(), device],
        ]
        return hashlib.sha256(repr(described).encode()).hexdigest()[:16]

    def _entry(self, layer: _Layer, sizes: tuple[int, ...]) -> float:
        key = f"{layer.key}:{','.join(map(str, sizes))}"
        if key not in self.entries:
            self.prefetch_entries({key: (layer, sizes)}, rounds=1)
        return self.entries[key]

    def _needed(self, configs: list[dict[str, Any]]) -> dict[str, tuple[_Layer, tuple[int, ...]]]:
        needed = {}
        for config in configs:
            for layer, _ in self.layers:
                sizes = layer.sizes(config)
                key = f"{layer.key}:{','.join(map(str, sizes))}"
                if key not in self.entries:
                    needed[key] = (layer, sizes)
        return needed

    def prefetch(self, configs: list[dict[str, Any]], rounds: int = 3) -> None:
        """Time every table entry these subnets need, in round-robin rounds (minimum counts).

        A slow spell of a shared machine lasts seconds; spreading each entry's timings over the
        rounds keeps one spell from skewing a few entries.
        """
        self.prefetch_entries(self._needed(configs), rounds)

    def prefetch_entries(self, needed: dict[str, tuple[_Layer, tuple[int, ...]]], rounds: int) -> None:
        built = {key: layer.build(sizes, self.batch_size, self.device) for key, (layer, sizes) in needed.items()}
        for _ in range(rounds):
            for key, (module, x) in built.items():
                seconds = time_call(lambda module=module, x=x: module(x), self.device, self.repeats)
                self.entries[key] = min(seconds, self.entries.get(key, float("inf")))

    def table_sum(self, config: dict[str, Any]) -> float:
        total, rank = 0.0, self.space.block_rank
        for layer, conditions in self.layers:
            if all(config.get(hp.name, hp.active) > rank(hp.name, index) for hp, index in conditions):
                total += self._entry(layer, layer.sizes(config))
        return total

    def predict(self, config: dict[str, Any] | None = None) -> float:
        """Seconds per forward of the subnet (the active one by default)."""
        return self.scale * self.table_sum(config if config is not None else self.space.config()) + self.overhead

    def _export(self, config: dict[str, Any]) -> nn.Module:
        """The exported subnet of ``config``; the model's active subnet and sampling are kept."""
        before, keep_sampling = self.space.config(), self.space.sample_in_train
        try:
            self.space.select(config)
            return export_model(self.model).to(self.device).eval()
        finally:
            self.space.select(before)
            self.space.sample_in_train = keep_sampling

    def measure_many(self, configs: list[dict[str, Any]], rounds: int = 3) -> list[float]:
        """Measured seconds per forward of each exported subnet: the minimum over round-robin rounds.

        Round-robin order makes a slow spell of a shared machine hit every subnet alike.
        """
        models = [self._export(c) for c in configs]
        inputs = tuple(
            t.to(self.device) for t in example_inputs(self.space.input_shapes, self.space.input_dtypes, self.batch_size)
        )
        found = [[measure_latency(m, inputs, self.repeats) for m in models] for _ in range(rounds)]
        return [min(times) for times in zip(*found, strict=True)]

    def measure(self, config: dict[str, Any]) -> float:
        """Measured seconds per forward of the exported subnet."""
        return self.measure_many([config], rounds=1)[0]

    def calibrate(self) -> dict[str, float]:
        """Fit scale and overhead on the measured min, centroid and max subnets; returns the measurements.

        Layers timed alone run a little slower or faster than inside the network (caches, thread
        start-up), and the untimed element-wise work grows with the layers' sizes, so a least-
        squares line ``measured = scale * table + overhead`` fits better than an offset alone.
        """
        if self.cache_path is not None and self.cache_path.is_file() and self.calibrated:
            return {}
        names = ("min", "centroid", "max")
        configs = [{n: getattr(hp, which) for n, hp in self.space.hparams.items()} for which in names]
        self.prefetch(configs)
        times = self.measure_many(configs)
        table = [self.table_sum(c) for c in configs]
        spread = max(table) - min(table)
        if spread > 1e-12:
            fit = statistics.linear_regression(table, times)
            self.scale, self.overhead = fit.slope, fit.intercept
        if spread <= 1e-12 or self.scale <= 0 or self.overhead < 0:
            self.scale = 1.0
            self.overhead = max(0.0, statistics.mean(t - s for t, s in zip(times, table, strict=True)))
        self.calibrated = True
        self.save()
        return dict(zip(names, times, strict=True))

    def save(self) -> None:
        """Write the table to its cache file whole; a cache that cannot be written costs only time."""
        if self.cache_path is None:
            return
        table = json.dumps(
            {"entries": self.entries, "scale": self.scale, "overhead": self.overhead, "calibrated": self.calibrated}
        )
        try:
            atomic_write_text(self.cache_path, table, hint=ANOTHER_CACHE)
        except (OSError, NasCliError) as exc:
            warnings.warn(f"latency table not cached in {self.cache_path.parent}: {exc}", stacklevel=2)
