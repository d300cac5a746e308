"""Which code a checkpoint may make nascli call: only what this user wrote, or names again.

A checkpoint records the recipe that produced it, and a recipe names code: the model factory
with its keyword arguments, and optionally a search score function. Loading the checkpoint of a
stranger must never call that code (a factory ``os:system`` with a ``command`` keyword would
run a shell command). Every checkpoint therefore carries an HMAC of the code it names, keyed by
a secret that lives in the user's config directory and never leaves this machine. A checkpoint
whose signature verifies was written by this user here, and its code is what they named when
they wrote it; for any other checkpoint the user must name the code again (a ``key=value``
override on the command line, or the factory argument of ``nascli.opt.restore``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from typing import Any

from nascli.userdirs import config_dir

KEY_FILE = "checkpoint.key"

#: recipe keys (dotted) whose values name code to import or call
CODE_KEYS = ("model.factory", "model.kwargs", "search.score_func")


def _key(create: bool) -> bytes | None:
    """The user's signing key, made on first use (mode 0600); None where it cannot be had.

    A new key is written whole to a temp file and hard-linked into place, which fails if
    another process (another torchrun rank) got there first: every process then reads the
    same complete key, never an empty file another one has just created.
    """
    path = config_dir() / KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        if not create:
            return None
    key = secrets.token_bytes(32)
    tmp = path.with_name(f".{KEY_FILE}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(key.hex())
        os.link(tmp, path)
    except FileExistsError:  # another process made it first
        return _key(create=False)
    except OSError:  # an unwritable home: checkpoints go unsigned and need their code named
        return None
    finally:
        tmp.unlink(missing_ok=True)
    return key


def code_references(recipe: dict[str, Any] | None, model: dict[str, Any] | None) -> dict[str, Any]:
    """The code a checkpoint names, by dotted recipe key (the model spec stands in without a recipe)."""
    recipe = recipe or {}
    spec = recipe.get("model") or model or {}
    search = recipe.get("search") or {}
    return {
        "model.factory": spec.get("factory"),
        "model.kwargs": spec.get("kwargs") or {},
        "search.score_func": search.get("score_func"),
    }


def _digest(key: bytes, references: dict[str, Any]) -> str:
    canonical = json.dumps(references, sort_keys=True, default=repr).encode()
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


def sign(references: dict[str, Any]) -> str | None:
    """This user's signature of ``references``; None where no key can be kept."""
    key = _key(create=True)
    return _digest(key, references) if key else None


def is_signed_here(references: dict[str, Any], signature: Any) -> bool:
    """Whether ``signature`` is this user's for exactly these references."""
    key = _key(create=False)
    return bool(key and isinstance(signature, str) and hmac.compare_digest(signature, _digest(key, references)))


def describe(references: dict[str, Any]) -> str:
    """The code a checkpoint names, as the user would write it to trust it."""
    parts = []
    if references["model.factory"]:
        kwargs = f" with kwargs {references['model.kwargs']}" if references["model.kwargs"] else ""
        parts.append(f"model.factory={references['model.factory']}{kwargs}")
    if references["search.score_func"]:
        parts.append(f"search.score_func={references['search.score_func']}")
    return " and ".join(parts)
