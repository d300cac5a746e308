"""The run directory: resolved recipe, stage checkpoints and the metrics log."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one JSON line to ``metrics.jsonl``: a log that survives crashes line by line."""
    run_dir.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"time": round(time.time(), 3), **record})
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(line + "\n")
