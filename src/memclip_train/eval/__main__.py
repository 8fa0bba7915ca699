"""`python -m memclip_train.eval`: retrieval, zero-shot classification and segmentation, blind pairs and heat maps,
for any open_clip or memclip model.

    python -m memclip_train.eval retrieval --model ViT-B-16-quickgelu --pretrained openai \\
        --model ViT-B-16-mem --pretrained runs/stage2/final --dataset urban1k --data-root /data/Urban1k --out results
    python -m memclip_train.eval zeroshot --model ViT-B-16-quickgelu --pretrained openai --dataset imagenet \\
        --data-root /data/imagenet/val --dataset imagenet-v2 --data-root /data/imagenetv2 --out results
    python -m memclip_train.eval segmentation --model ViT-B-16-quickgelu --pretrained openai --dataset voc20 \\
        --data-root /data/VOCdevkit/VOC2012 --method sclip --out results
    python -m memclip_train.eval synth --world runs/world --model ViT-Tiny-8 --pretrained runs/teacher/final \\
        --model ViT-Tiny-8-mem --pretrained runs/student/final --out results     # short+long retrieval, seg, pairs
    python -m memclip_train.eval markings --world runs/world-k64 --model ViT-Tiny-8-mem --pretrained runs/s/final \\
        --text-context-length 248 --text-pos-stretch longclip --out results   # marking R@1 (--markings worlds)
    python -m memclip_train.eval heatmap --model ViT-B-16-quickgelu --pretrained openai --image cat.jpg \\
        --text "a cat" --out heat.png

A dataset may carry a variant after '@': coco@val2017, flickr30k@full, iiw@dci:sentence, sharegpt4v-1k@sam10k.
Results are written per model and dataset and reused when the model's weights, the data and the precision are
unchanged, so adding a model to a table only evaluates the new one.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from PIL import Image, UnidentifiedImageError

from memclip.precision import FP32_WEIGHT_PRECISIONS

from ..error_reporting import add_debug_flag, report_user_errors
from ..features import BadImageError
from ..flag_types import at_least, non_empty, positive_float
from ..progress import show_progress
from ..zeroshot.registry import (SYNTH_ATTRIBUTES, TEMPLATE_SETS, ZEROSHOT_DATASETS, ZeroShotOptions,
                                  check_zeroshot_name, resolve_templates)
from ..zeroshot.synth_scenes import SALIENCE_GROUPS, SynthScenes, load_scenes
from .heatmap import draw_heatmaps, similarity_map
from .markings import DEFAULT_CANDIDATES
from .models import ModelRef, load_model
from .retrieval_sets import DATASETS, check_retrieval_name
from .runner import (ModelCache, pairs_table, run_markings, run_pairs, run_retrieval, run_segmentation,
                     run_synth_semantics, run_zeroshot, split_variant)
from .segmentation import METHODS
from .segmentation.datasets import LAYOUTS as SEGMENTATION_LAYOUTS, SPLITS as SEGMENTATION_SPLITS
from .synth_semantics import zeroshot_breakdown
from .tables import (competence_table, confusions_table, markings_table, retrieval_table, salience_table,
                     segmentation_table, zeroshot_table)

logger = logging.getLogger("memclip_train.eval")


# ----------------------------------------------------------------------------------------------- arguments
def _models(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", required=True, help="model name or saved folder (repeat)")
    parser.add_argument("--pretrained", action="append", default=[],
                        help="weights of the model given before it: tag, file or folder; 'none' for random")
    parser.add_argument("--label", action="append", default=[], help="table name of the model given before it")
    parser.add_argument("--text-context-length", type=at_least(1), help="read captions up to N tokens (every model)")
    parser.add_argument("--text-pos-stretch", choices=("longclip", "interpolate"), help="how CLIP towers reach N")
    add_debug_flag(parser)  # every command takes models, so every command gets -v/--debug here


def _device(text: str) -> str:
    """A torch device this machine has (``cuda`` without CUDA would fail only after the data is read)."""
    try:
        device = torch.device(text)
    except RuntimeError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: this machine has no CUDA device (use cpu)")
    return text


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="results folder")
    parser.add_argument("--precision", default="fp32", choices=FP32_WEIGHT_PRECISIONS)
    parser.add_argument("--batch-size", type=at_least(1), default=64)
    parser.add_argument("--workers", type=at_least(0), default=0, help="image-loading processes")
    parser.add_argument("--device", type=_device, default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--skip-bad", action="store_true",
                        help="leave out, and count in the results and tables, inputs that would change the task "
                             "(unreadable images, images without captions, bad annotation rows, ...) instead of "
                             "stopping at the first")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m memclip_train.eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    retrieval = commands.add_parser("retrieval", help="image-text retrieval R@1/5/10 and ranks")
    _models(retrieval)
    _common(retrieval)
    retrieval.add_argument("--dataset", action="append", required=True,
                           help=f"one of {sorted(DATASETS)}, optionally NAME@VARIANT (repeat)")
    retrieval.add_argument("--data-root", action="append", type=Path, required=True,
                           help="dataset folder: one for all datasets, or one per --dataset in order")
    retrieval.add_argument("--no-cache", action="store_true", help="recompute even when a result exists")

    zeroshot = commands.add_parser("zeroshot", help="zero-shot classification top-1/top-5 (ImageNet, ImageNet-V2, "
                                                    "any ImageFolder)")
    _models(zeroshot)
    _common(zeroshot)
    zeroshot.add_argument("--dataset", action="append", required=True,
                          help=f"one of {sorted(ZEROSHOT_DATASETS)}, optionally NAME@VARIANT "
                               "(imagenet-v2@threshold0.7) (repeat)")
    zeroshot.add_argument("--data-root", action="append", type=Path, required=True,
                          help="dataset folder: one for all datasets, or one per --dataset in order")
    zeroshot.add_argument("--class-names", type=Path,
                          help="a file with one class name per line, in label order (sorted class folders)")
    zeroshot.add_argument("--templates", help=f"{' or '.join(sorted(TEMPLATE_SETS))} (open_clip's ImageNet sets), or "
                                              "a file with one template per line, '{}' for the class name "
                                              "(default: the dataset's, OpenAI's 80 for ImageNet)")
    zeroshot.add_argument("--no-cache", action="store_true", help="recompute even when a result exists")

    segmentation = commands.add_parser("segmentation", help="zero-shot semantic segmentation mIoU")
    _models(segmentation)
    _common(segmentation)
    segmentation.add_argument("--dataset", action="append", required=True, choices=sorted(SEGMENTATION_LAYOUTS))
    segmentation.add_argument("--data-root", action="append", type=Path, required=True)
    segmentation.add_argument("--method", action="append", choices=METHODS, help="last-block method (repeat)")
    segmentation.add_argument("--window", type=at_least(1), help="sliding window (default: the model's image size)")
    segmentation.add_argument("--stride", type=at_least(1), help="window stride (default: half the window)")
    segmentation.add_argument("--short-side", type=at_least(1),
                              help="resize the short side to this (default: 1.5 x window, 2 x for cocostuff164k)")
    segmentation.add_argument("--logit-scale", type=positive_float, default=40.0)
    segmentation.add_argument("--num-overlays", type=at_least(0), default=8)
    segmentation.add_argument("--limit", type=at_least(1), help="evaluate the first N images only")
    segmentation.add_argument("--probe-data-root", action="append", type=Path,
                              help="a second labelled set of each --dataset, in the same layout: fit a linear probe on "
                                   "its patch features and report its mIoU beside the zero-shot one (what the "
                                   "patches carry, whether or not the text reads it)")
    segmentation.add_argument("--probe-split", choices=SEGMENTATION_SPLITS, default="val",
                              help="the split of --probe-data-root to fit the probe on (train: the benchmark's own "
                                   "training split, e.g. VOC's ImageSets/Segmentation/train.txt)")

    pairs = commands.add_parser("pairs", help="blind-pair accuracy per pattern (synthetic world)")
    _models(pairs)
    _common(pairs)
    pairs.add_argument("--data-root", type=Path, required=True, help="the world folder (with pairs/)")
    pairs.add_argument("--caption", choices=("caption", "short"), default="caption", help="long or short captions")

    synth = commands.add_parser("synth", help="everything on the synthetic world: short and long retrieval, "
                                              "segmentation and blind pairs, in one table")
    _models(synth)
    _common(synth)
    synth.add_argument("--world", type=Path, required=True, help="the folder written by memclip_train.synth")
    synth.add_argument("--method", default="sclip", choices=METHODS)
    synth.add_argument("--probe-world", type=Path,
                       help="a second world whose segmentation split fits a linear probe on each model's patch "
                            "features (its mIoU is reported beside the zero-shot one)")

    markings = commands.add_parser("markings", help="marking R@1: which of C names is the marking on the object "
                                                    "(a world written with --markings K)")
    _models(markings)
    _common(markings)
    markings.add_argument("--world", type=Path, required=True, help="the folder written by memclip_train.synth")
    markings.add_argument("--candidates", type=at_least(2), default=DEFAULT_CANDIDATES,
                          help="captions per image: the true marking's and C - 1 others (chance 1/C)")
    markings.add_argument("--no-cache", action="store_true", help="encode the candidate captions again instead of "
                                                                  "reading out/markings/text_features")

    heatmap = commands.add_parser("heatmap", help="text -> patch similarity maps over an image")
    _models(heatmap)
    heatmap.add_argument("--image", type=Path, required=True)
    heatmap.add_argument("--text", action="append", required=True, type=non_empty,
                         help="a caption (repeat for several maps)")
    heatmap.add_argument("--method", default="sclip", choices=METHODS)
    heatmap.add_argument("--out", type=Path, required=True, help="output PNG")
    heatmap.add_argument("--device", type=_device, default="cuda" if torch.cuda.is_available() else "cpu")
    return parser


def model_refs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> List[ModelRef]:
    """The models to evaluate. Refuses (naming the flag) what would give a table of other models than asked:
    flags without their --model, two models under one table name (one result would replace the other), and
    --text-pos-stretch without --text-context-length (it would do nothing)."""
    if len(args.pretrained) > len(args.model):
        parser.error("more --pretrained than --model: give each --pretrained after its --model")
    if args.text_pos_stretch and not args.text_context_length:
        parser.error("--text-pos-stretch needs --text-context-length N (alone it would change nothing)")
    text = None
    if args.text_context_length:
        text = {"context_length": args.text_context_length, "pos_stretch": args.text_pos_stretch}
    if len(args.label) > len(args.model):
        parser.error("more --label than --model: give each --label after its --model")
    weights = list(args.pretrained) + [None] * (len(args.model) - len(args.pretrained))
    labels = list(args.label) + [None] * (len(args.model) - len(args.label))
    refs = [ModelRef(m, p, text, n) for m, p, n in zip(args.model, weights, labels)]
    seen: Dict[str, ModelRef] = {}
    for ref in refs:
        if ref.label in seen:
            parser.error(f"two models would share the table row {ref.label!r} (--model {seen[ref.label].model} and "
                         f"--model {ref.model}), and one result would replace the other: give each a distinct --label")
        seen[ref.label] = ref
    return refs


def _repeated(values: Sequence[Any]) -> Optional[Any]:
    return next((value for index, value in enumerate(values) if value in values[:index]), None)


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Refuse, before any model or data is loaded, what can only be a mistake: a dataset or method given twice (the
    second result would replace the first), an unknown dataset variant, a --templates file that is not a list of
    templates, and an --out that cannot be written (it would fail only after every evaluation)."""
    for flag, values in (("--dataset", getattr(args, "dataset", None)), ("--method", getattr(args, "method", None))):
        if values and _repeated(values) is not None:
            parser.error(f"argument {flag}: {_repeated(values)!r} is given twice (its second result would replace the "
                         "first)")
    checks = {"retrieval": check_retrieval_name, "zeroshot": check_zeroshot_name}
    for spec in getattr(args, "dataset", None) or []:
        if args.command in checks:
            try:
                checks[args.command](*split_variant(spec))
            except ValueError as error:
                parser.error(f"argument --dataset: {error}")
    if getattr(args, "templates", None) and args.templates not in TEMPLATE_SETS:
        try:
            resolve_templates(args.templates)
        except ValueError as error:
            parser.error(f"argument --templates: {error}")
    folder = args.out.parent if args.command == "heatmap" else args.out
    try:
        check_writable(folder)
    except OSError as error:
        parser.error(f"argument --out: {args.out} cannot be written ({type(error).__name__}: {error}); nothing was "
                     "evaluated")


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and write and remove a file in it. Raises OSError when either fails."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
        pass


