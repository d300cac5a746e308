"""pareto.png shows the task's metric: perplexity on a log axis for a language model, accuracy for a
classifier; a sensitivity search shows its measured map, one subplot per role."""

import json
import sysconfig
from pathlib import Path

import pytest
from typer.testing import CliRunner

import nascli.search.plot as plot
from nascli.cli.app import app
from nascli.search.plot import METRICS, pareto_figure, search_plot, sensitivity_figure
from nascli.search.uniform import role_of

ROOT = Path(__file__).resolve().parents[2]
WIDTH = "model.layers.*.mlp.gate_proj.out_features"


def _candidate(flops: int, score: float, config: dict | None = None) -> dict:
    return {"config": config or {}, "flops": flops, "params": flops // 10, "latency": None, "score": score}


def _evolved(scores: list[float]) -> dict:
    """A search report of four candidates (4, 2, 3 and 1 M flops) with ``scores``; the second is chosen."""
    candidates = [_candidate(f, s) for f, s in zip([4_000_000, 2_000_000, 3_000_000, 1_000_000], scores, strict=True)]
    front = [candidates[i] for i in (3, 1, 0)]
    return {"candidates": candidates, "pareto": front, "best": candidates[1], "constraints": {"flops": 2.5e6}}


def _line(axes, label: str):
    [line] = [line for line in axes.lines if line.get_label() == label]
    return line


def _shown(figure) -> list:
    return [axes for axes in figure.axes if axes.get_visible()]


def _sensitivity(sensitivity: dict, config: dict) -> dict:
    best = _candidate(1_000_000, -12.0, config)
    return {"original_score": -10.0, "sensitivity": sensitivity, "best": best, "candidates": [best],
            "pareto": [best], "constraints": {}}  # fmt: skip


def test_a_language_models_candidates_show_perplexity_on_a_log_axis():
    [axes] = pareto_figure(_evolved([-30.0, -45.0, -60.0, -90.0]), METRICS["ppl"]).axes
    assert axes.get_yscale() == "log" and axes.get_ylabel() == "validation perplexity"
    candidates, chosen = axes.collections
    assert candidates.get_offsets().tolist() == [[4, 30], [2, 45], [3, 60], [1, 90]]
    assert chosen.get_offsets().tolist() == [[2, 45]]
    front = _line(axes, "Pareto front")
    assert list(front.get_xdata()) == [1, 2, 4] and list(front.get_ydata()) == [90, 45, 30]
    assert list(_line(axes, "flops bound").get_xdata()) == [2.5, 2.5]


def test_a_classifiers_candidates_keep_accuracy_and_a_users_score_stays_as_given():
    report = _evolved([0.9, 0.8, 0.7, 0.5])
    for metric, label in [("acc", "validation accuracy"), (None, "score")]:
        [axes] = pareto_figure(report, METRICS[metric]).axes
        assert axes.get_yscale() == "linear" and axes.get_ylabel() == label
        assert axes.collections[0].get_offsets()[:, 1].tolist() == [0.9, 0.8, 0.7, 0.5]


def test_a_per_layer_map_draws_one_subplot_per_role_and_one_line_per_layer_with_its_choice_ringed():
    sensitivity = {
        "model.layers.depth": {1: 2.0, 2: 0.0},
        "model.layers.0.mlp.gate_proj.out_features": {32: 3.0, 64: 1.0, 96: 0.0},
        "model.layers.1.mlp.gate_proj.out_features": {32: 5.0, 64: 0.5, 96: 0.0},
    }
    config = {"model.layers.depth": 2, "model.layers.0.mlp.gate_proj.out_features": 64,
              "model.layers.1.mlp.gate_proj.out_features": 96}  # fmt: skip
    depth, width = _shown(sensitivity_figure(_sensitivity(sensitivity, config), METRICS["ppl"]))
    assert depth.get_title() == "model.layers.depth" and width.get_title().startswith(f"{WIDTH}\n2 hparams")
    assert depth.get_yscale() == width.get_yscale() == "log"
    for name, drops in sensitivity.items():
        axes = depth if name == "model.layers.depth" else width
        line = _line(axes, name)
        assert list(line.get_xdata()) == list(drops) and list(line.get_ydata()) == [10 + d for d in drops.values()]
        ring = _line(axes, f"chosen {name}")
        assert list(ring.get_xdata()) == [config[name]] and list(ring.get_ydata()) == [10 + drops[config[name]]]
    unpruned, subnet = (line for line in width.lines if line.get_label().startswith("_"))
    assert list(unpruned.get_ydata()) == [10, 10] and list(subnet.get_ydata()) == [12, 12]


def test_a_uniform_map_read_back_from_search_json_rings_each_roles_value_in_accuracy():
    sensitivity = {WIDTH: {32: 0.25, 64: 0.0}, "model.layers.*.self_attn.num_kv_heads": {1: 0.125, 2: 0.0}}
    config = {f"model.layers.{i}.mlp.gate_proj.out_features": 32 for i in range(2)}
    config |= {f"model.layers.{i}.self_attn.num_kv_heads": 2 for i in range(2)}
    report = json.loads(json.dumps({**_sensitivity(sensitivity, config), "original_score": 0.75}))  # str keys
    shown = _shown(sensitivity_figure(report, METRICS["acc"]))
    assert [axes.get_title() for axes in shown] == list(sensitivity)
    width, heads = shown
    assert width.get_yscale() == "linear" and list(_line(width, WIDTH).get_ydata()) == [0.5, 0.75]
    ring = _line(width, f"chosen {WIDTH}")
    assert list(ring.get_xdata()) == [32] and list(ring.get_ydata()) == [0.5]
    assert list(_line(heads, "chosen model.layers.*.self_attn.num_kv_heads").get_xdata()) == [2]


def test_a_search_without_a_map_plots_its_candidates(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plot, "save_figure", lambda figure, path: drawn.append(figure) or path)
    report = _evolved([-30.0, -45.0, -60.0, -90.0])
    search_plot({**report, "sensitivity": {}}, tmp_path / "pareto.png", "ppl")
    assert [axes.get_xlabel() for axes in drawn[0].axes] == ["flops (M multiply-accumulates per sample)"]


def test_the_search_stage_plots_a_tiny_language_models_sensitivity_map(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    files = str(Path(sysconfig.get_paths()["stdlib"]) / "json" / "*.py")
    tiny = [
        "model.kwargs.config={vocab_size: 300, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2,"
        " num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 32, use_cache: false}",
        "input_shape=[16]", "data.corpus=null", f"data.files=[{files}]", "data.vocab_size=300",
        "data.val_fraction=0.2", "data.batch_size=8", 'rules={nn.ModuleList: {"*": {min_depth: 1}}}',
        "search.score_samples=4", "search.importance=weights", "search.constraints={}",
    ]  # fmt: skip
    runner = CliRunner()
    convert = runner.invoke(app, ["-q", "convert", str(ROOT / "recipes/tiny_llama.yaml"), f"run_dir={tmp_path}", *tiny])
    assert convert.exit_code == 0, convert.stderr
    drawn, save = [], plot.save_figure
    monkeypatch.setattr(plot, "save_figure", lambda figure, path: save(drawn.append(figure) or figure, path))
    search = runner.invoke(app, ["-q", "search", convert.stdout.strip(), "--flops", "60%"])
    assert search.exit_code == 0, search.stderr
    assert (tmp_path / "pareto.png").stat().st_size > 10_000
    report = json.loads((tmp_path / "search.json").read_text())
    shown = _shown(drawn[0])
    assert [axes.get_title() for axes in shown] == list(report["sensitivity"]) and WIDTH in report["sensitivity"]
    for axes, (role, drops) in zip(shown, report["sensitivity"].items(), strict=True):
        assert axes.get_yscale() == "log"
        perplexities = [-(report["original_score"] - d) for d in drops.values()]
        assert list(_line(axes, role).get_ydata()) == pytest.approx(perplexities)
        [chosen] = {value for name, value in report["best"]["config"].items() if role_of(name) == role}
        assert list(_line(axes, f"chosen {role}").get_xdata()) == [chosen]
