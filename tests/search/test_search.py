import pytest
import torch

import nascli.nas as mtn
from nascli.cost.fvcore_count import count_params, fvcore_flops
from nascli.cost.model import cost_model
from nascli.errors import ConstraintError, UserInputError
from nascli.search.pareto import pareto_front
from nascli.train.trainer import accuracy
from tests.search.common import LOADER, X, converted_resnet20


def _search(model, constraints, **settings):
    config = {"data_loader": LOADER, "score_func": lambda m: accuracy(m, LOADER), "population": 12, "parents": 4,
              "iterations": 3, "max_iter_data_loader": 2, **settings}  # fmt: skip
    return mtn.search(model, constraints, config=config)


def test_pareto_front_on_a_hand_made_set():
    costs = [10, 20, 20, 30, 40, 15, 50]
    scores = [0.5, 0.7, 0.6, 0.65, 0.9, 0.5, 0.9]
    assert pareto_front(costs, scores) == [0, 1, 4]
    assert pareto_front([1, 1], [0.3, 0.3]) == [0]


@pytest.mark.parametrize("algorithm", ["evolve", "random"])
def test_the_best_subnet_meets_every_constraint(algorithm):
    model = converted_resnet20("autonas")
    full = cost_model(model).cost(cost_model(model).named("max"))
    exported, history = _search(model, {"flops": "50%", "params": full["params"] * 0.6}, algorithm=algorithm)
    best = history["best"]
    assert exported is model and not mtn.is_converted(model)  # exported in place, as ModelOpt's search does
    assert fvcore_flops(exported, (X[:1],)) == best["flops"] <= full["flops"] * 0.5
    assert count_params(exported) == best["params"] <= full["params"] * 0.6
    assert all(c["flops"] <= full["flops"] * 0.5 for c in history["candidates"])
    assert len({tuple(c["config"].values()) for c in history["candidates"]}) == len(history["candidates"])
    assert best["score"] == max(c["score"] for c in history["candidates"])


def test_search_is_deterministic_for_a_seed():
    runs = [_search(converted_resnet20("autonas"), {"flops": "60%"}, seed=3)[1] for _ in range(2)]
    assert runs[0]["candidates"] == runs[1]["candidates"] and runs[0]["best"] == runs[1]["best"]
    other = _search(converted_resnet20("autonas"), {"flops": "60%"}, seed=4)[1]
    assert [c["config"] for c in other["candidates"]] != [c["config"] for c in runs[0]["candidates"]]


def test_unsatisfiable_constraints_raise():
    with pytest.raises(ConstraintError, match="smallest subnet"):
        _search(converted_resnet20("autonas"), {"flops": "1%"})


def test_an_interrupted_search_resumes_to_the_same_result(tmp_path):
    from nascli.search.evolve import ConstrainedSearch, SearchSettings, SearchState

    model = converted_resnet20("autonas")
    costs = cost_model(model)
    bounds = {"flops": costs.cost(costs.named("max"))["flops"] * 0.6}

    def score(config):  # any deterministic function of the config will do
        return sum(v * (i + 1) for i, v in enumerate(config.values())) % 97 / 97

    settings = SearchSettings(population=10, parents=3, iterations=4, seed=1)
    whole = ConstrainedSearch(costs, bounds, score, settings).run()

    class Stop(Exception):
        pass

    def stop_after_two(state):
        torch.save({"search": state.to_plain()}, tmp_path / "state.pt")
        if state.iteration == 2:
            raise Stop

    with pytest.raises(Stop):
        ConstrainedSearch(costs, bounds, score, settings).run(on_iteration=stop_after_two)
    saved = SearchState.from_plain(torch.load(tmp_path / "state.pt", weights_only=True)["search"])
    resumed = ConstrainedSearch(costs, bounds, score, settings).run(saved)
    assert resumed.iteration == 4
    assert list(resumed.evaluated) == list(whole.evaluated) and resumed.population == whole.population


def test_a_population_smaller_than_the_parents_still_breeds_children():
    from nascli.search.evolve import ConstrainedSearch, SearchSettings

    costs = cost_model(converted_resnet20("autonas"))
    bounds = {"flops": costs.cost(costs.named("max"))["flops"] * 0.6}
    settings = SearchSettings(population=6, parents=25, iterations=3)
    state = ConstrainedSearch(costs, bounds, lambda c: 0.0, settings).run()
    assert len(state.evaluated) == 6 + 3 + 3  # 6, then the best 3 (half) and 3 children per generation


def test_a_latency_bound_filters_candidates_by_predicted_latency():
    from nascli.cost.latency import LatencyModel
    from nascli.search.evolve import ConstrainedSearch, SearchSettings

    model = converted_resnet20("autonas")
    costs = cost_model(model)
    timing = LatencyModel(model, repeats=1)
    timing.calibrate()
    bound = timing.predict(costs.named("centroid"))
    state = ConstrainedSearch(costs, {"latency": bound}, lambda c: 0.0, SearchSettings(10, 3), latency=timing).run()
    assert state.evaluated and all(c.latency <= bound for c in state.evaluated.values())
    with pytest.raises(ConstraintError, match="latency"):
        ConstrainedSearch(costs, {"latency": 1e-9}, lambda c: 0.0, SearchSettings(), latency=timing)


def test_candidates_are_scored_in_eval_mode_and_the_callers_mode_is_kept():
    model = converted_resnet20("autonas").train()
    modes = []
    config = {"data_loader": LOADER, "score_func": lambda m: modes.append(m.training) or 0.5, "population": 4,
              "parents": 2, "iterations": 1, "max_iter_data_loader": 1}  # fmt: skip
    model, _ = mtn.search(model, {"flops": "60%"}, config=config)
    assert modes and not any(modes) and model.training


@pytest.mark.parametrize("score", [float("nan"), float("inf"), "high", None])
def test_a_score_that_is_not_a_finite_number_stops_the_search(score):
    config = {"data_loader": LOADER, "score_func": lambda m: score, "population": 4, "parents": 2, "iterations": 1,
              "max_iter_data_loader": 1}  # fmt: skip
    with pytest.raises(UserInputError, match="score_func returned .*: expected a finite number"):
        mtn.search(converted_resnet20("autonas"), {"flops": "60%"}, config=config)