def paired_roots(datasets: Sequence[str], roots: Sequence[Path], parser: argparse.ArgumentParser,
                 flag: str = "--data-root") -> List[Path]:
    if len(roots) == 1:
        return list(roots) * len(datasets)
    if len(roots) != len(datasets):
        parser.error(f"give one {flag}, or one per --dataset ({len(datasets)}); got {len(roots)}")
    return list(roots)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s | %(levelname)s | %(message)s", datefmt="%H:%M:%S")
    refs = model_refs(args, parser)
    check_args(args, parser)
    return report_user_errors(parser.prog, args.debug, lambda: run_command(args, parser, refs))


def _run_options(args: argparse.Namespace, device: torch.device) -> Dict[str, Any]:
    """The settings every command shares, as keyword arguments of the ``run_*`` functions."""
    return {"device": device, "precision": args.precision, "progress": show_progress(not args.no_progress)}


def run_command(args: argparse.Namespace, parser: argparse.ArgumentParser, refs: Sequence[ModelRef]) -> None:
    device = torch.device(args.device)
    if args.command == "retrieval":
        roots = paired_roots(args.dataset, args.data_root, parser)
        results = run_retrieval(refs, args.dataset, roots, args.out, batch_size=args.batch_size, workers=args.workers,
                                skip_bad=args.skip_bad, use_cache=not args.no_cache, **_run_options(args, device))
        table = retrieval_table(results, args.dataset)
        (args.out / "retrieval_table.md").write_text(table + "\n")
    elif args.command == "zeroshot":
        roots = paired_roots(args.dataset, args.data_root, parser)
        results = run_zeroshot(refs, args.dataset, roots, args.out, batch_size=args.batch_size, workers=args.workers,
                               skip_bad=args.skip_bad, use_cache=not args.no_cache,
                               options=ZeroShotOptions(args.class_names, args.templates), **_run_options(args, device))
        table = zeroshot_table(results, args.dataset)
        (args.out / "zeroshot_table.md").write_text(table + "\n")
    elif args.command == "segmentation":
        roots = paired_roots(args.dataset, args.data_root, parser)
        probe_roots = (paired_roots(args.dataset, args.probe_data_root, parser, "--probe-data-root")
                       if args.probe_data_root else None)
        results = run_segmentation(refs, args.dataset, roots, args.method or ["sclip"], args.out, window=args.window,
                                   stride=args.stride, short_side=args.short_side, logit_scale=args.logit_scale,
                                   num_overlays=args.num_overlays, limit=args.limit, probe_roots=probe_roots,
                                   probe_split=args.probe_split, skip_bad=args.skip_bad, **_run_options(args, device))
        table = segmentation_table(results, args.dataset)
        (args.out / "segmentation_table.md").write_text(table + "\n")
    elif args.command == "pairs":
        results = run_pairs(refs, args.data_root, args.out, caption=args.caption, batch_size=args.batch_size,
                            skip_bad=args.skip_bad, **_run_options(args, device))
        table = pairs_table(results)
    elif args.command == "synth":
        table = run_synth(refs, args, device)
    elif args.command == "markings":
        results = run_markings(refs, args.world, args.out, candidates=args.candidates, batch_size=args.batch_size,
                               use_cache=not args.no_cache, skip_bad=args.skip_bad, **_run_options(args, device))
        table = markings_table(results)
        (args.out / "markings_table.md").write_text(table + "\n")
    else:
        ref = refs[0]
        try:
            image = Image.open(args.image)
        except UnidentifiedImageError as error:
            raise BadImageError(f"--image {args.image} is not an image PIL can read") from error
        loaded = load_model(ref, device)
        maps = [similarity_map(loaded.model, loaded.preprocess, loaded.tokenizer, image, text, device,
                               args.method, model_name=ref.label) for text in args.text]
        table = f"wrote {draw_heatmaps(args.out, image, maps, args.text)}"
    print(table)


