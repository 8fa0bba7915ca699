"""`python -m memclip_train.study capacity --out runs/capacity`: the slot probe (see docs/capacity.md).

    python -m memclip_train.study capacity --out runs/capacity                    # the registered grid, 'synth' teacher
    python -m memclip_train.study capacity --out runs/capacity --stop-after-gates # the gates only (G1, G2, G3)
    python -m memclip_train.study capacity --out runs/q --quick --model Test-Micro --teacher t/  # toy size

It caches the frozen teacher's features of K identities x 4 renders, checks the gates, chooses each arm's lr on
training renders, then trains each arm's slot at every K and scores it on held-out renders. Finished points are
skipped when the command runs again. Writes capacity_results.json, capacity_table.md, capacity_k.png and
capacity_tradeoff.png under --out.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from memclip.atomic_io import atomic_write_json, atomic_write_text

from ...error_reporting import add_debug_flag, report_user_errors
from ...flag_types import integer_list
from .analysis import summarise, tables
from .figures import plot_against_k, plot_tradeoff
from .gates import GateFailed
from .pipeline import CapacityPipeline
from .plan import ARMS, EXTRA_ARMS, CapacityPlan

PROG = "python -m memclip_train.study capacity"
SHIPPED_TEACHER = "synth"


def _arms(text: str) -> List[str]:
    keys = [v.strip() for v in text.split(",") if v.strip()]
    known = [arm.key for arm in ARMS + EXTRA_ARMS]
    unknown = sorted(set(keys) - set(known))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown arms {unknown}; choose from {known}")
    return keys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/capacity"), help="output folder")
    parser.add_argument("--teacher", default=SHIPPED_TEACHER,
                        help="the pretrained teacher: a shipped tag, a checkpoint file or a saved folder")
    parser.add_argument("--model", help="the teacher's architecture (default: the plan's, ViT-Tiny-8)")
    parser.add_argument("--quick", action="store_true", help="a toy size (for the tests): tiny K, a few steps")
    parser.add_argument("--arms", type=_arms, help="arms to run (default: the registered ones; extra: "
                                                    f"{[arm.key for arm in EXTRA_ARMS]})")
    parser.add_argument("--seeds", type=integer_list, help="seeds at every K (default: the plan's)")
    parser.add_argument("--primary-seeds", type=integer_list, help="more seeds at the two largest K (default: the plan's)")
    parser.add_argument("--stop-after-gates", action="store_true", help="check the gates, then stop")
    parser.add_argument("--arms-to-run", type=_arms, help="run only these arms' grid points (a second worker on the "
                                                           "same --out; workers claim points, none is run twice)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's); on a shared machine "
                                                     "1 thread wastes less time waiting")
    add_debug_flag(parser)
    return parser


def write_outputs(pipeline: CapacityPipeline) -> str:
    """Summarise the finished points into the results, table and figures; returns the table."""
    out = pipeline.out
    points = pipeline.finished()
    by_key = {record["key"]: record for record in points}

    def arrays(record):
        from .pipeline import Point
        fields = {name: record[name] for name in ("arm", "k", "exposures", "seed", "lr", "value_lr", "stage")}
        return pipeline.arrays(Point(**fields)) if record["key"] in by_key else {}

    def read(name: str):
        path = out / name
        return json.loads(path.read_text()) if path.is_file() else None

    summary = summarise(pipeline.plan, points, arrays, pipeline.costs(), read("gates.json"), read("checks.json"),
                        pipeline.decided_lrs())
    text = tables(summary)
    atomic_write_text(out / "capacity_table.md", text + "\n")
    atomic_write_json(out / "capacity_results.json", {"summary": summary, "plan": asdict(pipeline.plan),
                                                      "teacher": pipeline.teacher, "points": points})
    plot_against_k(summary, out / "capacity_k.png")
    plot_tradeoff(summary, out / "capacity_tradeoff.png")
    return text


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = CapacityPlan.quick() if args.quick else CapacityPlan()
    changes = {"arms": args.arms, "seeds": args.seeds, "primary_seeds": args.primary_seeds,
               "teacher_model": args.model}
    plan = replace(plan, **{k: (tuple(v) if isinstance(v, list) else v) for k, v in changes.items() if v})
    start = time.time()
    pipeline = CapacityPipeline(args.out, plan, args.teacher, log=lambda line: print(line, flush=True))
    print(f"memclip capacity slot probe -> {args.out} ({'quick' if args.quick else 'full'}; K = "
          f"{', '.join(f'{k:,}' for k in plan.ks)}; arms {', '.join(plan.arms)}; finished points are skipped)",
          flush=True)
    try:
        pipeline.run(stop_after_gates=args.stop_after_gates, arms_to_run=args.arms_to_run)
    except GateFailed as error:
        write_outputs(pipeline)
        print(f"{PROG}: gate failed: {error}")
        return 3
    text = write_outputs(pipeline)
    print("\n" + text)
    print(f"\n{args.out / 'capacity_table.md'}, {args.out / 'capacity_k.png'}; done in {time.time() - start:.0f}s")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(message)s")
    logging.getLogger("memclip").setLevel(logging.ERROR)
    return report_user_errors(PROG, args.debug, lambda: run(args))
