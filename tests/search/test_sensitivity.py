import pytest

import nascli.nas as mtn
from nascli.cost.fvcore_count import fvcore_flops
from nascli.cost.model import cost_model
from nascli.errors import ConstraintError
from nascli.search.evolve import SearchState
from nascli.search.sensitivity import SensitivitySearch, _drops, sensitivity_map
from nascli.train.trainer import accuracy
from tests.search.common import LOADER, X, converted_resnet20


class CountingScore:
    """A score that falls as any hparam shrinks, by a weight per hparam (zero: the hparam is free)."""

    def __init__(self, costs, weights):
        self.maxima = {name: max(hp.choices) for name, hp in costs.space.hparams.items()}
        self.weights, self.calls = weights, 0

    def __call__(self, config):
        self.calls += 1
        return 1.0 - sum(self.weights[n] * (1 - v / self.maxima[n]) for n, v in config.items())


def _setup(free=()):
    costs = cost_model(converted_resnet20("fastnas"))
    weights = {name: 0.0 if name in free else 0.01 * (i + 1) for i, name in enumerate(costs.names)}
    bounds = {"flops": costs.cost(costs.named("max"))["flops"] * 0.5}
    return costs, CountingScore(costs, weights), bounds


def test_the_map_holds_each_hparams_score_drop_and_the_threshold_is_the_smallest_that_fits():
    costs, score, bounds = _setup()
    search = SensitivitySearch(costs, bounds, score)
    state = search.run()
    drops = sensitivity_map(costs, state.probes)
    for name, per_choice in drops.items():
        hp = costs.space.hparams[name]
        for choice in hp.choices:
            expected = score.weights[name] * (1 - choice / max(hp.choices))
            assert per_choice[choice] == pytest.approx(expected)
    choices = sum(len(hp.choices) - 1 for hp in costs.space.hparams.values())
    assert score.calls == 1 + choices + 1  # the unpruned model, each probe, the chosen subnet

    [best] = state.evaluated.values()
    assert best.flops <= bounds["flops"] and costs.cost(best.config)["flops"] == best.flops
    values = sorted({d for per_choice in drops.values() for d in per_choice.values()})
    fits = [costs.cost(search.at_threshold(drops, t))["flops"] <= bounds["flops"] for t in values]
    first = fits.index(True)
    assert search.threshold(drops) == values[first] and all(fits[first:])
    start = search.at_threshold(drops, values[first])
    assert all(best.config[n] >= start[n] for n in costs.names)  # the leftover budget was spent growing
    assert costs.cost(best.config)["flops"] > costs.cost(start)["flops"]
    for name, value in best.config.items():  # and no hparam can grow one more choice
        ladder = sorted(costs.space.hparams[name].choices)
        if value != ladder[-1]:
            grown = {**best.config, name: ladder[ladder.index(value) + 1]}
            assert costs.cost(grown)["flops"] > bounds["flops"]


def test_a_choice_that_costs_nothing_ends_that_hparams_probes():
    costs, score, bounds = _setup(free={"conv1.out_channels"})
    state = SensitivitySearch(costs, bounds, score).run()
    maximum = tuple(max(hp.choices) for hp in costs.space.hparams.values())
    free = costs.names.index("conv1.out_channels")
    probed = [row for row in state.probes if row != maximum and row[free] != maximum[free]]
    assert len(probed) == 1  # the smallest choice showed no drop; larger ones were not scored
    assert set(sensitivity_map(costs, state.probes)["conv1.out_channels"].values()) == {0.0}


def test_drops_ignore_scores_above_the_first_free_choice_and_never_grow_with_the_choice():
    assert _drops([1, 2, 3, 4], 1.0, {1: 0.5, 2: 1.0, 3: 0.9}) == {1: 0.5, 2: 0.0, 3: 0.0, 4: 0.0}
    assert _drops([1, 2, 3], 1.0, {1: 0.8, 2: 0.7}) == {1: pytest.approx(0.3), 2: pytest.approx(0.3), 3: 0.0}


def test_an_interrupted_measurement_resumes_without_scoring_again():
    costs, whole_score, bounds = _setup()
    whole = SensitivitySearch(costs, bounds, whole_score).run()

    class Stop(Exception):
        pass

    saved = {}

    def stop_after_three(state):
        saved["state"] = state.to_plain()
        if state.iteration == 3:
            raise Stop

    costs, score, bounds = _setup()
    with pytest.raises(Stop):
        SensitivitySearch(costs, bounds, score).run(on_iteration=stop_after_three)
    interrupted, score.calls = score.calls, 0
    resumed = SensitivitySearch(costs, bounds, score).run(SearchState.from_plain(saved["state"]))
    assert 0 < score.calls and interrupted + score.calls == whole_score.calls
    assert list(resumed.evaluated.values()) == list(whole.evaluated.values())
    assert resumed.probes == whole.probes


def test_unsatisfiable_bounds_are_refused_before_any_scoring():
    costs, score, _ = _setup()
    with pytest.raises(ConstraintError, match="smallest subnet"):
        SensitivitySearch(costs, {"flops": 1}, score)
    assert score.calls == 0


def test_mtn_search_prunes_a_fastnas_model_with_the_map_by_default():
    model = converted_resnet20("fastnas")
    config = {"data_loader": LOADER, "score_func": lambda m: accuracy(m, LOADER), "max_iter_data_loader": 2}
    model, history = mtn.search_select(model, {"flops": "40%"}, config=config)
    best = history["best"]
    assert set(history["sensitivity"]) == set(mtn.get_subnet_config(model, configurable=True))
    assert 0 <= history["original_score"] <= 1 and [best] == history["candidates"]
    assert mtn.get_subnet_config(model, configurable=True) == best["config"]
    full = cost_model(model).cost(cost_model(model).named("max"))["flops"]
    assert fvcore_flops(mtn.export(model), (X[:1],)) == best["flops"] <= 0.4 * full
