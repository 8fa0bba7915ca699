"""Split writers: turn items (see ``splits.py``) into the on-disk layouts that the real pipelines read.

    train/, val/      webdataset shards + sizes.json (via memclip_train.data.shard_writer.ShardWriter)
    retrieval/        Urban-1k layout (image/N.jpg, caption/N.txt) + captions_short.json (COCO captions format)
                      + scenes.jsonl (each image's scene graph, for semantic retrieval and zero-shot labels)
    segmentation/     VOC layout (JPEGImages/, SegmentationClass/ palette PNGs, ImageSets/Segmentation/val.txt)
                      + classes.txt
    pairs/            images/ID_a.jpg, ID_b.jpg + pairs.jsonl

Every writer takes items in index order through ``add`` and finishes with ``close``, which returns a summary for
world.json. Index files (sizes.json, captions_short.json, val.txt, pairs.jsonl) are written last and atomically.
Every folder and file is recorded in the generation's :class:`WorldFiles` before it is written.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

from memclip.atomic_io import atomic_write_json, atomic_write_text

from ..data.shard_writer import SIZES_FILE, ShardWriter
from .config import SynthConfig
from .manifest import WorldFiles
from .splits import Item


class SplitWriter:
    """Base class: ``add(item)`` in index order, then ``close() -> summary``."""

    def __init__(self, folder: Path, config: SynthConfig, files: WorldFiles) -> None:
        self.folder = folder
        self.config = config
        self.files = files
        files.folder(folder)

    def add(self, item: Item) -> None:
        raise NotImplementedError

    def close(self) -> Dict[str, Any]:
        raise NotImplementedError


class ShardSplitWriter(SplitWriter):
    """train/ and val/: webdataset shards of ``samples_per_shard`` samples and sizes.json."""

    def __init__(self, folder: Path, config: SynthConfig, files: WorldFiles) -> None:
        super().__init__(folder, config, files)
        self.writer = ShardWriter(folder, samples_per_shard=config.samples_per_shard)

    def add(self, item: Item) -> None:
        shard, offset = divmod(self.writer.num_samples, self.config.samples_per_shard)
        if offset == 0:
            self.files.file(self.folder / self.writer.name_format.format(shard))
        self.writer.write(item["key"], {"jpg": item["jpg"], "txt": item["txt"], "json": item["json"]})

    def close(self) -> Dict[str, Any]:
        self.files.file(self.folder / SIZES_FILE)
        sizes = self.writer.close()
        return {"samples": sum(sizes.values()), "shards": len(sizes)}

    def abort(self) -> None:
        self.writer.abort()


class RetrievalSplitWriter(SplitWriter):
    """retrieval/: image/N.jpg, caption/N.txt (the long caption on one line), captions_short.json and scenes.jsonl
    (``{"index", "background", "texture", "objects": [...], "salient": i}`` per image, in index order)."""

    def __init__(self, folder: Path, config: SynthConfig, files: WorldFiles) -> None:
        super().__init__(folder, config, files)
        files.folder(folder / "image")
        files.folder(folder / "caption")
        self.images: List[Dict[str, Any]] = []
        self.annotations: List[Dict[str, Any]] = []
        self.scenes: List[str] = []

    def add(self, item: Item) -> None:
        index = item["index"]
        self.scenes.append(json.dumps({"index": index, **item["scene"]}, ensure_ascii=False))
        self.files.file(self.folder / "image" / f"{index}.jpg").write_bytes(item["jpg"])
        self.files.file(self.folder / "caption" / f"{index}.txt").write_text(item["long"].replace("\n", " ") + "\n",
                                                                            encoding="utf-8")
        size = self.config.render.image_size
        self.images.append({"id": index, "file_name": f"image/{index}.jpg", "width": size, "height": size})
        for caption in item["short"]:
            self.annotations.append({"id": len(self.annotations), "image_id": index, "caption": caption})

    def close(self) -> Dict[str, Any]:
        coco = {
            "info": {"description": "memclip synthetic world: short paraphrases of the retrieval images",
                     "seed": self.config.seed},
            "images": self.images,
            "annotations": self.annotations,
        }
        atomic_write_json(self.files.file(self.folder / "captions_short.json"), coco, indent=None)
        atomic_write_text(self.files.file(self.folder / "scenes.jsonl"), "".join(line + "\n" for line in self.scenes))
        return {"images": len(self.images), "short_captions": len(self.annotations)}


class SegmentationSplitWriter(SplitWriter):
    """segmentation/: VOC2012-style folders; classes.txt lists the shapes (background not listed, as VOC20)."""

    def __init__(self, folder: Path, config: SynthConfig, files: WorldFiles) -> None:
        super().__init__(folder, config, files)
        for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
            files.folder(folder / sub)
        self.ids: List[str] = []

    def add(self, item: Item) -> None:
        self.files.file(self.folder / "JPEGImages" / f"{item['id']}.jpg").write_bytes(item["jpg"])
        self.files.file(self.folder / "SegmentationClass" / f"{item['id']}.png").write_bytes(item["png"])
        self.ids.append(item["id"])

    def close(self) -> Dict[str, Any]:
        atomic_write_text(self.files.file(self.folder / "classes.txt"),
                          "".join(f"{shape}\n" for shape in self.config.world.shapes))
        atomic_write_text(self.files.file(self.folder / "ImageSets" / "Segmentation" / "val.txt"),
                          "".join(f"{i}\n" for i in self.ids))
        return {"images": len(self.ids), "classes": list(self.config.world.shapes)}


class PairSplitWriter(SplitWriter):
    """pairs/: images/ID_a.jpg, ID_b.jpg and pairs.jsonl, one pair a line."""

    def __init__(self, folder: Path, config: SynthConfig, files: WorldFiles) -> None:
        super().__init__(folder, config, files)
        files.folder(folder / "images")
        self.lines: List[str] = []
        self.per_pattern: Dict[str, int] = {}

    def add(self, item: Item) -> None:
        record: Dict[str, Any] = {"id": item["id"], "pattern": item["pattern"], "differs": item["differs"]}
        for side in ("a", "b"):
            name = f"images/{item['id']}_{side}.jpg"
            self.files.file(self.folder / name).write_bytes(item[side]["jpg"])
            scene = item[side]["scene"]
            record[side] = {"image": name, "caption": item[side]["caption"], "short": item[side]["short"], **scene}
        self.lines.append(json.dumps(record, ensure_ascii=False))
        self.per_pattern[item["pattern"]] = self.per_pattern.get(item["pattern"], 0) + 1

    def close(self) -> Dict[str, Any]:
        atomic_write_text(self.files.file(self.folder / "pairs.jsonl"), "".join(line + "\n" for line in self.lines))
        return {"pairs": len(self.lines), "per_pattern": self.per_pattern}


WRITERS = {
    "train": ShardSplitWriter,
    "val": ShardSplitWriter,
    "retrieval": RetrievalSplitWriter,
    "segmentation": SegmentationSplitWriter,
    "pairs": PairSplitWriter,
}
