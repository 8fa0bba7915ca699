"""`python -m memclip_train.convert`: turn caption datasets into the webdataset shards the trainer reads.

    python -m memclip_train.convert sharegpt4v --json share-captioner_coco_lcs_sam_1246k_1107.json \
        --image-root /data/sharegpt4v --out /data/shards/sharegpt4v --workers 16 --max-side 512
    python -m memclip_train.convert csv --csv pairs.csv --image-root /data/images --out /data/shards/mine

Both write OUT/train/{000000..}.tar with sizes.json (samples: jpg, txt = short caption, json = {long (when the
source has one: nothing stands in for it), short, source, ...}) and, unless --val-size 0, the held-out first entries
under OUT/<val-name>/ (a folder of its own: not train). Images are read only from inside the --image-root folders
(after symlinks); others are skipped as outside_root. A killed run resumes with the same settings: finished shards
are kept, missing ones are written. OUT/conversion.json records the settings and what every shard holds, skipped
and lacks, over all runs; an empty source, or a split whose every entry was skipped, is an error. --exclude-images
FILE (repeat) keeps an evaluation set's images out of train/, e.g. share4v_sam_10k.json (SA-1B images are matched by
file name, whatever folder each file names). --count-only reads the json and the exclusion lists and prints how many
entries each split would get, writing nothing (no image is read: missing or broken images are counted only by a real
conversion).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

from ..error_reporting import UserError, add_debug_flag, report_user_errors
from ..progress import show_progress
from .conversion_log import ConversionLog
from .csv_table import read_csv_table
from .exclusion import exclude_images, normalise_image_path, read_image_list
from .records import ImageOptions, Record
from .tar_shards import write_split
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
                        help="folder the image paths are relative to and images must lie in (repeat for several; the "
                             "first hit wins; default: the folder of the json/csv)")
    parser.add_argument("--out", type=Path, help="output folder (required unless --count-only)")
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
    parser.add_argument("--count-only", action="store_true",
                        help="print how many entries go to each split (after --val-size and --exclude-images) and "
                             "stop: no image is read, nothing is written")
    parser.add_argument("--no-progress", action="store_true")
    add_debug_flag(parser)


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
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(message)s")
    return report_user_errors(parser.prog, args.debug, lambda: convert(args))


def count_splits(args: argparse.Namespace, source_file: Path) -> None:
    """Print the entries each split would get, as json: the held-out split, the entries --exclude-images keeps out of
    train/, and train/ (before missing or broken images, which only a real conversion finds)."""
    records = read_records(args)
    excluded = set().union(*(read_image_list(path) for path in args.exclude_images))
    train, dropped = exclude_images(records[args.val_size:], excluded)
    counts = {"source": source_file.name, "entries": len(records), args.val_name: min(args.val_size, len(records)),
              "excluded_from_train": dropped, "excluded_images_listed": len(excluded), "train": len(train),
              "--exclude-images": [p.name for p in args.exclude_images]}
    print(json.dumps(counts, indent=2))


def convert(args: argparse.Namespace) -> None:
    source_file = args.json if args.source == "sharegpt4v" else args.csv
    if not source_file.is_file():
        raise FileNotFoundError(f"--{'json' if args.source == 'sharegpt4v' else 'csv'} {source_file} does not exist")
    if args.count_only:
        count_splits(args, source_file)
        return
    if args.out is None:
        raise UserError("--out is required (the output folder), unless --count-only")
    roots = args.image_root or [source_file.parent]
    for root in roots:
        if not root.is_dir():
            raise NotADirectoryError(f"--image-root {root} is not a folder")
    check_val_name(args.val_name)
    options = ImageOptions(max_side=args.max_side, jpeg_quality=args.jpeg_quality)
    records = read_records(args)
    if not records:
        raise UserError(f"{source_file} holds no entries: nothing to convert")
    if args.val_size >= len(records):
        logger.warning("--val-size %d holds out all %d entries: train/ gets none", args.val_size, len(records))
    excluded = set().union(*(read_image_list(path) for path in args.exclude_images))
    start = time.time()
    train, dropped = exclude_images(records[args.val_size:], excluded)
    shared = shares_held_out_images(records[:args.val_size], train)
    splits = {args.val_name: records[:args.val_size], "train": train}
    settings = {"source": source_file.name, "entries": len(records), "--val-size": args.val_size,
                "--val-name": args.val_name, "--samples-per-shard": args.samples_per_shard,
                "--max-side": args.max_side, "--jpeg-quality": args.jpeg_quality,
                "--exclude-images": sorted(p.name for p in args.exclude_images)}
    if args.source == "csv":
        settings.update({"--img-key": args.img_key, "--caption-key": args.caption_key,
                         "--long-caption-key": args.long_caption_key})
    about = {"source": str(source_file), "format": args.source, "entries": len(records),
             "held_out": f"the first {min(args.val_size, len(records))} entries -> {args.val_name}/",
             "max_side": args.max_side}
    if args.exclude_images:
        about["excluded_from_train"] = {"files": [str(p) for p in args.exclude_images], "images": len(excluded),
                                        "entries": dropped}
        logger.info("excluded %d train entries whose images are in %s", dropped,
                    ", ".join(p.name for p in args.exclude_images))
        if not dropped:
            logger.warning("none of the %d images listed in %s is in train/: are they of this dataset?", len(excluded),
                           ", ".join(p.name for p in args.exclude_images))
    if shared:
        about["train_entries_sharing_a_held_out_image"] = shared
        logger.warning("%d train entries show an image that a held-out (%s) entry shows too: the held-out split is "
                       "not disjoint from train by image (--exclude-images can keep them out)", shared, args.val_name)
    args.out.mkdir(parents=True, exist_ok=True)
    log = ConversionLog(args.out, settings, about)
    for name, split in splits.items():
        if not split:
            continue
        totals = write_split(split, args.out / name, roots, options, source_file.name, log,
                             args.samples_per_shard, args.workers, progress=show_progress(not args.no_progress))
        logger.info("%-8s %s", name, json.dumps(totals))
        if not totals["samples_written"]:
            log.finish(time.time() - start)
            raise UserError(f"{name}: every one of its {len(split)} entries was skipped ({totals['skipped']}); see "
                            f"{log.path}")
    log.finish(time.time() - start)
    logger.info("summary: %s", log.path)


def shares_held_out_images(held_out: Sequence[Record], train: Sequence[Record]) -> int:
    """How many train records show an image that a held-out record shows too."""
    images = {normalise_image_path(record.image) for record in held_out}
    return sum(normalise_image_path(record.image) in images for record in train)


def check_val_name(name: str) -> None:
    """``--val-name`` must name a folder of its own beside ``train/`` (held-out entries written into ``train/``
    would be lost among, or mixed with, the training shards).

    Raises:
        UserError: naming the value.
    """
    if name == "train":
        raise UserError("--val-name train: the held-out split needs a folder of its own beside train/ (e.g. val)")
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise UserError(f"--val-name {name!r}: a plain folder name beside train/ (e.g. val)")


if __name__ == "__main__":
    sys.exit(main())
