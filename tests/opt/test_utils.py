"""ModelOpt's opt.utils helpers under their import path."""

import nascli.nas as mtn
from nascli.opt.utils import is_dynamic, named_hparams
from tests.nas.test_modelopt_forms import X, small


def test_named_hparams_and_is_dynamic_are_those_of_mtn():
    model = mtn.convert(small(), mode="autonas", dummy_input=X)
    assert is_dynamic(model) and not is_dynamic(mtn.export(model))
    assert list(named_hparams(model, configurable=True)) == list(mtn.named_hparams(model, configurable=True))
