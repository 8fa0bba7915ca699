"""`python -m memclip_train.study`: the capacity experiments.

    python -m memclip_train.study capacity --out runs/capacity    # the slot probe (docs/capacity.md)
    python -m memclip_train.study capacity-e2e --out runs/cap-e2e # its stage B, through the real trainer
    python -m memclip_train.study markings --out runs/study       # the markings study (docs/study.md); the same as
    python -m memclip_train.study --out runs/study                       # the pre-registered grid, from 'synth'
    python -m memclip_train.study --out runs/dev --teacher runs/pretrain/export/ViT-Tiny-8-synth.safetensors
    python -m memclip_train.study --out runs/q --quick --teacher runs/teacher/final   # toy size, for the tests

For each K of the plan it writes a world with K named markings, and for each seed fine-tunes the memory student
(distilled once per seed), the parallel student, the control (the teacher fine-tuned) and the dense control (wide
MLPs, the memory's parameter count) on its long and short captions, then measures marking R@1. Finished points are
skipped when the study runs again (an interrupted training resumes). Writes study_table.md, study_results.json and
study.png under --out. Its markings were not visible to the model (docs/study.md), so it did not test capacity;
``capacity`` is the experiment that can.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import memclip
from memclip.atomic_io import atomic_write_json
from memclip.cost import model_cost
from memclip.pretrained import list_shipped_tags
from memclip.errors import InputError

from ..error_reporting import add_debug_flag, report_user_errors
from ..flag_types import integer_list
from .analysis import summarise, tables
from .figure import plot
from .pipeline import StudyPipeline
from .plan import MODELS, TEACHER_MODEL, StudyPlan

SHIPPED_TEACHER = "synth"


def _keys(text: str) -> List[str]:
    keys = [v.strip() for v in text.split(",") if v.strip()]
    unknown = sorted(set(keys) - set(MODELS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown models {unknown}; choose from {list(MODELS)}")
    return keys


def check_teacher(teacher: str) -> None:
    """Raise ValueError unless ``teacher`` is a file, a folder or a shipped tag of ViT-Tiny-8."""
    if os.path.exists(teacher) or teacher in list_shipped_tags(TEACHER_MODEL):
        return
    if teacher == SHIPPED_TEACHER:
        raise InputError(f"--teacher {teacher}: the shipped '{SHIPPED_TEACHER}' teacher is not installed yet; create "
                         "it with `python -m memclip_train.pretrain --install`, or pass a checkpoint file or folder")
    raise InputError(f"--teacher {teacher}: no such file or folder, and not a shipped tag of {TEACHER_MODEL} "
                     f"({list_shipped_tags(TEACHER_MODEL)})")


def model_costs(keys: Sequence[str]) -> Dict[str, Dict[str, int]]:
    """Parameters and vision FLOPs per image of each compared model and of the teacher (weights do not matter)."""
    logging.getLogger("memclip").setLevel(logging.ERROR)
    costs = {"teacher": model_cost(memclip.create_model(TEACHER_MODEL)).to_dict()}
    for key in keys:
        model = MODELS[key]
        built = memclip.create_model(model.model, memory=dict(model.memory) or None)
        costs[key] = model_cost(built).to_dict()
    return costs


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Dispatch: ``capacity`` runs the slot probe, ``capacity-e2e`` its stage B; ``markings`` (or no subcommand)
    the markings study."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["capacity"]:
        from .capacity.cli import main as capacity_main
        return capacity_main(argv[1:])
    if argv[:1] == ["capacity-e2e"]:
        from .capacity.e2e_cli import main as e2e_main
        return e2e_main(argv[1:])
    if argv[:1] == ["markings"]:
        argv = argv[1:]
    return markings_main(argv)


def markings_main(argv: Sequence[str]) -> int:
    """The markings study (docs/study.md)."""
    parser = argparse.ArgumentParser(prog="python -m memclip_train.study [markings]", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/study"), help="output folder")
    parser.add_argument("--teacher", default=SHIPPED_TEACHER,
                        help=f"the pretrained {TEACHER_MODEL}: a shipped tag, a checkpoint file or a saved folder")
    parser.add_argument("--quick", action="store_true", help="the same grid at a toy size (for the tests)")
    parser.add_argument("--markings", type=integer_list, help="run only these K (default: the plan's)")
    parser.add_argument("--seeds", type=integer_list, help="run only these seeds (default: the plan's)")
    parser.add_argument("--models", type=_keys, help=f"run only these models, of {list(MODELS)}")
    parser.add_argument("--progress", action="store_true", help="progress bars in the commands")
    parser.add_argument("--force", action="store_true", help="redo the points (and their stages) of this run")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        check_teacher(args.teacher)
        plan = StudyPlan.quick() if args.quick else StudyPlan()
        changes = {"markings": args.markings, "seeds": args.seeds, "models": args.models}
        plan = replace(plan, **{k: tuple(v) for k, v in changes.items() if v})
    except ValueError as error:
        parser.error(str(error))
    return report_user_errors(parser.prog, args.debug, lambda: run_study(args, plan))


def run_study(args: argparse.Namespace, plan: StudyPlan) -> int:
    """The study that ``main`` parsed.

    Raises:
        StageMismatch: a point or stage in --out was made with other settings (``--force`` redoes them).
        ProgramFailed: a stage failed.
    """
    start = time.time()
    pipeline = StudyPipeline(args.out, plan, args.teacher, progress=args.progress, force=args.force)
    print(f"memclip capacity study -> {args.out} ({'quick' if args.quick else 'full'}; {len(pipeline.points())} "
          "points; points finished with the same settings are skipped)")
    results = pipeline.run()
    costs_file = args.out / "costs.json"
    if not costs_file.exists():
        atomic_write_json(costs_file, model_costs(list(MODELS)))
    summary = summarise(results, json.loads(costs_file.read_text()))
    text = tables(summary)
    (args.out / "study_table.md").write_text(text + "\n")
    atomic_write_json(args.out / "study_results.json", {"summary": summary, "plan": asdict(plan),
                                                       "teacher": args.teacher})
    plot(summary, args.out / "study.png")
    print("\n" + text)
    print(f"\n{args.out / 'study_table.md'}, {args.out / 'study.png'}; done in {time.time() - start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
