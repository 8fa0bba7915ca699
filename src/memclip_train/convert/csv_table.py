"""CSV/TSV tables (``filepath, caption[, long_caption]``) -> records."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from memclip.errors import InputError

from ..data.captions import first_sentence
from ..data.sources import read_table
from .records import Record


def read_csv_table(path: Path, img_key: str = "filepath", caption_key: str = "caption",
                   long_caption_key: Optional[str] = "long_caption", separator: str = ",") -> List[Record]:
    """Rows of a caption table, in file order. Without a short caption column (or in a row whose cell is empty), the
    long one's first sentence is used (Long-CLIP's convention); without a long caption, the record has none (the
    shard then holds no ``json.long``, and the trainer counts or refuses it: nothing stands in for it).

    Raises:
        ValueError: a named column is missing (the message lists the table's columns), or the file is malformed
            (the message names it and the line).
    """
    table = read_table(str(path), separator)
    has_long = bool(long_caption_key) and long_caption_key in table.columns
    needed = [img_key] + ([caption_key] if caption_key in table.columns or not has_long else [])
    missing = [column for column in needed if column not in table.columns]
    if missing:
        raise InputError(f"{path}: missing columns {missing}; the table has {list(table.columns)}")
    records = []
    for index, row in enumerate(table.itertuples(index=False)):
        values = dict(zip(table.columns, row))
        long = values[long_caption_key].strip() if has_long else ""
        short = values[caption_key].strip() if caption_key in values else ""
        records.append(Record(key=f"{index:09d}", image=values[img_key], long=long,
                              short=short or first_sentence(long)))
    return records
