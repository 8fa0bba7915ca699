"""`python -m memory_layers.gpu_check`: the memory ops on a GPU at the real shapes, PASS or FAIL per line.

    python -m memory_layers.gpu_check                 # on CUDA: compiled kernels, a few minutes on one H100/H200
    TRITON_INTERPRET=1 python -m memory_layers.gpu_check --tiny --device cpu   # the same checks at toy shapes

Each line starts with PASS, FAIL or INFO, names the check and gives its figures:

- top-k at ViT-B-16 (50,432 tokens, n_keys 64, knn 64), ViT-L-14 (65,792 tokens) and 1M slots (n_keys 1024):
  the Triton selection against the torch one (the same fp32 scores, the same slots up to ties), brute force on a
  subset of tokens, in fp32 and under bf16 autocast with bf16 query gradients, and both selections' times;
- the embedding bag at the same shapes with skewed (hot) slots, fused and dense against torch, forward and
  backward, for an fp32 and a bf16 table;
- no host synchronisation in a whole memory layer's forward and backward on the Triton backend (CUDA only);
- the fused/dense crossover at 4,096, 16,384 and 65,536 slots, for a bf16 table and for an fp32 table under AMP,
  and whether ``auto`` picks the faster path;
- the whole ViT-B-16-mem layer under AMP on each backend against the fp32 layer and against the MLP it replaces,
  with the goal line ``auto`` forward+backward <= 1.5x the MLP.

The exit status is 1 when any line FAILs. Timing goals print INFO lines in ``--tiny`` mode (the interpreter is
not timed meaningfully). The program imports only memory_layers (no open_clip).
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch

from . import ops
from .bench import MLP, VARIANT_BACKENDS, precision_context, skewed_tokens
from .config import MemoryConfig
from .memory import ProductKeyMemory
from .ops import dispatch

logger = logging.getLogger(__name__)

# goal of the issue "Faster than the teacher": auto forward+backward within this factor of the MLP (amp_bf16)
LAYER_GOAL = 1.5
# auto's bag path counts as the right pick when it is within this factor of the faster path
AUTO_SLACK = 1.1


@dataclass(frozen=True)
class Shape:
    """One memory layer's shapes: tokens per call, block width, MLP width and the memory knobs."""

    name: str
    tokens: int
    width: int
    mlp_width: int
    n_keys: int
    heads: int = 4
    knn: int = 64
    k_dim: int = 256
    v_dim: int = 1024
    brute_tokens: int = 256

    @property
    def slots(self) -> int:
        return self.n_keys * self.n_keys

    @property
    def bag(self) -> int:
        return self.heads * self.knn

    def memory_config(self) -> MemoryConfig:
        return MemoryConfig(n_keys=self.n_keys, heads=self.heads, knn=self.knn, k_dim=self.k_dim, v_dim=self.v_dim)


@dataclass(frozen=True)
class Plan:
    """What one run checks: top-k and bag shapes, the crossover table sizes and the layer shape."""

    shapes: Tuple[Shape, ...]
    crossover_slots: Tuple[int, ...]
    crossover: Shape
    layer: Shape
    warmup: int
    repeats: int


FULL = Plan(
    shapes=(
        Shape("ViT-B-16", 256 * 197, 768, 3072, 64),
        Shape("ViT-L-14", 256 * 257, 1024, 4096, 64),
        Shape("1M slots", 16384, 768, 3072, 1024, brute_tokens=16),
    ),
    crossover_slots=(4096, 16384, 65536),
    crossover=Shape("ViT-B-16", 256 * 197, 768, 3072, 64),
    layer=Shape("ViT-B-16-mem", 256 * 197, 768, 3072, 64),
    warmup=2,
    repeats=5,
)
TINY = Plan(
    shapes=(
        Shape("tiny", 4, 32, 128, 8, heads=2, knn=8, k_dim=16, v_dim=24, brute_tokens=4),
        Shape("tiny, knn < n_keys", 3, 32, 128, 13, heads=2, knn=5, k_dim=12, v_dim=20, brute_tokens=3),
        Shape("tiny, many slots", 2, 32, 128, 40, heads=1, knn=6, k_dim=8, v_dim=16, brute_tokens=2),
    ),
    crossover_slots=(16, 64, 256),
    crossover=Shape("tiny", 4, 32, 128, 4, heads=2, knn=4, k_dim=16, v_dim=16),
    layer=Shape("tiny", 4, 32, 128, 8, heads=2, knn=4, k_dim=16, v_dim=24),
    warmup=0,
    repeats=1,
)


