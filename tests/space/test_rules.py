import pytest
from torch import nn

from nascli.errors import UserInputError
from nascli.nas.config import AutoNASConfig, FastNASConfig, resolve_mode
from nascli.space.hparam import channel_choices
from nascli.space.rules import merge_rules, settings_for, validate_rules


def test_channel_choices_round_to_the_nearest_multiple_of_the_divisor():
    assert channel_choices(64, (0.5, 0.67, 1.0), 32) == (32, 64)
    assert channel_choices(512, (0.5, 0.67, 1.0), 32) == (256, 352, 512)
    assert channel_choices(1024, (0.5, 0.67, 1.0), 32) == (512, 672, 1024)


def test_channel_choices_never_exceed_the_size_nor_drop_below_the_divisor():
    assert channel_choices(16, (0.5, 1.0), 32) == (16,)
    assert channel_choices(64, (0.05, 0.1), 32) == (32, 64)


def test_channel_choices_stay_whole_groups():
    assert channel_choices(64, (0.25, 0.5, 0.75, 1.0), 8, multiple_of=16) == (16, 32, 48, 64)
    assert channel_choices(96, (0.5,), 8, multiple_of=32) == (96,)


def test_later_patterns_override_and_none_excludes():
    rules = validate_rules(
        {
            "nn.Conv2d": {"*": {"out_channels_ratio": [0.5, 1.0]}, "layer4.*": {"channel_divisor": 8}, "fc*": None},
            "nn.Linear": None,
        }
    )
    conv = nn.Conv2d(3, 3, 1)
    assert settings_for(rules, "layer1.conv", conv) == {"out_channels_ratio": (0.5, 1.0)}
    assert settings_for(rules, "layer4.conv", conv) == {"out_channels_ratio": (0.5, 1.0), "channel_divisor": 8}
    assert settings_for(rules, "fcx", conv) is None
    assert settings_for(rules, "fc", nn.Linear(2, 2)) is None
    assert settings_for(rules, "bn", nn.BatchNorm2d(3)) is None


@pytest.mark.parametrize(
    "rules, message",
    [
        ({"nn.Conv9d": {}}, "rules.nn.Conv9d: unknown layer type"),
        ({"nn.Conv2d": {"*": {"ratio": [0.5]}}}, "rules.nn.Conv2d.*.ratio: unknown setting"),
        ({"nn.Conv2d": {"*": {"out_channels_ratio": [1.5]}}}, "ratio 1.5 is not a number in (0, 1]"),
        ({"nn.Conv2d": {"*": {"kernel_size": [4]}}}, "kernel size 4 is not a positive odd integer"),
        ({"nn.Conv2d": {"*": {"channel_divisor": 0}}}, "expected an integer >= 1"),
        ({"nn.Conv2d": ["*"]}, "expected a mapping of module-name pattern"),
    ],
)
def test_bad_rules_name_the_key_path(rules, message):
    with pytest.raises(UserInputError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        validate_rules(rules)


def test_configs_are_fresh_dicts_that_take_the_modelopt_idiom():
    config = AutoNASConfig()
    config["nn.Conv2d"]["*"]["out_channels_ratio"] += (0.1,)
    assert 0.1 in config["nn.Conv2d"]["*"]["out_channels_ratio"]
    assert 0.1 not in AutoNASConfig()["nn.Conv2d"]["*"]["out_channels_ratio"]
    assert "nn.Sequential" not in FastNASConfig()
    assert len(FastNASConfig()["nn.Conv2d"]["*"]["out_channels_ratio"]) == 20


def test_merge_rules_overlays_settings():
    merged = merge_rules(AutoNASConfig(), {"nn.Conv2d": {"*": {"channel_divisor": 8}}, "nn.Linear": None})
    assert merged["nn.Conv2d"]["*"] == {"out_channels_ratio": (0.5, 0.67, 1.0), "kernel_size": (), "channel_divisor": 8}
    assert merged["nn.Linear"] is None


@pytest.mark.parametrize(
    "mode, name", [("autonas", "autonas"), (["fastnas"], "fastnas"), ([("autonas", AutoNASConfig())], "autonas")]
)
def test_resolve_mode_forms(mode, name):
    assert resolve_mode(mode)[0] == name


def test_resolve_mode_rejects_unknown_modes():
    with pytest.raises(UserInputError, match="unknown mode 'gradnas'"):
        resolve_mode("gradnas")
