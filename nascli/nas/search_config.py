"""ModelOpt's search config keys, read into nascli's searcher settings.

ModelOpt names the same settings differently (``num_iters`` for ``iterations``) and has keys
for things nascli does another way; each is either translated here or refused with the
replacement in the error, so no ModelOpt script changes behaviour silently.
"""

from __future__ import annotations

from typing import Any

from nascli.errors import UserInputError

#: ModelOpt's key -> nascli's key of the same setting
RENAMED = {"num_iters": "iterations", "population_size": "population", "candidate_size": "parents"}


def translate_search_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a search config into (nascli's settings, ModelOpt's extras: checkpoint, verbose).

    ``deployment`` selects ModelOpt's on-device latency measurement; nascli predicts latency from
    a per-layer table through the CLI, so a deployment is refused with that replacement.
    """
    settings: dict[str, Any] = {}
    extras: dict[str, Any] = {"checkpoint": config.get("checkpoint"), "verbose": config.get("verbose", False)}
    if config.get("deployment") is not None:
        raise UserInputError(
            "search: config key 'deployment' (latency measured on a device) is not supported in Python;"
            " use `nascli search --latency 15ms --device cpu`, which predicts latency from a timed table"
        )
    for key, value in config.items():
        if key in ("checkpoint", "verbose", "deployment"):
            continue
        target = RENAMED.get(key, key)
        if target in settings:
            names = sorted(k for k in config if RENAMED.get(k, k) == target)
            raise UserInputError(f"search: config keys {names} name the same setting; give one")
        settings[target] = value
    if (
        extras["checkpoint"] is not None
        and not isinstance(extras["checkpoint"], (str, bytes))
        and not hasattr(extras["checkpoint"], "__fspath__")
    ):
        raise UserInputError(f"search: config key 'checkpoint' must be a file path, got {extras['checkpoint']!r}")
    return settings, extras
