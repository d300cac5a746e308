import copy
import random

import pytest
import torch
from torch.utils.data import TensorDataset

import nascli.nas as mtn
from nascli.cost.model import cost_model
from nascli.data import Splits
from nascli.errors import UserInputError
from nascli.models import resnet20
from nascli.recipe.schema import DataSpec, TrainSpec
from nascli.space.space import get_space
from nascli.train.subnet_draw import BoundedDraw
from nascli.train.trainer import SupernetTrainer

X, Y = torch.randn(96, 1, 8, 8), torch.randint(0, 10, (96,))
SPLITS = Splits(TensorDataset(X[:64], Y[:64]), TensorDataset(X[64:], Y[64:]), TensorDataset(X, Y), 10, (1, 8, 8))
DATA = DataSpec(batch_size=16, eval_batch_size=32)


class Interrupted(Exception):
    pass


def _model(weights=None):
    torch.manual_seed(0)
    model = mtn.convert(resnet20(in_channels=1, width=16), dummy_input=X[:1])
    if weights is not None:
        model.load_state_dict(weights)
    return model


def _trained_flops(spec: TrainSpec, model=None) -> list[float]:
    """The flops, as a share of the max subnet's, of every subnet a one-epoch run trains (forwards with gradients)."""
    model = model or _model()
    costs, space = cost_model(model), get_space(model)
    full = costs.cost(costs.named("max"))["flops"]
    seen = []

    def record(module, args):
        if torch.is_grad_enabled():
            seen.append(costs.cost(space.config())["flops"] / full)

    model.register_forward_pre_hook(record)
    SupernetTrainer(model, SPLITS, DATA, spec, seed=0).fit(lambda state: None, lambda record: None)
    return seen


def test_random_subnets_of_a_plain_step_are_drawn_within_the_bound_and_vary():
    spec = TrainSpec(epochs=1, sandwich=False, bn_calib_batches=1, device="cpu")
    unbounded = _trained_flops(spec)
    assert max(unbounded) > 0.5  # without the bound a draw exceeds it: the check below can fail
    bounded = _trained_flops(spec.model_copy(update={"subnet_constraints": {"flops": "50%"}}))
    assert len(bounded) == 4 and max(bounded) <= 0.5
    assert len(set(bounded)) > 1


def test_the_sandwich_keeps_its_largest_and_smallest_subnets_and_bounds_the_random_ones():
    spec = TrainSpec(epochs=1, num_random=2, bn_calib_batches=1, device="cpu", subnet_constraints={"flops": "40%"})
    seen = _trained_flops(spec)
    for step in range(4):
        largest, smallest, *random_ones = seen[4 * step : 4 * step + 4]
        assert largest == 1.0 and smallest == min(seen)
        assert all(share <= 0.4 for share in random_ones)


def test_a_bounded_run_resumed_mid_epoch_trains_the_same_subnets_to_the_same_weights():
    spec = TrainSpec(epochs=1, sandwich=False, bn_calib_batches=1, checkpoint_every=2, device="cpu")
    spec = spec.model_copy(update={"subnet_constraints": {"flops": "50%"}})
    whole = SupernetTrainer(_model(), SPLITS, DATA, spec, seed=0)
    whole.fit(lambda state: None, lambda record: None)
    saved = {}

    def interrupt(state):
        saved.update(state=state, weights=copy.deepcopy(cut.model.state_dict()))
        raise Interrupted

    cut = SupernetTrainer(_model(), SPLITS, DATA, spec, seed=0)
    with pytest.raises(Interrupted):
        cut.fit(interrupt, lambda record: None)
    resumed = SupernetTrainer(_model(saved["weights"]), SPLITS, DATA, spec, seed=0)
    resumed.load_state_dict(saved["state"])
    resumed.fit(lambda state: None, lambda record: None)
    for name, tensor in whole.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name


@pytest.mark.parametrize(
    ("constraints", "message"),
    [
        ({"flops": "1%"}, "train.subnet_constraints.flops: the smallest subnet needs"),
        ({"latency": "2ms"}, "train.subnet_constraints.latency: training draws subnets by flops, params or memory"),
        ({"flop": "50%"}, "train.subnet_constraints: constraint 'flop': unknown"),
        ({"params": "lots"}, "train.subnet_constraints: constraint params='lots'"),
    ],
)
def test_bounds_no_subnet_can_meet_or_that_training_cannot_check_are_one_error(constraints, message):
    with pytest.raises(UserInputError, match="^" + message.replace("(", r"\(")) as error:
        BoundedDraw(_model(), constraints, random.Random(0))
    assert "\n" not in str(error.value)
