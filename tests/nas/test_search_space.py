"""SearchSpace(model): ModelOpt's view of a converted model's space."""

import math

import nascli.nas as mtn
from nascli.nas.search_space import SearchSpace
from nascli.space.hparam import Hparam
from tests.nas.test_modelopt_forms import X, small


def test_a_view_lists_samples_selects_and_exports_as_mtn_does():
    model = mtn.convert(small(), mode="fastnas", dummy_input=X)
    space = SearchSpace(model)
    names = [name for name, hp in space.named_hparams(configurable=True)]
    assert names == [name for name, _ in mtn.named_hparams(model, configurable=True)]
    assert all(isinstance(hp, Hparam) for _, hp in space.named_hparams())
    smallest = space.sample(min)
    assert all(smallest[name] == hp.min for name, hp in space.named_hparams(configurable=True))
    assert space.config(True) == {name: hp.min for name, hp in mtn.named_hparams(model, configurable=True)}
    space.select({names[0]: max(dict(space.named_hparams(True))[names[0]].choices)})
    assert mtn.get_subnet_config(model)[names[0]] == dict(space.named_hparams(True))[names[0]].max
    assert space.size() == math.prod(len(hp.choices) for _, hp in space.named_hparams(True)) > 1
    expected = mtn.export_copy(model)
    exported = space.export()  # in place, as ModelOpt's
    assert exported is model and not mtn.is_dynamic(model) and not mtn.is_converted(model)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in expected.state_dict().items()}
