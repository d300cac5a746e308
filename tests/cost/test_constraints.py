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


@pytest.mark.parametrize(
    "value, expected",
    [("2GB", 2e9), ("512MB", 512e6), ("1.5GiB", 1.5 * 2**30), ("64 KiB", 65536), ("100B", 100), (3e9, 3e9)],
)
def test_memory_takes_sizes_in_bytes(value, expected):
    assert parse_bound("memory", value) == pytest.approx((expected, False))


@pytest.mark.parametrize("value", ["2parsecs", "2GHz", "GB", "-1GB"])
def test_a_memory_bound_that_is_not_a_size_is_one_clear_error(value):
    with pytest.raises(UserInputError, match="expected a size such as 2GB"):
        parse_bound("memory", value)
