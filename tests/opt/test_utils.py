"""ModelOpt's opt.utils helpers under their import path."""

import math

import pytest

import nascli.nas as mtn
from nascli.opt.utils import (
    get_hparam,
    is_configurable,
    is_dynamic,
    named_dynamic_modules,
    named_hparams,
    search_space_size,
)
from nascli.space.kinds import DynamicModule
from tests.nas.test_modelopt_forms import X, small


def test_named_hparams_and_is_dynamic_are_those_of_mtn():
    model = mtn.convert(small(), mode="autonas", dummy_input=X)
    assert is_dynamic(model) and not is_dynamic(mtn.export_copy(model))
    assert list(named_hparams(model, configurable=True)) == list(mtn.named_hparams(model, configurable=True))


def test_the_size_and_members_of_a_search_space():
    plain = small()
    assert search_space_size(plain) == 1 and not is_configurable(plain)
    assert list(named_dynamic_modules(plain)) == []
    model = mtn.convert(small(), mode="autonas", dummy_input=X)
    choices = [len(hp.choices) for _, hp in mtn.named_hparams(model, configurable=True)]
    assert search_space_size(model) == math.prod(choices) > 1 and is_configurable(model)
    name, hparam = next(iter(mtn.named_hparams(model, configurable=True)))
    assert get_hparam(model, name) is hparam
    with pytest.raises(KeyError, match="'nothing' is not an attribute of the model's search space"):
        get_hparam(model, "nothing")
    dynamic = dict(named_dynamic_modules(model))
    assert dynamic and all(isinstance(m, DynamicModule) for m in dynamic.values())
    assert list(named_dynamic_modules(mtn.export(model))) == []
