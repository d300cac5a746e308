import pytest

from nascli.cost.constraints import parse_bound, resolve_constraints
from nascli.errors import UserInputError


@pytest.mark.parametrize(
    "value, expected",
    [(2e9, (2e9, False)), ("2e9", (2e9, False)), ("2G", (2e9, False)), ("350M", (350e6, False)),
     ("1.5k", (1500, False)), ("60%", (0.6, True)), ("100%", (1.0, True)), (7, (7.0, False))],
)  # fmt: skip
def test_accepted_forms(value, expected):
    assert parse_bound("flops", value) == pytest.approx(expected)


@pytest.mark.parametrize(
    "value, message",
    [("banana", "expected a positive number"), ("-3", "expected a positive number"), (-3, "greater than zero"),
     ("150%", r"must be in \(0, 100\]"), ("0%", r"must be in \(0, 100\]"), ("0", "greater than zero"),
     (True, "expected a positive number"), ("x%", "expected a positive number"), ("1e400", "finite number"),
     ("nan", "finite number"), (float("inf"), "finite number"), ("1e300T", "finite number")],
)  # fmt: skip
def test_bad_values_are_one_clear_error(value, message):
    with pytest.raises(UserInputError, match=message):
        parse_bound("flops", value)


def test_percentages_are_of_the_original_model():
    bounds = resolve_constraints({"flops": "50%", "params": "1M"}, {"flops": 1000, "params": 5_000_000})
    assert bounds == {"flops": 500, "params": 1e6}
    with pytest.raises(UserInputError, match="unknown"):
        resolve_constraints({"latencyy": 3}, {"flops": 1, "params": 1})
