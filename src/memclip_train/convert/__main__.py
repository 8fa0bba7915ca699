"""`python -m memclip_train.convert`: turn caption datasets into the webdataset shards the trainer reads.

    python -m memclip_train.convert sharegpt4v --json share-captioner_coco_lcs_sam_1246k_1107.json \
        --image-root /data/sharegpt4v --out /data/shards/sharegpt4v --workers 16 --max-side 512
    python -m memclip_train.convert csv --csv pairs.csv --image-root /data/images --out /data/shards/mine

Both write OUT/train/{000000..}.tar with sizes.json (samples: jpg, txt = short caption, json = {long, short,
source, ...}) and, unless --val-size 0, the held-out first entries under OUT/<val-name>/. A killed run resumes:
finished shards are kept, missing ones are written. OUT/conversion.json summarises what was written and skipped.
--exclude-images FILE (repeat) keeps an evaluation set's images out of train/, e.g. share4v_sam_10k.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

from ..data.shard_writer import write_json_atomic
from .csv_table import read_csv_table
from .exclusion import exclude_images, read_image_list
from .records import ImageOptions, Record
from .sharding import write_split
from .sharegpt4v import read_sharegpt4v

logger = logging.getLogger("memclip_train.convert")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must not be negative")
    return value


def _common(parser: argparse.ArgumentParser, val_name: str, val_size: int) -> None:
    parser.add_argument("--image-root", type=Path, action="append", default=[],
                        help="folder the image paths are relative to (repeat for several; the first hit wins)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--val-size", type=_count, default=val_size,
                        help="leading entries held out as the validation split (never written to train)")
    parser.add_argument("--val-name", default=val_name, help="folder name of the held-out split")
    parser.add_argument("--samples-per-shard", type=_positive, default=1000)
    parser.add_argument("--workers", type=_positive, default=1, help="processes writing shards")
    parser.add_argument("--max-side", type=_positive, default=None, help="resize so the longer side is at most this")
    parser.add_argument("--jpeg-quality", type=_positive, default=95)
    parser.add_argument("--exclude-images", type=Path, action="append", default=[], metavar="FILE",
                        help="keep these images out of train/: an evaluation set's json (ShareGPT4V layout, e.g. "
                             "share4v_sam_10k.json) or a file with one image path per line (repeat)")
    parser.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m memclip_train.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sources = parser.add_subparsers(dest="source", required=True)
    share = sources.add_parser("sharegpt4v", help="a ShareGPT4V json (Share-Captioner 1.2M or the GPT-4V 100k file)")
    share.add_argument("--json", type=Path, required=True, help="the ShareGPT4V json file")
    _common(share, val_name="val-1k", val_size=1000)
    table = sources.add_parser("csv", help="a table with filepath, caption[, long_caption] columns")
    table.add_argument("--csv", type=Path, required=True, help="the CSV/TSV file")
    table.add_argument("--img-key", default="filepath")
    table.add_argument("--caption-key", default="caption")
    table.add_argument("--long-caption-key", default="long_caption")
    table.add_argument("--separator", default=",", help="column separator (use $'\\t' for TSV)")
    _common(table, val_name="val", val_size=0)
    return parser


def read_records(args: argparse.Namespace) -> List[Record]:
    if args.source == "sharegpt4v":
        return read_sharegpt4v(args.json)
    return read_csv_table(args.csv, args.img_key, args.caption_key, args.long_caption_key, args.separator)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    source_file = args.json if args.source == "sharegpt4v" else args.csv
    if not source_file.is_file():
        parser.error(f"{source_file} does not exist")
    for root in args.image_root:
        if not root.is_dir():
            parser.error(f"--image-root {root} is not a folder")
    try:
        options = ImageOptions(max_side=args.max_side, jpeg_quality=args.jpeg_quality)
        records = read_records(args)
        excluded = set().union(*(read_image_list(path) for path in args.exclude_images))
    except ValueError as error:
        parser.error(str(error))
    start = time.time()
    train, dropped = exclude_images(records[args.val_size:], excluded)
    splits = {args.val_name: records[:args.val_size], "train": train}
    summary = {"source": str(source_file), "format": args.source, "entries": len(records),
               "held_out": f"the first {min(args.val_size, len(records))} entries -> {args.val_name}/",
               "max_side": args.max_side, "splits": {}}
    if args.exclude_images:
        summary["excluded_from_train"] = {"files": [str(p) for p in args.exclude_images], "images": len(excluded),
                                          "entries": dropped}
        logger.info("excluded %d train entries whose images are in %s", dropped,
                    ", ".join(p.name for p in args.exclude_images))
    for name, split in splits.items():
        if not split:
            continue
        result = write_split(split, args.out / name, args.image_root, options, source_file.name,
                             args.samples_per_shard, args.workers, progress=not args.no_progress)
        summary["splits"][name] = result.to_dict()
        logger.info("%-8s %s", name, json.dumps(result.to_dict()))
    summary["seconds"] = round(time.time() - start, 1)
    write_json_atomic(args.out / "conversion.json", summary)
    logger.info("summary: %s", args.out / "conversion.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