class Report:
    """Prints one line per check and counts the failures."""

    def __init__(self) -> None:
        self.failures = 0

    def line(self, status: str, name: str, detail: str) -> None:
        print(f"{status:<5} {name}: {detail}", flush=True)
        if status == "FAIL":
            self.failures += 1

    def run(self, name: str, check: Callable[[], str]) -> None:
        """Run ``check``: PASS with its figures, or FAIL with the assertion or error it raised."""
        try:
            detail = check()
        except Exception as error:  # a check program reports every failure and goes on to the next check
            logger.debug("%s failed:\n%s", name, traceback.format_exc())
            self.line("FAIL", name, f"{type(error).__name__}: {error}")
        else:
            self.line("PASS", name, detail)
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Median milliseconds of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(1e3 * (time.perf_counter() - start))
    return sorted(times)[len(times) // 2]


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want|| in fp64."""
    want = want.double()
    return ((got.double() - want).norm() / want.norm().clamp_min(1e-30)).item()


def _assert_close(name: str, got: torch.Tensor, want: torch.Tensor, tolerance: float) -> float:
    error = relative_error(got, want)
    assert math.isfinite(error) and error <= tolerance, f"{name}: relative error {error:.2e} > {tolerance:.0e}"
    return error


def check_topk(shape: Shape, device: torch.device, plan: Plan) -> str:
    """Triton selection == torch selection on the same half scores (scores exactly, slots up to ties), brute force
    on a subset, fp32 scores and bf16 query gradients under autocast; returns the figures."""
    generator = torch.Generator(device).manual_seed(0)
    query = torch.randn(shape.tokens, shape.heads, shape.k_dim, device=device, generator=generator)
    keys = torch.randn(shape.heads, 2, shape.n_keys, shape.k_dim // 2, device=device, generator=generator)
    figures = []
    for precision in ("fp32", "amp_bf16"):
        q = (query.bfloat16() if precision == "amp_bf16" else query).detach().requires_grad_()
        with precision_context(precision, device):
            halves = ops.half_scores(q, keys)
            got_scores, got_slots = ops.topk_from_half_scores(halves, shape.knn, backend="triton")
            want_scores, want_slots = ops.topk_from_half_scores(halves, shape.knn, backend="torch")
        assert halves.dtype == got_scores.dtype == torch.float32, f"{precision}: scores are {got_scores.dtype}"
        assert torch.equal(got_scores, want_scores), f"{precision}: triton and torch scores differ"
        differing = (got_slots != want_slots).any(-1)
        assert differing.float().mean().item() <= 1e-3, f"{precision}: {differing.float().mean():.2%} rows differ"
        subset = q.detach()[:shape.brute_tokens].float()
        brute_scores, _ = ops.product_key_topk_bruteforce(subset, keys, shape.knn)
        _assert_close(f"{precision} brute force", got_scores[:shape.brute_tokens].detach(), brute_scores, 1e-5)
        grad_out = torch.randn(got_scores.shape, device=device, generator=generator)
        grad_out = grad_out * (~differing).unsqueeze(-1)
        (got_grad,) = torch.autograd.grad(got_scores, q, grad_out, retain_graph=True)
        (want_grad,) = torch.autograd.grad(want_scores, q, grad_out)
        assert got_grad.dtype == q.dtype, f"{precision}: query gradient is {got_grad.dtype}"
        _assert_close(f"{precision} query gradient", got_grad, want_grad, 1e-5)
        figures.append(f"{precision} {differing.sum().item()} tied rows")
    halves = ops.half_scores(query, keys)
    triton_ms = time_ms(lambda: ops.select_topk_triton(halves, shape.knn), device, plan.warmup, plan.repeats)
    torch_ms = time_ms(lambda: ops.select_topk_torch(halves, shape.knn), device, plan.warmup, plan.repeats)
    half_ms = time_ms(lambda: ops.half_scores(query, keys), device, plan.warmup, plan.repeats)
    return (f"{shape.tokens:,} tokens, n_keys {shape.n_keys}, knn {shape.knn}: {', '.join(figures)}; half-score "
            f"GEMM {half_ms:.2f} ms, selection triton {triton_ms:.2f} ms, torch {torch_ms:.2f} ms")


def skewed_indices(tokens: int, bag: int, slots: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """(tokens, bag) slot ids with hot slots: ``floor(slots * u**3)`` for uniform u, so low ids are read most."""
    generator = torch.Generator(device).manual_seed(seed)
    uniform = torch.rand(tokens, bag, device=device, generator=generator)
    return (uniform.pow(3) * slots).long().clamp_max(slots - 1)


def bag_inputs(shape: Shape, slots: int, table_dtype: torch.dtype, device: torch.device
               ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator(device).manual_seed(1)
    values = (torch.randn(slots, shape.v_dim, device=device, generator=generator) / shape.v_dim ** 0.5)
    weights = torch.rand(shape.tokens, shape.bag, device=device, generator=generator)
    weights = weights / weights.sum(-1, keepdim=True)
    indices = skewed_indices(shape.tokens, shape.bag, slots, device)
    return values.to(table_dtype).requires_grad_(), indices, weights.requires_grad_()


def check_bag(shape: Shape, table_dtype: torch.dtype, device: torch.device) -> str:
    """Fused and dense bags against torch's ``embedding_bag`` on an fp32 copy: output and both gradients."""
    values, indices, weights = bag_inputs(shape, shape.slots, table_dtype, device)
    grad_out = torch.randn(shape.tokens, shape.v_dim, device=device).to(table_dtype)
    reference_values = values.detach().float().requires_grad_()
    want = ops.embedding_bag_torch(reference_values, indices, weights)
    want_grads = torch.autograd.grad(want, (reference_values, weights), grad_out.float())
    tolerance = 1e-5 if table_dtype == torch.float32 else 2e-2
    paths = {"fused": ops.embedding_bag_triton}
    if shape.slots <= dispatch.DENSE_MAX_SLOTS:
        paths["dense"] = ops.embedding_bag_dense
    errors = []
    for name, fn in paths.items():
        out = fn(values, indices, weights)
        grad_values, grad_weights = torch.autograd.grad(out, (values, weights), grad_out)
        assert out.dtype == grad_values.dtype == table_dtype, f"{name}: output/gradient dtype {out.dtype}"
        worst = max(_assert_close(f"{name} output", out, want, tolerance),
                    _assert_close(f"{name} value gradient", grad_values, want_grads[0], tolerance),
                    _assert_close(f"{name} weight gradient", grad_weights, want_grads[1], tolerance))
        errors.append(f"{name} {worst:.1e}")
    hot = torch.bincount(indices.flatten(), minlength=shape.slots).max().item()
    return (f"{shape.slots:,} x {shape.v_dim} {str(table_dtype).replace('torch.', '')} table, {shape.tokens:,} "
            f"tokens x {shape.bag}, hottest slot read {hot:,} times; worst relative error {', '.join(errors)}")


def check_no_host_sync(shape: Shape, device: torch.device) -> str:
    """A memory layer's forward and backward on the Triton backend (fused bag) never synchronise with the host."""
    memory = ProductKeyMemory(shape.width, shape.width, shape.memory_config(), backend="triton",
                              bag_path="fused").to(device)
    x = skewed_tokens(min(shape.tokens, 4096), shape.width, 1.0, device).requires_grad_()

    def step() -> None:
        with precision_context("amp_bf16", device):
            out = memory(x)
        out.float().square().mean().backward()

    step()  # compiles the kernels and caches the candidate-pair tables
    _synchronize(device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return "forward + backward under amp_bf16, triton backend, fused bag: no synchronising call"


def check_crossover(plan: Plan, table_dtype: torch.dtype, precision: str, device: torch.device) -> str:
    """Fused vs dense bag forward+backward per table size, and the path ``auto`` picks where it may pick dense."""
    shape = plan.crossover
    figures = []
    misses = []
    for slots in plan.crossover_slots:
        values, indices, weights = bag_inputs(shape, slots, table_dtype, device)
        grad_out = torch.randn(shape.tokens, shape.v_dim, device=device)
        times: Dict[str, float] = {}
        outputs = {}
        for name, fn in (("fused", ops.embedding_bag_triton), ("dense", ops.embedding_bag_dense)):
            def step(fn: Callable = fn) -> torch.Tensor:
                with precision_context(precision, device):
                    out = fn(values, indices, weights)
                torch.autograd.grad(out, (values, weights), grad_out.to(out.dtype))
                return out

            outputs[name] = step().detach()
            times[name] = time_ms(step, device, plan.warmup, plan.repeats)
        _assert_close(f"{slots} slots dense vs fused", outputs["dense"], outputs["fused"], 2e-2)
        faster = min(times, key=times.get)
        text = f"{slots:,} slots fused {times['fused']:.2f} / dense {times['dense']:.2f} ms ({faster} faster"
        if slots <= dispatch.DENSE_MAX_SLOTS:
            ops.clear_path_caches()
            with precision_context(precision, device):
                ops.embedding_bag(values, indices, weights, backend="triton", path="auto")
            (picked,) = ops.bag_path_cache().values()
            picked = "fused" if picked == "triton" else picked
            text += f", auto picks {picked}"
            if times[picked] > AUTO_SLACK * times[faster]:
                misses.append(f"{slots:,} slots: auto picked {picked}")
        figures.append(text + ")")
    detail = "; ".join(figures)
    assert not misses or device.type != "cuda", f"{detail}; auto picked the slower path: {misses}"
    return detail


def _layer_run(memory: ProductKeyMemory, x: torch.Tensor, precision: str
               ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
    """(output, slots, weights, parameter gradients) of one forward+backward."""
    memory.zero_grad(set_to_none=True)
    with precision_context(precision, x.device):
        slots, weights = memory.lookup(x)
        out = memory(x)
    out.float().square().mean().backward()
    return out.detach(), slots, weights, {n: p.grad.detach().clone() for n, p in memory.named_parameters()}


MEMORY_VARIANTS = ("reference", "fused", "dense", "auto")


def _use_variant(memory: ProductKeyMemory, name: str) -> ProductKeyMemory:
    """``memory``, set to run the benchmark's variant ``name`` (see :data:`memory_layers.bench.VARIANT_BACKENDS`)."""
    memory.backend, memory.bag_path = VARIANT_BACKENDS[name]
    return memory


def check_layer_accuracy(shape: Shape, device: torch.device) -> str:
    """Under AMP every backend reads the same slots with the same weights, and gives the torch backend's outputs and
    gradients; against the fp32 layer, outputs match on the token rows that read the same slots."""
    torch.manual_seed(0)
    memory = ProductKeyMemory(shape.width, shape.width, shape.memory_config()).to(device)
    x = skewed_tokens(shape.tokens, shape.width, 1.0, device)
    fp32_out, fp32_slots, _, fp32_grads = _layer_run(_use_variant(memory, "reference"), x, "fp32")
    amp = {}
    figures = []
    for name in MEMORY_VARIANTS:
        amp[name] = _layer_run(_use_variant(memory, name), x, "amp_bf16")
        out, slots, weights, grads = amp[name]
        reference_out, reference_slots, reference_weights, reference_grads = amp["reference"]
        assert torch.equal(slots, reference_slots), f"{name}: under AMP it reads other slots than torch"
        assert torch.equal(weights, reference_weights), f"{name}: under AMP its slot weights differ from torch's"
        _assert_close(f"{name} output vs torch under AMP", out, reference_out, 2e-2)
        for param in ("keys", "query_proj.weight", "values.weight"):
            _assert_close(f"{name} {param} gradient vs torch under AMP", grads[param], reference_grads[param], 5e-2)
        same_rows = (slots == fp32_slots).all(-1).view(shape.tokens, -1).all(-1)
        error = _assert_close(f"{name} output vs fp32 (rows with the fp32 slots)", out[same_rows].float(),
                              fp32_out[same_rows], 2e-2)
        grad_error = max(relative_error(grads[p], fp32_grads[p]) for p in ("keys", "query_proj.weight"))
        figures.append(f"{name} {error:.1e} (gradients {grad_error:.1e})")
    agree = (amp["reference"][1] == fp32_slots).all(-1).float().mean().item()
    return (f"{shape.tokens:,} tokens, every backend reads the same slots; {agree:.1%} of rows read the fp32 slots "
            f"(the query projection runs in bf16); output relative error vs fp32 on those rows: "
            + "; ".join(figures))


def check_layer_speed(shape: Shape, device: torch.device, plan: Plan, report: Report) -> None:
    """Forward and forward+backward ms per backend and of the MLP under AMP; the goal line for ``auto``."""
    torch.manual_seed(0)
    memory = ProductKeyMemory(shape.width, shape.width, shape.memory_config()).to(device)
    mlp = MLP(shape.width, shape.mlp_width).to(device)
    x = skewed_tokens(shape.tokens, shape.width, 1.0, device)
    inputs = x.detach().requires_grad_()

    def forward(module: torch.nn.Module) -> Callable[[], None]:
        def call() -> None:
            with torch.no_grad(), precision_context("amp_bf16", device):
                module(x)
        return call

    def train(module: torch.nn.Module) -> Callable[[], None]:
        def call() -> None:
            with precision_context("amp_bf16", device):
                out = module(inputs)
            out.float().square().mean().backward()
        return call

    mlp_times = (time_ms(forward(mlp), device, plan.warmup, plan.repeats),
                 time_ms(train(mlp), device, plan.warmup, plan.repeats))
    rows = []
    auto_ratio = float("nan")
    for name in MEMORY_VARIANTS:
        _use_variant(memory, name)
        fwd = time_ms(forward(memory), device, plan.warmup, plan.repeats)
        fwd_bwd = time_ms(train(memory), device, plan.warmup, plan.repeats)
        rows.append(f"{name} {fwd:.2f} / {fwd_bwd:.2f} ms ({fwd_bwd / mlp_times[1]:.2f}x)")
        if name == "auto":
            auto_ratio = fwd_bwd / mlp_times[1]
    report.line("INFO", f"layer speed {shape.name}, amp_bf16", f"{shape.tokens:,} tokens, forward / forward+backward "
                f"(fwd+bwd vs MLP): MLP {mlp_times[0]:.2f} / {mlp_times[1]:.2f} ms; " + "; ".join(rows))
    status = "INFO" if device.type != "cuda" else ("PASS" if auto_ratio <= LAYER_GOAL else "FAIL")
    report.line(status, f"goal: auto fwd+bwd <= {LAYER_GOAL}x MLP", f"{auto_ratio:.2f}x")


def run_checks(plan: Plan, device: torch.device) -> Report:
    """Every check of ``plan`` on ``device``, one line each."""
    report = Report()
    for shape in plan.shapes:
        report.run(f"top-k {shape.name}", lambda shape=shape: check_topk(shape, device, plan))
    for shape in plan.shapes:
        for table_dtype in (torch.float32, torch.bfloat16):
            report.run(f"bag {shape.name} {str(table_dtype).replace('torch.', '')}",
                       lambda shape=shape, dtype=table_dtype: check_bag(shape, dtype, device))
    if device.type == "cuda":
        report.run("no host sync", lambda: check_no_host_sync(plan.layer, device))
    else:
        report.line("INFO", "no host sync", "needs CUDA (torch.cuda.set_sync_debug_mode)")
    for table_dtype, precision in ((torch.bfloat16, "bf16"), (torch.float32, "amp_bf16")):
        name = f"crossover {str(table_dtype).replace('torch.', '')} table, {precision}"
        report.run(name, lambda dtype=table_dtype, precision=precision: check_crossover(plan, dtype, precision,
                                                                                         device))
    report.run(f"layer accuracy {plan.layer.name}, amp_bf16", lambda: check_layer_accuracy(plan.layer, device))
    try:
        check_layer_speed(plan.layer, device, plan, report)
    except (RuntimeError, ValueError) as error:
        report.line("FAIL", f"layer speed {plan.layer.name}", f"{type(error).__name__}: {error}")
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m memory_layers.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu with --tiny under TRITON_INTERPRET=1")
    parser.add_argument("--tiny", action="store_true", help="toy shapes (for the CPU under the Triton interpreter)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available on this machine (use --tiny --device cpu with "
                     "TRITON_INTERPRET=1 to check the program itself)")
    if device.type != "cuda" and not args.tiny:
        parser.error(f"--device {args.device}: the full shapes need CUDA; add --tiny")
    if not dispatch.triton_available():
        parser.error("triton is not installed (pip install memclip[kernels])")
    try:
        dispatch.check_triton_launch(device)
    except RuntimeError as error:
        parser.error(str(error))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (Triton interpreter)"
    import triton

    print(f"memory_layers GPU check on {name}, torch {torch.__version__}, triton {triton.__version__}"
          f"{', tiny shapes' if args.tiny else ''}", flush=True)
    start = time.perf_counter()
    report = run_checks(TINY if args.tiny else FULL, device)
    verdict = "all checks passed" if report.failures == 0 else f"{report.failures} check(s) FAILED"
    print(f"{verdict} in {time.perf_counter() - start:.0f} s")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
