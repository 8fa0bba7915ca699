"""`python -m memclip_train.synth.bench`: how fast the world is generated, and how long its long captions are.

    python -m memclip_train.synth.bench --images 20000 --workers 2

writes ``--images`` training samples (shards included, nothing else) into a temporary folder, prints images per
second and the seconds per 20,000 images, then the share of long captions over 77 tokens under open_clip's
tokenizer, counted without truncation (``--captions 0`` skips that part, which imports open_clip).
"""
from __future__ import annotations

import argparse
import json
import logging
import tarfile
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence

from .config import SynthConfig
from .generate import generate_world
from .render import RenderConfig

logger = logging.getLogger("memclip_train.synth.bench")
CLIP_CONTEXT = 77


def long_captions(train_dir: Path, limit: int) -> List[str]:
    """The first ``limit`` long captions of a webdataset split."""
    captions: List[str] = []
    for shard in sorted(train_dir.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    captions.append(json.loads(tar.extractfile(member).read())["long"])
                    if len(captions) == limit:
                        return captions
    return captions


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m memclip_train.synth.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20000, help="training images to generate")
    parser.add_argument("--workers", type=int, default=2, help="rendering processes")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--captions", type=int, default=2000, help="long captions to measure against 77 tokens")
    args = parser.parse_args(argv)
    if args.images < 1 or args.workers < 1 or args.captions < 0:
        parser.error("--images and --workers must be >= 1, --captions >= 0")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logger.setLevel(logging.INFO)
    config = SynthConfig(seed=args.seed, train=args.images, val=0, retrieval=0, segmentation=0, pairs_per_pattern=0,
                         render=RenderConfig(image_size=args.image_size))
    with tempfile.TemporaryDirectory(prefix="memclip-synth-bench-") as folder:
        start = time.perf_counter()
        generate_world(config, folder, workers=args.workers, progress=False)
        seconds = time.perf_counter() - start
        rate = args.images / seconds
        logger.info("%d images at %d px, workers=%d: %.1f s, %.0f images/s, %.1f s per 20,000 images",
                    args.images, args.image_size, args.workers, seconds, rate, 20000 / rate)
        if args.captions:
            from open_clip import get_tokenizer

            from memclip.truncation import token_lengths

            texts = long_captions(Path(folder) / "train", args.captions)
            lengths = token_lengths(get_tokenizer("ViT-B-16"), texts)
            over = float((lengths > CLIP_CONTEXT).float().mean()) * 100
            logger.info("long captions: %.1f%% over %d tokens (open_clip tokenizer, no truncation); tokens min %d, "
                        "median %d, max %d (%d captions)", over, CLIP_CONTEXT, int(lengths.min()),
                        int(lengths.median()), int(lengths.max()), len(texts))


if __name__ == "__main__":
    main()
