"""`python -m memclip_train.bench_infer`: inference cost of a memory student next to its teacher, in one run.

    python -m memclip_train.bench_infer --model ViT-B-16-mem                 # CPU at 1 and 2 threads, CUDA if present
    python -m memclip_train.bench_infer --model ViT-Tiny-8-mem --batch-size 64 --threads 1 --json infer.json

For every device setting (the CPU at each ``--threads`` count, then CUDA when available) it times, forward only
under ``torch.inference_mode`` on the same random images:

- ``encode_image`` of the student and of its teacher (the same architecture without memory, random weights);
- the student's first memory layer against the teacher's MLP of that block, on the tokens that block really sees
  (captured from the student's forward: batch x tokens per image rows).

Student and teacher calls alternate, so a change in the machine's load hits both alike; each figure is the median
of ``--repeats`` calls after ``--warmup`` untimed ones. The ratios (student / teacher, memory / MLP) are what to
read: below 1 the student is cheaper. The load average is printed with the figures.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import nn

import memclip
from memclip.precision import FP32_WEIGHT_PRECISIONS, autocast_for
from memclip.surgery import vision_blocks
from memory_layers.tools.bench import load_average
from memclip.errors import InputError



@dataclass
class InferenceRow:
    """One device setting's medians in milliseconds and the two ratios."""

    device: str
    threads: Optional[int]
    student_ms: float
    teacher_ms: float
    memory_ms: float
    mlp_ms: float
    load: str

    @property
    def encode_ratio(self) -> float:
        return self.student_ms / self.teacher_ms

    @property
    def layer_ratio(self) -> float:
        return self.memory_ms / self.mlp_ms


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_pair(first: Callable[[], object], second: Callable[[], object], device: torch.device, warmup: int,
              repeats: int) -> Tuple[float, float]:
    """Median milliseconds of ``first`` and ``second``, called alternately, after ``warmup`` untimed rounds."""
    for _ in range(warmup):
        first()
        second()
    times: Tuple[List[float], List[float]] = ([], [])
    for _ in range(repeats):
        for fn, bucket in ((first, times[0]), (second, times[1])):
            _synchronize(device)
            start = time.perf_counter()
            fn()
            _synchronize(device)
            bucket.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times[0]), statistics.median(times[1])


def build_pair(model: str, device: torch.device) -> Tuple[nn.Module, nn.Module, int]:
    """(student, teacher, first memory block index), both in eval mode on ``device``; the teacher shares the
    student's non-memory weights, so both towers see the same activations up to the first memory block."""
    student = memclip.create_model(model)
    memories = memclip.memory_layers_of(student)
    if not memories:
        raise InputError(f"--model {model}: has no memory layers; give a -mem model")
    teacher = memclip.create_model(student.memclip_spec.teacher)
    teacher.load_state_dict({k: v for k, v in student.state_dict().items() if k in teacher.state_dict()},
                            strict=False)
    return student.to(device).eval(), teacher.to(device).eval(), min(memories)


def block_input(student: nn.Module, block: int, images: torch.Tensor) -> torch.Tensor:
    """The tokens the memory of ``block`` reads in the student's forward of ``images``: (batch * tokens, width)."""
    memory = memclip.memory_layers_of(student)[block]
    captured: List[torch.Tensor] = []
    handle = memory.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach()))
    try:
        student.encode_image(images)
    finally:
        handle.remove()
    tokens = captured[0]
    return tokens.reshape(-1, tokens.shape[-1]).contiguous()


def measure(student: nn.Module, teacher: nn.Module, block: int, images: torch.Tensor, precision: str,
            warmup: int, repeats: int) -> Tuple[float, float, float, float, int]:
    """(student ms, teacher ms, memory ms, MLP ms, tokens) for one device setting."""
    device = images.device
    with torch.inference_mode(), autocast_for(precision, device)():
        tokens = block_input(student, block, images)
        student_ms, teacher_ms = time_pair(lambda: student.encode_image(images), lambda: teacher.encode_image(images),
                                           device, warmup, repeats)
        memory = memclip.memory_layers_of(student)[block]
        mlp = vision_blocks(teacher)[block].mlp
        memory_ms, mlp_ms = time_pair(lambda: memory(tokens), lambda: mlp(tokens), device, warmup, repeats)
    return student_ms, teacher_ms, memory_ms, mlp_ms, tokens.shape[0]


