"""`ConversionLog`: ``OUT/conversion.json``, the settings the shards were written with and what each shard holds.

It is written before the first shard and again after each one (atomically), so a killed and resumed conversion
adds to the counts of the earlier runs instead of replacing them. A resume whose settings would change the shard
layout (which entries go to which shard) or the shards' content is refused, naming the setting: the new shards would
no longer fit the ones already written.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Mapping

from memclip.atomic_io import atomic_write_json

from ..error_reporting import UserError

LOG_FILE = "conversion.json"


class ConversionLog:
    """The conversion record of one output folder.

    Args:
        out: the output folder.
        settings: ``{flag or property: value}`` that decide the shards (``--samples-per-shard``, ``--val-size``,
            ``entries``, ...).
        about: what else to record (source file, format, ...).

    Raises:
        UserError: ``out`` was converted with other settings, or holds shards that no conversion.json describes.
    """

    def __init__(self, out: Path, settings: Mapping[str, Any], about: Mapping[str, Any]) -> None:
        self.path = out / LOG_FILE
        self.data: Dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8")) if self.path.is_file() else {}
        if self.data:
            written = self.data.get("settings", {})
            changed = [f"{key} {settings[key]} (the shards there were written with {written.get(key)})"
                       for key in settings if written.get(key) != settings[key]]
            if changed:
                raise UserError(f"--out {out} was converted with other settings: {'; '.join(changed)}. Resume with "
                                "the same settings, or convert into another --out")
        elif any(out.glob("*/*.tar")):
            raise UserError(f"--out {out} holds shards but no {LOG_FILE} says how they were written: convert into "
                            "another --out")
        self.data.update(about)
        self.data["settings"] = dict(settings)
        self.data.setdefault("splits", {})
        self._write()

    def shards(self, split: str) -> Dict[str, Dict[str, Any]]:
        """``{shard name: {"written": n, "skipped": {...}}}`` of the shards of ``split`` finished so far."""
        return self.data["splits"].setdefault(split, {}).setdefault("per_shard", {})

    def start_split(self, split: str, shards: int, already_done: int) -> None:
        self.data["splits"].setdefault(split, {}).update(shards=shards, shards_already_done=already_done)
        self._totals(split)

    def record(self, split: str, shard: str, written: int, skipped: Mapping[str, int],
               lacking: Mapping[str, int] = None) -> None:
        """A finished shard of ``split``: its samples, what it skipped, and what its written samples lack
        (``{"long_caption": n}``)."""
        self.shards(split)[shard] = {"written": written, "skipped": dict(sorted(skipped.items())),
                                     "lacking": dict(sorted((lacking or {}).items()))}
        self._totals(split)

    def totals(self, split: str) -> Dict[str, Any]:
        return {k: v for k, v in self.data["splits"][split].items() if k != "per_shard"}

    def finish(self, seconds: float) -> None:
        self.data["seconds"] = round(seconds, 1)
        self._write()

    def _totals(self, split: str) -> None:
        record = self.data["splits"][split]
        skipped: Counter = Counter()
        lacking: Counter = Counter()
        for shard in record["per_shard"].values():
            skipped.update(shard["skipped"])
            lacking.update(shard.get("lacking", {}))
        record["samples_written"] = sum(shard["written"] for shard in record["per_shard"].values())
        record["skipped"] = dict(sorted(skipped.items()))
        record["lacking"] = dict(sorted(lacking.items()))
        self._write()

    def _write(self) -> None:
        atomic_write_json(self.path, self.data)
