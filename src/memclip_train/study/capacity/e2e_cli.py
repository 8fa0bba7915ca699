"""`python -m memclip_train.study capacity-e2e --out runs/capacity-e2e`: stage B, the slot probe's question through
the real trainer (see docs/capacity.md).

    python -m memclip_train.study capacity-e2e --out runs/capacity-e2e --k 1024 --exposures 60 --n-keys 32
    python -m memclip_train.study capacity-e2e --out runs/q --quick --teacher t/     # toy size, for the tests

Writes a world whose captions name the K identities (read by the ``names`` text tower, the slot probe's names),
distils and fine-tunes the memory student, fine-tunes the control, each with ``python -m memclip_train.main``
(printed as it runs; finished stages are skipped, an interrupted training resumes), and scores both on held-out
renders. Writes e2e_results.json and e2e_table.md under --out.
"""
from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from memclip.atomic_io import atomic_write_text

from ...error_reporting import add_debug_flag, report_user_errors
from ...report.bootstrap import two_level_summary
from .endtoend import CONTROL, STUDENT, EndToEndPipeline, EndToEndPlan, table

PROG = "python -m memclip_train.study capacity-e2e"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/capacity-e2e"), help="output folder")
    parser.add_argument("--teacher", default="synth", help="the pretrained teacher: a shipped tag, a file or a folder")
    parser.add_argument("--model", help="the teacher's architecture (default: the plan's, ViT-Tiny-8)")
    parser.add_argument("--quick", action="store_true", help="a toy size (for the tests)")
    defaults = EndToEndPlan()
    parser.add_argument("--k", type=int, help=f"identities (default {defaults.k})")
    parser.add_argument("--exposures", type=int, help=f"exposures per identity (default {defaults.exposures})")
    parser.add_argument("--n-keys", type=int, help=f"the memory's sub-keys per half (default {defaults.n_keys})")
    parser.add_argument("--value-lr", type=float, help=f"the memory values' lr (default {defaults.value_lr:g})")
    parser.add_argument("--seed", type=int, help="names and training seed (default 0)")
    parser.add_argument("--batch-size", type=int, help=f"stage 2's batch (default {defaults.batch_size}; a shard "
                                                         "holds one batch)")
    parser.add_argument("--precision",
                        help=f"the trainer's precision (default {defaults.precision}; amp_bf16 on a GPU)")
    parser.add_argument("--workers", type=int, help=f"data loader workers (default {defaults.workers})")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--progress", action="store_true", help="progress bars in the training commands")
    add_debug_flag(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = EndToEndPlan.quick() if args.quick else EndToEndPlan()
    changes = {"k": args.k, "exposures": args.exposures, "n_keys": args.n_keys, "value_lr": args.value_lr,
               "seed": args.seed, "teacher_model": args.model, "batch_size": args.batch_size,
               "precision": args.precision, "workers": args.workers}
    plan = replace(plan, **{k: v for k, v in changes.items() if v is not None})
    start = time.time()
    pipeline = EndToEndPipeline(args.out, plan, args.teacher, log=lambda line: print(line, flush=True),
                                progress=args.progress)
    print(f"memclip capacity stage B -> {args.out} (K = {plan.k:,}, {plan.exposures} exposures, memory "
          f"{plan.n_keys ** 2:,} slots)", flush=True)
    results = pipeline.run()
    student, control = (np.asarray(results["models"][name]["heldout_bits_per_identity"]) for name in (STUDENT, CONTROL))
    contrast = two_level_summary((student - control)[None, :], scale=len(student))
    text = table(results, contrast)
    atomic_write_text(args.out / "e2e_table.md", text + "\n")
    print("\n" + text + f"\n\ndone in {time.time() - start:.0f}s")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(message)s")
    return report_user_errors(PROG, args.debug, lambda: run(args))