def format_table(rows: Sequence[InferenceRow], block: int, tokens: int) -> str:
    header = (f"| device | student encode_image ms | teacher ms | student / teacher | memory fwd ms (block {block}, "
              f"{tokens:,} tokens) | MLP fwd ms | memory / MLP | load |")
    lines = [header, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        lines.append(f"| {r.device} | {r.student_ms:.1f} | {r.teacher_ms:.1f} | {r.encode_ratio:.2f}x | "
                     f"{r.memory_ms:.1f} | {r.mlp_ms:.1f} | {r.layer_ratio:.2f}x | {r.load} |")
    return "\n".join(lines)


def _thread_counts(text: str) -> List[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise InputError(f"--threads {text!r}: give positive integers, e.g. 1,2")
    return counts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m memclip_train.bench_infer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-16-mem", help="a memory model (its teacher is timed beside it)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", default="1,2", help="CPU thread counts, one row each (comma list)")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU rows")
    parser.add_argument("--no-cuda", action="store_true", help="skip the CUDA row even when a GPU is present")
    parser.add_argument("--precision", default="fp32", choices=FP32_WEIGHT_PRECISIONS)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # open_clip and memclip warn of random weights: here they are the point
    try:
        threads = _thread_counts(args.threads)
    except ValueError as error:
        parser.error(str(error))
    if args.batch_size < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("--batch-size and --repeats must be >= 1, --warmup >= 0")
    settings: List[Tuple[torch.device, Optional[int]]] = []
    if not args.no_cpu:
        settings += [(torch.device("cpu"), n) for n in threads]
    if torch.cuda.is_available() and not args.no_cuda:
        settings.append((torch.device("cuda"), None))
    if not settings:
        parser.error("nothing to time: --no-cpu given and no CUDA device (or --no-cuda)")
    torch.manual_seed(args.seed)
    try:
        student, teacher, block = build_pair(args.model, torch.device("cpu"))
    except (ValueError, RuntimeError) as error:
        parser.error(str(error))
    size = student.visual.image_size
    size = size if isinstance(size, int) else size[0]
    images = torch.randn(args.batch_size, 3, size, size)
    print(f"{args.model} vs its teacher {student.memclip_spec.teacher}: batch {args.batch_size} at {size} px, "
          f"{args.precision}, random weights, forward only, median of {args.repeats} after {args.warmup} warm-up "
          f"calls; torch {torch.__version__}")
    saved_threads = torch.get_num_threads()
    rows: List[InferenceRow] = []
    tokens = 0
    try:
        for device, count in settings:
            if count is not None:
                torch.set_num_threads(count)
            student, teacher = student.to(device), teacher.to(device)
            student_ms, teacher_ms, memory_ms, mlp_ms, tokens = measure(
                student, teacher, block, images.to(device), args.precision, args.warmup, args.repeats)
            name = f"CPU, {count} thread{'s' if count > 1 else ''}" if count else torch.cuda.get_device_name(device)
            rows.append(InferenceRow(name, count, student_ms, teacher_ms, memory_ms, mlp_ms, load_average()))
    finally:
        torch.set_num_threads(saved_threads)
    print(format_table(rows, block, tokens))
    if args.json:
        data = {"model": args.model, "teacher": student.memclip_spec.teacher, "batch_size": args.batch_size,
                "image_size": size, "precision": args.precision, "block": block, "tokens": tokens,
                "rows": [{**asdict(r), "encode_ratio": r.encode_ratio, "layer_ratio": r.layer_ratio} for r in rows]}
        args.json.write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
