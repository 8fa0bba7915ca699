"""Reading a dataset's files, as every reader of the eval program and the zero-shot sets does: a missing file or a
wrong layout is a :class:`LayoutError`; an item that would change the task (a row without a caption, an image listed
twice, an empty class folder, ...) is collected as a :class:`BadItem`, and :func:`refuse_or_count` then stops with an
error that names the file and the first item, or with ``--skip-bad`` leaves the items out and counts them (the count
goes into the result JSON and the printed table)."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Union

from memclip.errors import InputError

PathLike = Union[str, Path]
logger = logging.getLogger(__name__)


class LayoutError(FileNotFoundError):
    """A dataset folder that does not have the expected layout; the message names the path and the layout."""

    def __init__(self, dataset: str, path: PathLike, expected: str, detail: str = "") -> None:
        message = f"{dataset}: {detail or 'missing'} {path}\n  expected layout under --data-root:\n{expected}"
        super().__init__(message)


@dataclass(frozen=True)
class BadItem:
    """An item of a dataset that cannot be used as it is.

    Attributes:
        file: the file that holds it (or the folder, for a folder item).
        item: which item of that file (``entry 12``, ``image id 7``, ``line 3``, ...).
        reason: what is wrong with it, and what using it anyway would do.
    """

    file: str
    item: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}, {self.item}: {self.reason}"


class BadItemError(InputError):
    """Items that would change the task; the message names the file and the first item (see :func:`refuse_or_count`)."""


def refuse_or_count(dataset: str, bad_items: Sequence[BadItem], skip_bad: bool) -> None:
    """Stop on the first bad item unless ``skip_bad``; with it, log how many were left out.

    Raises:
        BadItemError: there are bad items and ``skip_bad`` is off.
    """
    if not bad_items:
        return
    if not skip_bad:
        raise BadItemError(f"{dataset}: {bad_items[0]} ({len(bad_items)} bad item{'s' * (len(bad_items) > 1)} in "
                           "all); fix the data, or pass --skip-bad to leave them out and count them")
    logger.warning("%s: left out %d bad items (--skip-bad), e.g. %s", dataset, len(bad_items), bad_items[0])


def require(dataset: str, path: Path, expected: str) -> Path:
    if not path.exists():
        raise LayoutError(dataset, path, expected)
    return path


def read_json(dataset: str, path: Path, expected: str) -> Any:
    require(dataset, path, expected)
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise LayoutError(dataset, path, expected, f"not valid json ({error}):") from error


def read_jsonl(dataset: str, path: Path, expected: str) -> List[Dict[str, Any]]:
    require(dataset, path, expected)
    rows = []
    with open(path, "r", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise LayoutError(dataset, path, expected, f"line {number} is not json ({error}):") from error
    return rows
