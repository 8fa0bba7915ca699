"""`python -m memclip_train.synth --out DIR --train N --val M --seed S`: generate the synthetic world.

    python -m memclip_train.synth --out runs/world --train 2000 --val 200 --workers 2 --preview

writes train/ and val/ (webdataset shards), retrieval/ (Urban-1k layout + COCO-style short captions),
segmentation/ (VOC layout), pairs/ (MMVP-style blind pairs) and world.json under DIR.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..error_reporting import add_debug_flag, report_user_errors
from ..progress import show_progress
from .captions import LONG_ORDERS, CaptionConfig
from .config import SynthConfig
from .generate import generate_world
from .markings import MarkingConfig
from .render import RenderConfig
from .world import SALIENCE, WorldConfig

logger = logging.getLogger("memclip_train.synth")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _positive(text: str) -> int:
    value = _count(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    defaults = SynthConfig()
    parser = argparse.ArgumentParser(
        prog="python -m memclip_train.synth",
        description="Generate the synthetic fine-grained world: shapes with colours, sizes, positions, "
                    "orientations and fills, with short and long captions, in the layouts of the real datasets.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (must be empty unless --overwrite)")
    parser.add_argument("--train", type=_count, default=defaults.train, help="training samples (webdataset)")
    parser.add_argument("--val", type=_count, default=defaults.val, help="validation samples (webdataset)")
    parser.add_argument("--seed", type=_count, default=defaults.seed, help="the world's seed")
    parser.add_argument("--image-size", type=int, default=defaults.render.image_size, help="image side in pixels")
    parser.add_argument("--retrieval", type=_count, default=defaults.retrieval,
                        help="held-out retrieval images (Urban-1k layout, COCO-style short captions)")
    parser.add_argument("--segmentation", type=_count, default=defaults.segmentation,
                        help="segmentation images with VOC-style masks")
    parser.add_argument("--pairs-per-pattern", type=_count, default=defaults.pairs_per_pattern,
                        help="blind pairs per pattern (7 patterns)")
    parser.add_argument("--samples-per-shard", type=_positive, default=defaults.samples_per_shard,
                        help="samples per webdataset shard")
    parser.add_argument("--min-objects", type=_positive, default=defaults.world.min_objects,
                        help="fewest objects in a scene")
    parser.add_argument("--max-objects", type=_positive, default=defaults.world.max_objects,
                        help="most objects in a scene (at most 9)")
    parser.add_argument("--salience", choices=SALIENCE, default=defaults.world.salience,
                        help="strict: the object a short caption names is always strictly the largest; tie-break: "
                             "sizes as drawn, ties broken by fill then centrality (the generator before strict)")
    parser.add_argument("--max-relations", type=_count, default=defaults.captions.max_relations,
                        help="pairwise relation sentences per long caption, at most")
    parser.add_argument("--long-order", choices=LONG_ORDERS, default=defaults.captions.long_order,
                        help="long captions' sentence order: shuffled, or salience (the objects from the most salient "
                             "down, then the details)")
    parser.add_argument("--paraphrases", type=_positive, default=defaults.captions.paraphrases,
                        help="short captions per retrieval image in captions_short.json")
    parser.add_argument("--markings", type=_count, default=defaults.world.markings.count,
                        help="K named markings painted on salient objects and named in long captions only "
                             "(0: none, the world is unchanged)")
    parser.add_argument("--marking-family", type=_positive, default=defaults.world.markings.family,
                        help="train/val samples in a row that show one scene with different markings")
    parser.add_argument("--jpeg-quality", type=_positive, default=defaults.jpeg_quality, help="JPEG quality, 1-100")
    parser.add_argument("--supersample", type=_positive, default=defaults.render.supersample,
                        help="anti-aliasing factor (1 = aliased)")
    parser.add_argument("--workers", type=_positive, default=1, help="rendering processes")
    parser.add_argument("--overwrite", action="store_true", help="replace a world generated earlier in --out")
    parser.add_argument("--preview", action="store_true", help="also write DIR/preview.png (samples with captions)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    add_debug_flag(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    """The SynthConfig for parsed arguments (raises ValueError for out-of-range values)."""
    return SynthConfig(
        seed=args.seed,
        train=args.train,
        val=args.val,
        retrieval=args.retrieval,
        segmentation=args.segmentation,
        pairs_per_pattern=args.pairs_per_pattern,
        samples_per_shard=args.samples_per_shard,
        jpeg_quality=args.jpeg_quality,
        world=WorldConfig(min_objects=args.min_objects, max_objects=args.max_objects, salience=args.salience,
                          markings=MarkingConfig(count=args.markings, family=args.marking_family)),
        render=RenderConfig(image_size=args.image_size, supersample=args.supersample),
        captions=CaptionConfig(max_relations=args.max_relations, paraphrases=args.paraphrases,
                               long_order=args.long_order),
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(message)s")
    logging.getLogger("memclip_train.synth").setLevel(logging.DEBUG if args.debug else logging.INFO)
    try:
        config = config_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    if args.workers > (os.cpu_count() or 1):
        logger.warning("--workers %d exceeds the %d CPU cores", args.workers, os.cpu_count() or 1)
    return report_user_errors(parser.prog, args.debug, lambda: generate(args, config))


def generate(args: argparse.Namespace, config: SynthConfig) -> None:
    world = generate_world(config, args.out, workers=args.workers, overwrite=args.overwrite,
                           progress=show_progress(not args.no_progress))
    splits = world["splits"]
    for split, summary in splits.items():
        logger.info("  %-12s %s", split, ", ".join(f"{k}={v}" for k, v in summary.items() if k != "classes"))
    if args.preview:
        from .preview import write_preview

        path = write_preview(args.out)
        logger.info("preview: %s", path)


if __name__ == "__main__":
    sys.exit(main())
