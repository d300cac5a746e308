import copy

import pytest
import torch
from torch.utils.data import TensorDataset

import nascli.nas as mtn
from nascli.data import Splits
from nascli.models import resnet20
from nascli.recipe.schema import DataSpec, TrainSpec
from nascli.train.trainer import SupernetTrainer

X, Y = torch.randn(96, 1, 8, 8), torch.randint(0, 10, (96,))
SPLITS = Splits(TensorDataset(X[:64], Y[:64]), TensorDataset(X[64:], Y[64:]), TensorDataset(X, Y), 10, (1, 8, 8))
DATA = DataSpec(batch_size=16, eval_batch_size=32)
SPEC = TrainSpec(epochs=1, lr=0.05, num_random=1, bn_calib_batches=1, checkpoint_every=2, device="cpu")


class Interrupted(Exception):
    pass


def _trainer(weights=None, spec=SPEC):
    torch.manual_seed(0)
    model = mtn.convert(resnet20(in_channels=1, width=8), dummy_input=X[:1])
    if weights is not None:
        model.load_state_dict(weights)
    return SupernetTrainer(model, SPLITS, DATA, spec, seed=0)


def test_an_epoch_resumed_mid_way_logs_the_loss_of_the_whole_epoch():
    whole = []
    _trainer().fit(lambda state: None, whole.append)

    saved = {}

    def interrupt(state):
        saved.update(state=state, weights=copy.deepcopy(trainer.model.state_dict()))
        raise Interrupted

    trainer = _trainer()
    try:
        trainer.fit(interrupt, lambda record: None)
    except Interrupted:
        pass
    assert saved["state"]["step_in_epoch"] == 2  # of 4: the epoch was cut in the middle
    resumed = []
    again = _trainer(saved["weights"])
    again.load_state_dict(saved["state"])
    again.fit(lambda state: None, resumed.append)
    assert resumed[0]["loss"] == whole[0]["loss"]


def _epoch_in_layout(splits: Splits, x: torch.Tensor, channels_last: bool) -> tuple[dict, set[bool], bool]:
    """(the epoch's record, whether each batch reached a step NHWC, whether the weights were NHWC)."""
    torch.manual_seed(0)
    model = mtn.convert(resnet20(in_channels=3, width=8), dummy_input=x[:1])
    trainer = SupernetTrainer(model, splits, DATA, SPEC.model_copy(update={"channels_last": channels_last}), seed=0)
    seen, records, step = set(), [], trainer._step

    def watched(batch):
        seen.add(batch[0].is_contiguous(memory_format=torch.channels_last))
        return step(batch)

    trainer._step = watched
    trainer.fit(lambda state: None, records.append)
    return records[0], seen, model.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_channels_last_trains_nhwc_to_the_same_losses():
    """``train.channels_last`` changes the memory layout only: the epoch's loss agrees with the NCHW run."""
    x = torch.randn(96, 3, 8, 8, generator=torch.Generator().manual_seed(0))  # three channels: one is NHWC already
    splits = Splits(TensorDataset(x[:64], Y[:64]), TensorDataset(x[64:], Y[64:]), TensorDataset(x, Y), 10, (3, 8, 8))
    nchw, nchw_batches, nchw_weights = _epoch_in_layout(splits, x, channels_last=False)
    nhwc, nhwc_batches, nhwc_weights = _epoch_in_layout(splits, x, channels_last=True)
    assert (nchw_batches, nchw_weights, nhwc_batches, nhwc_weights) == ({False}, False, {True}, True)
    # NHWC convolutions sum in another order, and the difference grows over the epoch's SGD steps
    assert abs(nhwc["loss"] - nchw["loss"]) < 1e-3 * abs(nchw["loss"])


def test_split_students_train_the_smaller_subnets_on_slices_of_each_batch_and_resume_bit_for_bit():
    spec = SPEC.model_copy(update={"split_students": True})
    trainer = _trainer(spec=spec)
    sizes = []
    handle = trainer.model.register_forward_pre_hook(lambda m, a: sizes.append(len(a[0])) if m.training else None)
    trainer.fit(lambda state: None, lambda record: None)
    handle.remove()
    # 64 training images in batches of 16: the max, then min and 1 random (then BN recalibration's forwards)
    assert sizes[:12] == [16, 8, 8] * 4
    saved = {}

    def interrupt(state):
        saved.update(state=state, weights=copy.deepcopy(cut.model.state_dict()))
        raise Interrupted

    cut = _trainer(spec=spec)
    try:
        cut.fit(interrupt, lambda record: None)
    except Interrupted:
        pass
    again = _trainer(saved["weights"], spec)
    again.load_state_dict(saved["state"])
    again.fit(lambda state: None, lambda record: None)
    whole, resumed = trainer.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(whole[name], resumed[name]) for name in whole)


def test_split_students_refuse_a_batch_with_fewer_than_two_rows_per_student():
    model = mtn.convert(resnet20(in_channels=1, width=8), dummy_input=X[:1])
    spec = SPEC.model_copy(update={"split_students": True, "num_random": 2})
    with pytest.raises(ValueError, match="5 rows per process give the 3 smaller subnets fewer than 2 rows each"):
        SupernetTrainer(model, SPLITS, DataSpec(batch_size=5), spec, seed=0)
