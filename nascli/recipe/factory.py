"""Build models from ``module:attr`` factory names, callables or modules."""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

from torch import nn

from nascli.errors import UserInputError


@contextlib.contextmanager
def user_code(where: str) -> Iterator[None]:
    """Run a user's module or factory without letting it end nascli or write to its stdout.

    stdout carries only the stage's result for the next command in a pipe, so what the user's
    code prints goes to stderr; a ``sys.exit`` there would end the stage with no checkpoint
    and the exit code the user's code chose, so it is an error naming that code.
    """
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    except SystemExit as exc:
        raise UserInputError(f"{where} called sys.exit({exc.code!r}) instead of returning") from None


def import_factory(spec: str, where: str = "model.factory") -> Callable[..., Any]:
    """Import ``"package.module:attr"`` (the attribute may be dotted) with a one-line error."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UserInputError(f"{where}: {spec!r} is not of the form 'module:attr'")
    try:
        with user_code(f"{where}: module {module_name!r}"):
            target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserInputError(f"{where}: cannot import module {module_name!r} ({exc})") from exc
    except UserInputError:
        raise
    except Exception as exc:  # the module's own code failed while it was imported
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UserInputError(f"{where}: importing module {module_name!r} raised {type(exc).__name__}: {first}") from exc
    for part in attr.split("."):
        if not hasattr(target, part):
            raise UserInputError(f"{where}: module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise UserInputError(f"{where}: {spec!r} is not callable")
    return target


def build_model(
    model_or_factory: nn.Module | Callable[..., nn.Module] | str | tuple, kwargs: dict[str, Any] | None = None
) -> nn.Module:
    """Return the module itself, or call the factory (a callable or a ``module:attr`` name).

    ModelOpt's ``(cls, args, kwargs)`` form is accepted too, so its scripts can hand over a model
    still to be built.
    """
    if isinstance(model_or_factory, nn.Module):
        return model_or_factory
    if isinstance(model_or_factory, tuple):
        if len(model_or_factory) != 3 or not isinstance(model_or_factory[1], (tuple, list)):
            raise UserInputError("model: a tuple must be (cls, args, kwargs), e.g. (ResNet, (), {'num_classes': 10})")
        factory, args, call_kwargs = model_or_factory
        if not isinstance(call_kwargs, dict):
            raise UserInputError(
                f"model: kwargs of (cls, args, kwargs) must be a dict, got {type(call_kwargs).__name__}"
            )
        return build_model(lambda: factory(*args, **call_kwargs), kwargs)
    factory = import_factory(model_or_factory) if isinstance(model_or_factory, str) else model_or_factory
    if not callable(factory):
        raise UserInputError(f"expected a model, a factory or 'module:attr', got {type(model_or_factory).__name__}")
    name = getattr(factory, "__name__", factory)
    try:
        with user_code(f"model factory {name!r}"):
            model = factory(**(kwargs or {}))
    except TypeError as exc:
        raise UserInputError(f"model factory {name!r}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise UserInputError(f"model factory {name!r} returned {type(model).__name__}, not an nn.Module")
    return model
