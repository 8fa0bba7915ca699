"""`CsvStream`: batches from a caption table (open_clip's CSV format: image path and caption columns)."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import pandas as pd

from memclip.errors import InputError

from .shard_stream import BatchStream, SkipCounter
from .sources import read_table


def read_caption_table(path: str, img_key: str, caption_key: str, long_caption_key: Optional[str],
                       separator: str) -> pd.DataFrame:
    """The table with its image, caption and (optional) long-caption columns.

    Raises:
        ValueError: a named column is missing (the message lists the table's columns), or the table has no rows.
    """
    table = read_table(path, separator)
    wanted = [img_key, caption_key] + ([long_caption_key] if long_caption_key else [])
    missing = [c for c in wanted if c not in table.columns]
    if missing:
        raise InputError(f"{path}: missing columns {missing} (the table has {list(table.columns)}); "
                         "set --csv-img-key / --csv-caption-key / --csv-long-caption-key / --csv-separator")
    if table.empty:
        raise InputError(f"{path}: the table has no rows")
    return table


class CsvStream(BatchStream):
    """Rows permuted per (seed, epoch, cycle), split over (rank, worker) slots, read as raw samples
    ``{"jpg": bytes, "txt": caption, "json": {"long": ...}}`` so the same decoder serves shards and tables.

    Image paths are absolute or relative to the table's folder. Every cell is read as text: an empty caption cell
    is a missing caption and a row whose image file does not exist has no image, both skipped and counted by the
    decoder; a table without rows is an error.
    """

    def __init__(self, path: str, decoder: Callable[[Mapping[str, Any]], Dict[str, Any]], batch_size: int,
                 batches_per_worker: Optional[int], img_key: str = "filepath", caption_key: str = "title",
                 long_caption_key: Optional[str] = None, separator: str = "\t", seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        super().__init__(decoder, batch_size, batches_per_worker, seed, 0, rank, world_size)
        self.path = path
        table = read_caption_table(path, img_key, caption_key, long_caption_key, separator)
        self.images = table[img_key].tolist()
        self.captions = table[caption_key].tolist()
        self.long_captions = table[long_caption_key].tolist() if long_caption_key else None
        self.root = Path(path).parent

    def __len__(self) -> int:
        return len(self.images)

    def _row(self, index: int) -> Dict[str, Any]:
        image_path = Path(self.images[index])
        image_path = image_path if image_path.is_absolute() else self.root / image_path
        raw: Dict[str, Any] = {"__key__": str(index), "__url__": self.path, "txt": self.captions[index]}
        if self.long_captions is not None:
            raw["json"] = {"long": self.long_captions[index]}
        raw["jpg"] = image_path.read_bytes() if image_path.is_file() else None
        return raw

    def _sources(self) -> List[str]:
        return [str(index) for index in range(len(self.images))]

    def _describe(self) -> str:
        return f"the table {self.path}"

    def _pass(self, cycle: int, slot: int, slots: int, skips: SkipCounter
              ) -> Tuple[List[str], Iterator[Dict[str, Any]]]:
        order = list(range(len(self.images)))
        if self.training:
            random.Random(f"{self.seed}:{self.epoch}:{cycle}").shuffle(order)
        rows = order[slot::slots]
        return [str(index) for index in rows], (self._row(index) for index in rows)
