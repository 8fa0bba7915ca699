"""`python -m memclip_train.bench_train`: samples/s of a distillation step next to the teacher's plain step.

    python -m memclip_train.bench_train --model ViT-Tiny-8-mem --batch-size 64
    python -m memclip_train.bench_train --model ViT-B-16-mem --batch-size 256 --precision amp_bf16   # on a GPU

Both rows run in the same process on the same random images: (1) the distillation step the trainer runs (teacher
forward under no_grad, student forward + backward through the memory only, AdamW step), and (2) a plain image-tower
forward + backward of the teacher with every weight trainable (what fine-tuning the teacher would cost). The ratio
says how much a distillation step costs relative to it.
"""
from __future__ import annotations

import argparse
import logging
import time
from typing import Callable, Optional, Sequence

import torch

import memclip
from memclip.precision import FP32_WEIGHT_PRECISIONS, autocast_for

from .distributed import DistributedEnv
from .tasks.distill import DistillTask


def _time(step: Callable[[], None], steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / steps


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m memclip_train.bench_train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-Tiny-8-mem", help="a memory model (its teacher is benchmarked too)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precision", default="fp32", choices=FP32_WEIGHT_PRECISIONS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--grad-checkpointing", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    autocast = autocast_for(args.precision, device)

    student = memclip.create_model(args.model).to(device)
    if not memclip.memory_layers_of(student):
        parser.error(f"--model {args.model} has no memory; give a -mem model")
    teacher = memclip.create_model(student.memclip_spec.teacher).to(device)
    teacher.load_state_dict({k: v for k, v in student.state_dict().items() if k in teacher.state_dict()},
                            strict=False)
    memclip.freeze_except_memory(student)
    if args.grad_checkpointing:
        student.set_grad_checkpointing(True)
        teacher.set_grad_checkpointing(True)
    size = student.visual.image_size
    size = size if isinstance(size, int) else size[0]
    images = torch.randn(args.batch_size, 3, size, size, device=device)
    task = DistillTask(student, teacher, None, None, None, DistributedEnv(device=device), val_captions=False)
    distill_optimizer = torch.optim.AdamW(memclip.param_groups(student, 5e-4, 0.1))

    def distill_step() -> None:
        distill_optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss, _ = task.loss(task.forward(student, {"image": images}), {})
        loss.backward()
        distill_optimizer.step()

    plain = memclip.create_model(student.memclip_spec.teacher).to(device).train()
    plain_optimizer = torch.optim.AdamW(plain.visual.parameters(), lr=1e-5)

    def plain_step() -> None:
        plain_optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = plain.encode_image(images).float().square().mean()
        loss.backward()
        plain_optimizer.step()

    student.train()
    distill_seconds = _time(distill_step, args.steps, args.warmup, device)
    plain_seconds = _time(plain_step, args.steps, args.warmup, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    trainable = sum(p.numel() for p in student.parameters() if p.requires_grad)
    print(f"{args.model} on {name}, batch {args.batch_size}, {args.precision}, {args.steps} timed steps")
    print(f"{'step':<44} {'ms/step':>10} {'samples/s':>10}")
    print(f"{'distillation (memory only, %.2fM trainable)' % (trainable / 1e6):<44} "
          f"{distill_seconds * 1e3:>10.1f} {args.batch_size / distill_seconds:>10.1f}")
    print(f"{'teacher image tower fwd+bwd (all weights)':<44} "
          f"{plain_seconds * 1e3:>10.1f} {args.batch_size / plain_seconds:>10.1f}")
    print(f"ratio distillation / teacher: {distill_seconds / plain_seconds:.2f}x the time per step")


if __name__ == "__main__":
    main()
