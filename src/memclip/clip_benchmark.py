"""`python -m memclip.clip_benchmark`: clip_benchmark's own command line, with memclip's models registered in open_clip
(:func:`memclip.register_open_clip`), so that its ``--model``/``--pretrained`` take memclip names, saved folders'
weights and ``hf-hub:`` memclip models. Everything else is clip_benchmark's (``pip install 'memclip[clip_benchmark]'``).

    python -m memclip.clip_benchmark eval --model ViT-B-16-mem \\
        --pretrained runs/stage2/final/open_clip_model.safetensors --dataset mscoco_captions \\
        --dataset_root /data/coco --task zeroshot_retrieval --recall_k 1 5 10 \\
        --output 'results/{dataset}_{model}_{task}.json'
    python -m memclip.clip_benchmark eval --model hf-hub:me/vit-b-16-mem --dataset cifar10 \\
        --dataset_root /data/cifar10 --output 'results/{dataset}_vit-b-16-mem_{task}.json'
    python -m memclip.clip_benchmark build results/*.json --output benchmark.csv   # memclip's result JSONs too

memclip's own evaluation (``python -m memclip_train.eval``) writes clip_benchmark's keys beside its own, so ``build``
puts both kinds of result in the same columns.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from .open_clip_hook import register_open_clip

PROG = "python -m memclip.clip_benchmark"
INSTALL = "pip install 'memclip[clip_benchmark]' (or pip install clip_benchmark)"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Register memclip in open_clip, then run clip_benchmark's ``main`` on ``argv`` (default: the command line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    register_open_clip()  # before clip_benchmark's modules bind open_clip's functions and list its weights
    try:
        from clip_benchmark.cli import main as clip_benchmark_main
    except ImportError as error:
        print(f"{PROG}: error: clip_benchmark is not installed ({error}): {INSTALL}", file=sys.stderr)
        return 2
    original, sys.argv = sys.argv, [PROG, *argv]
    try:
        return clip_benchmark_main() or 0
    finally:
        sys.argv = original


if __name__ == "__main__":
    sys.exit(main())
