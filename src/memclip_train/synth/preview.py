"""`write_preview`: one PNG that shows a generated world as it lies on disk.

Three sections: training samples with their short and long captions, segmentation images beside their masks, and
one blind pair per pattern with what tells the two apart. Everything is read back from the files, so the preview
also checks that the splits decode.

    python -m memclip_train.synth.preview runs/world            # writes runs/world/preview.png
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import tarfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .manifest import add_to_world

logger = logging.getLogger(__name__)

PREVIEW_FILE = "preview.png"
WIDTH = 1280
MARGIN = 16
TEXT = (20, 20, 20)
ACCENT = (25, 80, 170)
MUTED = (90, 90, 90)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def line_height(font: ImageFont.ImageFont) -> int:
    return int(getattr(font, "size", 11)) + 4


def wrap(text: str, font: ImageFont.ImageFont, width: int) -> List[str]:
    """Greedy word wrap of ``text`` into lines at most ``width`` pixels wide."""
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and font.getlength(candidate) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return lines + ([line] if line else [])


def _scaled(image: Image.Image, side: int) -> Image.Image:
    return image.convert("RGB").resize((side, side), Image.NEAREST)


def read_shard_samples(shard: Path, count: int) -> List[Dict[str, bytes]]:
    """The first ``count`` samples of a webdataset shard: [{"__key__": ..., ext: bytes}, ...]."""
    samples: Dict[str, Dict[str, bytes]] = {}
    with tarfile.open(shard) as tar:
        for member in tar:
            key, _, ext = member.name.partition(".")
            if key not in samples:
                if len(samples) == count:
                    break
                samples[key] = {"__key__": key.encode()}
            samples[key][ext] = tar.extractfile(member).read()
    return list(samples.values())


class Sheet:
    """A growing list of rows (PIL images) stacked into one page."""

    def __init__(self) -> None:
        self.rows: List[Image.Image] = []
        self.title_font, self.font, self.small = _font(20), _font(14), _font(12)

    def title(self, text: str) -> None:
        row = Image.new("RGB", (WIDTH, 40), "white")
        ImageDraw.Draw(row).text((MARGIN, 12), text, fill=TEXT, font=self.title_font)
        self.rows.append(row)

    def add(self, row: Image.Image) -> None:
        self.rows.append(row)

    def text_block(self, parts: Sequence[Tuple[str, ImageFont.ImageFont, Tuple[int, int, int]]], width: int
                   ) -> Image.Image:
        lines = [(line, font, colour) for text, font, colour in parts for line in wrap(text, font, width)]
        block = Image.new("RGB", (width, sum(line_height(font) for _, font, _ in lines) + 4), "white")
        draw, y = ImageDraw.Draw(block), 0
        for line, font, colour in lines:
            draw.text((0, y), line, fill=colour, font=font)
            y += line_height(font)
        return block

    def render(self) -> Image.Image:
        page = Image.new("RGB", (WIDTH, sum(r.height for r in self.rows) + MARGIN), "white")
        y = 0
        for row in self.rows:
            page.paste(row, (0, y))
            y += row.height
        return page


def _train_section(sheet: Sheet, world_dir: Path, samples: int, side: int) -> None:
    shards = sorted((world_dir / "train").glob("*.tar"))
    if not shards:
        return
    sheet.title("train: image, short caption (txt), long caption (json['long'])")
    column_width = (WIDTH - MARGIN) // 2
    text_width = column_width - side - 2 * MARGIN
    tiles = []
    for sample in read_shard_samples(shards[0], samples):
        record = json.loads(sample["json"])
        image = _scaled(Image.open(io.BytesIO(sample["jpg"])), side)
        text = sheet.text_block([(sample["txt"].decode(), sheet.font, ACCENT), (record["long"], sheet.small, TEXT)],
                                text_width)
        tile = Image.new("RGB", (column_width, max(side, text.height) + MARGIN), "white")
        tile.paste(image, (MARGIN, 0))
        tile.paste(text, (MARGIN + side + MARGIN, 0))
        tiles.append(tile)
    for left, right in zip(tiles[0::2], tiles[1::2] + [None] * (len(tiles) % 2)):
        row = Image.new("RGB", (WIDTH, max(left.height, right.height if right else 0)), "white")
        row.paste(left, (0, 0))
        if right is not None:
            row.paste(right, (column_width, 0))
        sheet.add(row)


def _segmentation_section(sheet: Sheet, world_dir: Path, count: int, side: int) -> None:
    folder = world_dir / "segmentation"
    ids_file = folder / "ImageSets" / "Segmentation" / "val.txt"
    if not ids_file.exists():
        return
    classes = (folder / "classes.txt").read_text().split("\n")
    ids = ids_file.read_text().split()[:count]
    sheet.title("segmentation: image and class mask (VOC palette; cream = ignore, inside outlines)")
    tile_width = 2 * side + 3 * MARGIN
    per_row = max(1, (WIDTH - MARGIN) // tile_width)
    for start in range(0, len(ids), per_row):
        row = Image.new("RGB", (WIDTH, side + 3 * MARGIN), "white")
        draw = ImageDraw.Draw(row)
        for column, image_id in enumerate(ids[start:start + per_row]):
            image = Image.open(folder / "JPEGImages" / f"{image_id}.jpg")
            mask = Image.open(folder / "SegmentationClass" / f"{image_id}.png")
            labels = [int(v) for v in np.unique(np.asarray(mask)) if 0 < v < 255]
            x = MARGIN + column * tile_width
            row.paste(_scaled(image, side), (x, 0))
            row.paste(_scaled(mask, side), (x + side + 4, 0))
            names = ", ".join(classes[v - 1] for v in labels)
            draw.text((x, side + 4), f"{image_id}: {names}", fill=MUTED, font=sheet.small)
        sheet.add(row)


def _pairs_section(sheet: Sheet, world_dir: Path, side: int) -> None:
    path = world_dir / "pairs" / "pairs.jsonl"
    if not path.exists():
        return
    first: Dict[str, dict] = {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            pair = json.loads(line)
            first.setdefault(pair["pattern"], pair)
    sheet.title("blind pairs: one per pattern (a | b), and what differs")
    tile_width = 2 * side + 4 + 2 * MARGIN
    per_row = max(1, (WIDTH - MARGIN) // tile_width)
    pairs = list(first.values())
    for start in range(0, len(pairs), per_row):
        row = Image.new("RGB", (WIDTH, side + 3 * MARGIN + 18), "white")
        draw = ImageDraw.Draw(row)
        for column, pair in enumerate(pairs[start:start + per_row]):
            x = MARGIN + column * tile_width
            for offset, side_name in ((0, "a"), (side + 4, "b")):
                image = Image.open(world_dir / "pairs" / pair[side_name]["image"])
                row.paste(_scaled(image, side), (x + offset, 0))
            differs = pair["differs"]
            obj = differs["object"]
            draw.text((x, side + 4), f"{pair['pattern']}: {differs['a']} | {differs['b']}", fill=ACCENT,
                      font=sheet.font)
            draw.text((x, side + 22), f"({obj['colour']} {obj['shape']})", fill=MUTED, font=sheet.small)
        sheet.add(row)


def write_preview(world_dir: Union[str, Path], path: Optional[Union[str, Path]] = None, samples: int = 8,
                  side: int = 128) -> Path:
    """Write the preview of the world in ``world_dir`` to ``path`` (default ``world_dir/preview.png``)."""
    world_dir = Path(world_dir)
    path = Path(path) if path is not None else world_dir / PREVIEW_FILE
    sheet = Sheet()
    _train_section(sheet, world_dir, samples, side)
    _segmentation_section(sheet, world_dir, 8, side // 2 + side // 4)
    _pairs_section(sheet, world_dir, side)
    if not sheet.rows:
        raise FileNotFoundError(f"{world_dir} holds no generated split to preview")
    sheet.render().save(path, format="PNG")
    add_to_world(world_dir, path)
    return path


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m memclip_train.synth.preview", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("world", type=Path, help="a folder written by python -m memclip_train.synth")
    parser.add_argument("--out", type=Path, default=None, help="PNG path (default WORLD/preview.png)")
    parser.add_argument("--samples", type=int, default=8, help="training samples to show")
    args = parser.parse_args(argv)
    if not (args.world / "world.json").exists():
        parser.error(f"{args.world} has no world.json: generate a world first")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("memclip_train.synth").setLevel(logging.INFO)
    logger.info("preview: %s", write_preview(args.world, args.out, samples=args.samples))


if __name__ == "__main__":
    main()
