"""`python -m memclip_train.demo --out runs/demo [--quick] [--seed S]`: the whole method on the synthetic world.

Starts from the pretrained tiny CLIP that ships with memclip (ViT-Tiny-8, tag ``synth``; ``--pretrain-teacher``
re-creates it first, about two hours on 2 cores), generates the world, distils the memory student, fine-tunes it on
long + short captions, fine-tunes the teacher (the control) and a parallel-memory student (memory beside the MLP)
with the same recipe, evaluates them all, and writes REPORT.md with pictures. Stages that already finished with the
same settings are reused; a stage in --out made with other settings (a full demo after ``--quick``, another
``--seed``) stops the demo, naming the difference, and ``--force`` redoes every stage.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import List, Optional, Sequence

from ..error_reporting import ProgramFailed, add_debug_flag, report_user_errors
from ..recipes import pretrained_teacher_file
from ..stages import run_command
from .pipeline import OURS, SHIPPED_TEACHER, TEACHER, DemoPipeline, first_retrieval_images
from .plan import TEXT_RECIPES, DemoPlan
from .report import write_report


def heat_maps(pipeline: DemoPipeline, force: bool = False) -> List[Path]:
    """Text -> patch maps of the teacher and the fine-tuned student for a few retrieval images (made again under
    ``force``, which redid the models)."""
    paths = []
    captions = json.loads((pipeline.world / "retrieval" / "captions_short.json").read_text())
    first_caption = {}
    for annotation in captions["annotations"]:
        first_caption.setdefault(annotation["image_id"], annotation["caption"])
    by_file = {image["file_name"]: first_caption.get(image["id"]) for image in captions["images"]}
    models = {m.label: m for m in pipeline.models()}
    for image in first_retrieval_images(pipeline.world, pipeline.plan.heatmap_examples):
        text = by_file.get(f"image/{image.name}") or "a shape"
        for key, label in (("teacher", TEACHER), ("student", OURS)):
            out = pipeline.out / "figures" / f"heatmap_{image.stem}_{key}.png"
            if force or not out.exists():
                pipeline.run_command("memclip_train.eval", pipeline.heatmap_command(models[label], image, [text], out))
            paths.append(out)
    return paths


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m memclip_train.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    parser.add_argument("--quick", action="store_true", help="the same pipeline at a toy size (< 3 minutes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="redo every stage")
    parser.add_argument("--parallel", action=argparse.BooleanOptionalAction, default=True,
                        help="also fine-tune a parallel-memory student (memory beside the MLP); --no-parallel skips it")
    teacher = parser.add_mutually_exclusive_group()
    teacher.add_argument("--teacher", default=SHIPPED_TEACHER,
                         help="the pretrained ViT-Tiny-8 teacher: a tag, file or saved folder (default: the shipped "
                              f"'{SHIPPED_TEACHER}' weights)")
    teacher.add_argument("--pretrain-teacher", action="store_true",
                         help="first re-create the shipped teacher with python -m memclip_train.pretrain (in "
                              "OUT/pretrain; about two hours on 2 cores, resumable) and start from it")
    parser.add_argument("--stage2-text", choices=list(TEXT_RECIPES), default="thesis",
                        help="how stage 2 reads long captions: 'thesis' = 77 tokens, text tower frozen (default); "
                             "'longclip' = 248 tokens with the Long-CLIP stretch, text tower trained")
    parser.add_argument("--no-progress", action="store_true")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return report_user_errors(parser.prog, args.debug, lambda: run_demo(args))


def run_demo(args: argparse.Namespace) -> int:
    """The demo that ``main`` parsed: stages, heat maps, report.

    Raises:
        StageMismatch: a stage in --out was made with other settings (a full demo after --quick, another --seed).
        ProgramFailed: a stage (or the teacher's pretraining) failed.
    """
    start = time.time()
    plan = DemoPlan.quick(args.stage2_text) if args.quick else DemoPlan(stage2_text=args.stage2_text)
    teacher_weights = args.teacher
    if args.pretrain_teacher:
        pretrain_args = ["--out", str(args.out / "pretrain"), "--seed", str(args.seed), "--workers", "1"]
        pretrain_args += (["--quick"] if args.quick else []) + (["--no-progress"] if args.no_progress else [])
        try:
            run_command("memclip_train.pretrain", pretrain_args)
        except ProgramFailed as failed:
            raise ProgramFailed(f"the teacher's pretraining failed (exit code {failed.code}); see its output above",
                                failed.code) from None
        teacher_weights = str(pretrained_teacher_file(args.out / "pretrain"))
    pipeline = DemoPipeline(args.out, plan, args.seed, args.parallel, progress=not args.no_progress,
                            teacher=teacher_weights)
    print(f"memclip demo -> {args.out} ({'quick' if args.quick else 'full'}; stages that finished are reused)")
    pipeline.run(force=args.force)
    maps = heat_maps(pipeline, args.force)
    report = write_report(pipeline, maps, time.time() - start)
    print(f"\nreport: {report}\n")
    print((args.out / "eval" / "synth_tables.md").read_text())
    print(f"done in {time.time() - start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