SYNTH_ZEROSHOT = list(SYNTH_ATTRIBUTES)


def _breakdown(result: Dict[str, Any], scenes: SynthScenes, attribute: str, what: str) -> Dict[str, Any]:
    """:func:`zeroshot_breakdown`, or nothing (shown as '-') when --skip-bad left images out of the result."""
    if result.get("skipped_images"):
        logger.warning("%s: no breakdown by salience (%d images were skipped)", what, len(result["skipped_images"]))
        return {}
    return zeroshot_breakdown(result, scenes, attribute)


def run_synth(refs: Sequence[ModelRef], args: argparse.Namespace, device: torch.device) -> str:
    """Competence (semantic retrieval, zero-shot attributes), short- and long-caption retrieval, segmentation and
    blind pairs on the synthetic world, one table each."""
    options = dict(_run_options(args, device), models=ModelCache(device))
    batches = {"batch_size": args.batch_size, "workers": args.workers, "skip_bad": args.skip_bad}
    datasets = ["synth-short", "synth-long"]
    retrieval = run_retrieval(refs, datasets, [args.world] * 2, args.out, **batches, **options)
    segmentation = run_segmentation(refs, ["synth"], [args.world], [args.method], args.out, **options,
                                    probe_roots=[args.probe_world] if args.probe_world else None,
                                    skip_bad=args.skip_bad)
    pairs = run_pairs(refs, args.world, args.out, skip_bad=args.skip_bad, **options)
    semantics = run_synth_semantics(refs, args.world, args.out, batch_size=args.batch_size, **options)
    zeroshot = run_zeroshot(refs, SYNTH_ZEROSHOT, [args.world] * len(SYNTH_ZEROSHOT), args.out, **batches,
                            **options)
    scenes = load_scenes(args.world)
    breakdowns = {model: {dataset: _breakdown(result, scenes, SYNTH_ATTRIBUTES[dataset], f"{model} on {dataset}")
                          for dataset, result in per_dataset.items()}
                  for model, per_dataset in zeroshot.items()}
    tables = ["## Competence (semantic short-caption T2I R@k; zero-shot top-1 of the salient object's attributes, %)",
              competence_table(semantics, zeroshot),
              "## Zero-shot top-1 by how the image shows the salient object (%): the only object, strictly the "
              "largest, or tied in size with another (the caption's object is then named by the generator's "
              "tie-break: fill, then the cell nearest the middle)",
              salience_table(breakdowns, SYNTH_ZEROSHOT, SALIENCE_GROUPS),
              "## Most frequent zero-shot mistakes (true -> predicted, images)",
              confusions_table(breakdowns, SYNTH_ZEROSHOT),
              "## Retrieval (R@k, %)", retrieval_table(retrieval, datasets, ks=(1, 5)),
              f"## Segmentation ({args.method}, mIoU %)", segmentation_table(segmentation, ["synth"]),
              "## Blind pairs (image -> text, % of pairs where both images pick their own caption; blind = 0)",
              pairs_table(pairs)]
    text = "\n\n".join(tables)
    (args.out / "synth_tables.md").write_text(text + "\n")
    (args.out / "synth_results.json").write_text(json.dumps(
        {"retrieval": retrieval, "segmentation": segmentation, "pairs": pairs, "semantics": semantics,
         "zeroshot": zeroshot, "zeroshot_breakdown": breakdowns}, indent=1, default=str) + "\n")
    return text


if __name__ == "__main__":
    sys.exit(main())
