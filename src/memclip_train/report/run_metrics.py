"""A run's ``metrics.jsonl``, read back: its records, and the (steps, values) series of one metric. The plot program,
the run card and the demo's figures read runs through it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Sequence, Tuple


def read_metrics(run_dir: Path) -> List[dict]:
    """The records of ``run_dir/metrics.jsonl`` (a line a kill left half-written is skipped); [] without the file."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def series(records: Sequence[dict], kind: str, key: str) -> Tuple[List[int], List[float]]:
    """(steps, values) of ``key`` in the records of ``kind`` (train, val, zeroshot) that hold a number for it."""
    rows = [r for r in records if r.get("kind") == kind and isinstance(r.get(key), (int, float))]
    return [r["step"] for r in rows], [r[key] for r in rows]
