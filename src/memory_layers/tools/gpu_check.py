"""`python -m memory_layers.gpu_check`: the memory ops on a GPU at the real shapes, PASS or FAIL per check.

    python -m memory_layers.gpu_check                 # on CUDA: compiled kernels, about 3 minutes on one H100
    TRITON_INTERPRET=1 python -m memory_layers.gpu_check --tiny --device cpu   # the same checks at toy shapes

Each check prints one line as it ends (PASS, FAIL or INFO, its name, its seconds and its figures, with the
tolerance it used), and the run ends with one table of every check's status and time. Comparisons are relative
errors ``||got - want|| / ||want||`` against a stated tolerance; a comparison of nothing fails. Tolerances:
results summed in another order in fp32 :data:`FP32_TOL`; a gradient through torch's gather backward, whose CUDA
atomics add in no fixed order, :data:`ATOMIC_TOL` in fp32; anything rounded to bf16 or computed from bf16 inputs
(outputs, gradients under autocast) :data:`BF16_TOL` (bf16 keeps 8 bits: 2**-8 = 4e-3 per element).

- top-k at ViT-B-16 (50,432 tokens, n_keys 64, knn 64), ViT-L-14 (65,792 tokens) and 1M slots (n_keys 1024):
  the Triton selection against the torch one and against brute force on a subset, the same scores and the same
  slots (ties are broken alike on every backend), in fp32 and under bf16 autocast; the half-score gradients in fp32
  and the query gradients (bf16 under autocast); the times of both selections;
- the embedding bag at those shapes and at v_dim 768 (not a power of two), hot slots included, fused and dense
  against torch for an fp32 and a bf16 table, forward and both gradients; the sparse value gradient of a 1M-slot
  table against the dense one; an fp32 table's bag under autocast (read from its bf16 copy) against an fp32
  reference at a tight tolerance;
- no host synchronisation in a whole layer's forward and backward (CUDA only);
- the fused/dense crossover at 4,096, 16,384 and 65,536 slots for a bf16 table and an fp32 table under AMP, with
  bytes moved per token and the fraction of the memory roofline (a measured device copy), which path ``auto``
  and the timing-free rule pick;
- the whole ViT-B-16-mem layer under AMP on each backend: the same slots and weights on all, outputs and gradients
  against the torch backend, and against the fp32 layer read at the AMP slots (every row compared; at least
  :data:`MIN_SLOT_AGREEMENT` of the (token, head) pairs must choose the fp32 slots);
- determinism: the same step twice gives the same bits (under ``torch.use_deterministic_algorithms``, and for the
  fused bag's value gradient without it); one step under gradient checkpointing equals the plain step; five
  layers sharing one table (one bf16 copy for all) against the torch backend;
- the layer's speed against the MLP it replaces, with the goal line ``auto`` forward+backward <= 1.5x the MLP.

The exit status is 1 when any check FAILs. Timing goals print INFO lines in ``--tiny`` mode (the interpreter is
not timed meaningfully). The program imports only memory_layers (no open_clip).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .. import ops
from ..config import MemoryConfig
from ..memory import ProductKeyMemory
from ..ops import dispatch
from ..values import ValueTable
from .bench import MLP, VARIANT_BACKENDS, precision_context, skewed_tokens
from .roofline import copy_bandwidth, readout_traffic, roofline_text

logger = logging.getLogger(__name__)

# goal of the issue "Faster than the teacher": auto forward+backward within this factor of the MLP (amp_bf16)
LAYER_GOAL = 1.5
# auto's bag path counts as the right pick when it is within this factor of the faster path
AUTO_SLACK = 1.1
FP32_TOL = 1e-5
ATOMIC_TOL = 1e-6
BF16_TOL = 2e-2
# gradients under autocast: bf16 products summed over many tokens
AMP_GRAD_TOL = 5e-2
# at least this share of (token, head) pairs must read the fp32 layer's slot set under AMP
MIN_SLOT_AGREEMENT = 0.5
SHARED_LAYERS = 5


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
    """What one run checks: top-k and bag shapes, the crossover table sizes, the layer shapes."""

    topk_shapes: Tuple[Shape, ...]
    bag_shapes: Tuple[Shape, ...]
    crossover_slots: Tuple[int, ...]
    crossover: Shape
    layer: Shape
    small_layer: Shape
    sparse_from_slots: int
    warmup: int
    repeats: int


VIT_B = Shape("ViT-B-16", 256 * 197, 768, 3072, 64)
FULL = Plan(
    topk_shapes=(
        VIT_B,
        Shape("ViT-L-14", 256 * 257, 1024, 4096, 64),
        Shape("1M slots", 16384, 768, 3072, 1024, brute_tokens=16),
    ),
    bag_shapes=(
        VIT_B,
        Shape("ViT-B-16, v_dim 768", 256 * 197, 768, 3072, 64, v_dim=768),
        Shape("ViT-L-14", 256 * 257, 1024, 4096, 64),
        Shape("1M slots", 16384, 768, 3072, 1024, brute_tokens=16),
    ),
    crossover_slots=(4096, 16384, 65536),
    crossover=VIT_B,
    layer=Shape("ViT-B-16-mem", 256 * 197, 768, 3072, 64),
    small_layer=Shape("ViT-B-16-mem, 32 images", 32 * 197, 768, 3072, 64),
    sparse_from_slots=dispatch.DENSE_MAX_SLOTS + 1,
    warmup=2,
    repeats=5,
)
TINY = Plan(
    topk_shapes=(
        Shape("tiny", 4, 32, 128, 8, heads=2, knn=8, k_dim=16, v_dim=24, brute_tokens=4),
        Shape("tiny, knn < n_keys", 3, 32, 128, 13, heads=2, knn=5, k_dim=12, v_dim=20, brute_tokens=3),
        Shape("tiny, many slots", 2, 32, 128, 40, heads=1, knn=6, k_dim=8, v_dim=16, brute_tokens=2),
    ),
    bag_shapes=(
        Shape("tiny", 4, 32, 128, 8, heads=2, knn=8, k_dim=16, v_dim=24),
        Shape("tiny, v_dim 12", 3, 32, 128, 8, heads=2, knn=4, k_dim=12, v_dim=12),
        Shape("tiny, many slots", 2, 32, 128, 40, heads=1, knn=6, k_dim=8, v_dim=16),
    ),
    crossover_slots=(16, 64, 256),
    crossover=Shape("tiny", 4, 32, 128, 4, heads=2, knn=4, k_dim=16, v_dim=16),
    layer=Shape("tiny", 4, 32, 128, 8, heads=2, knn=4, k_dim=16, v_dim=24),
    small_layer=Shape("tiny", 3, 32, 128, 8, heads=2, knn=4, k_dim=16, v_dim=24),
    sparse_from_slots=1000,
    warmup=0,
    repeats=1,
)


@dataclass
class Row:
    """One check's outcome."""

    status: str
    name: str
    seconds: float
    detail: str


@dataclass
class Report:
    """Prints one line per check as it ends, and at the end one table of them all."""

    rows: List[Row] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return sum(row.status == "FAIL" for row in self.rows)

    def line(self, status: str, name: str, detail: str, seconds: float = 0.0) -> None:
        self.rows.append(Row(status, name, seconds, detail))
        print(f"{status:<5} {name} ({seconds:.1f} s): {detail}", flush=True)

    def run(self, name: str, check: Callable[[], str]) -> None:
        """Run ``check``: PASS with its figures, or FAIL with the assertion or error it raised."""
        start = time.perf_counter()
        try:
            detail = check()
        except Exception as error:  # a check program reports every failure and goes on to the next check
            logger.debug("%s failed:\n%s", name, traceback.format_exc())
            self.line("FAIL", name, f"{type(error).__name__}: {error}", time.perf_counter() - start)
        else:
            self.line("PASS", name, detail, time.perf_counter() - start)
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def table(self) -> str:
        """Every check's status and seconds, one line each, and the totals."""
        width = max([len(row.name) for row in self.rows] + [5])
        lines = [f"{'check':<{width}}  status  seconds", f"{'-' * width}  ------  -------"]
        lines += [f"{row.name:<{width}}  {row.status:<6}  {row.seconds:7.1f}" for row in self.rows]
        passed = sum(row.status == "PASS" for row in self.rows)
        lines.append(f"{len(self.rows)} checks: {passed} PASS, {self.failures} FAIL, "
                     f"{len(self.rows) - passed - self.failures} INFO; {sum(r.seconds for r in self.rows):.0f} s")
        return "\n".join(lines)


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
    """||got - want|| / ||want|| in fp64. Raises AssertionError for empty or mismatched tensors: a comparison of
    nothing must not pass."""
    assert got.shape == want.shape, f"shapes differ: {tuple(got.shape)} vs {tuple(want.shape)}"
    assert want.numel() > 0, "nothing to compare (empty tensors)"
    want = want.double()
    return ((got.double() - want).norm() / want.norm().clamp_min(1e-30)).item()


def _assert_close(name: str, got: torch.Tensor, want: torch.Tensor, tolerance: float) -> float:
    error = relative_error(got, want)
    assert math.isfinite(error) and error <= tolerance, f"{name}: relative error {error:.2e} > {tolerance:.0e}"
    return error


@contextlib.contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """``torch.use_deterministic_algorithms(True)`` inside, the previous mode after (CUBLAS_WORKSPACE_CONFIG must be
    set before CUDA starts; :func:`main` sets it)."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


# ---------------------------------------------------------------------------------------------- top-k
def check_topk(shape: Shape, device: torch.device, plan: Plan) -> str:
    """Triton selection == torch selection == brute force on the same half scores (scores and slots exactly), half
    score gradients in fp32 and query gradients under autocast; returns the figures."""
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
        assert torch.equal(got_slots, want_slots), (
            f"{precision}: triton and torch slots differ on {(got_slots != want_slots).any(-1).sum().item()} rows")
        subset = q.detach()[:shape.brute_tokens].float()
        brute_scores, brute_slots = ops.product_key_topk_bruteforce(subset, keys, shape.knn)
        assert torch.equal(got_scores[:shape.brute_tokens].detach(), brute_scores), f"{precision}: brute scores"
        assert torch.equal(got_slots[:shape.brute_tokens], brute_slots), f"{precision}: brute-force slots differ"
        tied = (got_scores.detach().diff(dim=-1) == 0).any(-1).sum().item()
        grad_out = torch.randn(got_scores.shape, device=device, generator=generator)
        got_halves, got_query = torch.autograd.grad(got_scores, (halves, q), grad_out, retain_graph=True)
        want_halves, want_query = torch.autograd.grad(want_scores, (halves, q), grad_out)
        assert got_query.dtype == q.dtype, f"{precision}: query gradient is {got_query.dtype}"
        half_error = _assert_close(f"{precision} half-score gradient", got_halves, want_halves, ATOMIC_TOL)
        query_tolerance = BF16_TOL if precision == "amp_bf16" else FP32_TOL
        query_error = _assert_close(f"{precision} query gradient", got_query, want_query, query_tolerance)
        figures.append(f"{precision}: slots equal, {tied:,} token-heads with tied scores, half-score gradient "
                       f"{half_error:.0e} (fp32, tol {ATOMIC_TOL:.0e}), query gradient {query_error:.0e} "
                       f"({'bf16' if precision == 'amp_bf16' else 'fp32'}, tol {query_tolerance:.0e})")
    halves = ops.half_scores(query, keys)
    triton_ms = time_ms(lambda: ops.select_topk_triton(halves, shape.knn), device, plan.warmup, plan.repeats)
    torch_ms = time_ms(lambda: ops.select_topk_torch(halves, shape.knn), device, plan.warmup, plan.repeats)
    half_ms = time_ms(lambda: ops.half_scores(query, keys), device, plan.warmup, plan.repeats)
    return (f"{shape.tokens:,} tokens, n_keys {shape.n_keys}, knn {shape.knn}; {'; '.join(figures)}; half-score "
            f"GEMM {half_ms:.2f} ms, selection triton {triton_ms:.2f} ms, torch {torch_ms:.2f} ms")


# ---------------------------------------------------------------------------------------------- the bag
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


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def check_bag(shape: Shape, table_dtype: torch.dtype, device: torch.device, sparse_from_slots: int) -> str:
    """Fused and dense bags against torch's ``embedding_bag`` on an fp32 copy: output and both gradients; for a
    table of at least ``sparse_from_slots`` slots, the fused path's sparse value gradient against its dense one."""
    values, indices, weights = bag_inputs(shape, shape.slots, table_dtype, device)
    grad_out = torch.randn(shape.tokens, shape.v_dim, device=device).to(table_dtype)
    reference_values = values.detach().float().requires_grad_()
    want = ops.embedding_bag_torch(reference_values, indices, weights)
    want_grads = torch.autograd.grad(want, (reference_values, weights), grad_out.float())
    tolerance = FP32_TOL if table_dtype == torch.float32 else BF16_TOL
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
        if name == "fused" and shape.slots >= sparse_from_slots:
            sparse = ops.embedding_bag_triton(values, indices, weights, sparse_grad=True)
            (sparse_grad,) = torch.autograd.grad(sparse, (values,), grad_out)
            assert sparse_grad.is_sparse and torch.equal(sparse_grad.to_dense(), grad_values), "sparse gradient"
            rows = sparse_grad.coalesce().indices().shape[1]
            errors.append(f"sparse value gradient == dense ({rows:,} of {shape.slots:,} rows)")
    hot = torch.bincount(indices.flatten(), minlength=shape.slots).max().item()
    return (f"{shape.slots:,} x {shape.v_dim} {_dtype_name(table_dtype)} table, {shape.tokens:,} tokens x "
            f"{shape.bag}, hottest slot read {hot:,} times; worst relative error (tol {tolerance:.0e}): "
            + ", ".join(errors))


def check_amp_table_backward(shape: Shape, device: torch.device) -> str:
    """An fp32 table read under autocast (through its bf16 copy): the value and weight gradients that reach the fp32
    table equal an fp32 reference on the bf16-rounded table with the same bf16 output gradient (tight for the fused
    path, which accumulates in fp32; autocast's GEMM precision for the dense one)."""
    values, indices, weights = bag_inputs(shape, shape.slots, torch.float32, device)
    table = ValueTable(shape.slots, shape.v_dim).to(device)
    with torch.no_grad():
        table.weight.copy_(values)
    grad_out = torch.randn(shape.tokens, shape.v_dim, device=device).bfloat16()
    rounded = values.detach().bfloat16().float().requires_grad_()
    want = ops.embedding_bag_torch(rounded, indices, weights)
    want_values, want_weights = torch.autograd.grad(want, (rounded, weights), grad_out.float())
    paths = ["fused"] + (["dense"] if shape.slots <= dispatch.DENSE_MAX_SLOTS else [])
    figures = []
    for path in paths:
        table.zero_grad(set_to_none=True)
        with precision_context("amp_bf16", device):
            out = table(indices, weights, backend="triton", path=path)
        assert out.dtype == torch.bfloat16, f"{path}: the read-out under autocast is {out.dtype}"
        (grad_weights,) = torch.autograd.grad(out, (weights,), grad_out, retain_graph=True)
        out.backward(grad_out)
        assert table.weight.grad.dtype == torch.float32, f"{path}: value gradient {table.weight.grad.dtype}"
        tolerance = FP32_TOL if path == "fused" else BF16_TOL
        errors = (_assert_close(f"{path} output", out, want, BF16_TOL),
                  _assert_close(f"{path} value gradient", table.weight.grad, want_values, tolerance),
                  _assert_close(f"{path} weight gradient", grad_weights, want_weights, tolerance))
        figures.append(f"{path}: output {errors[0]:.1e} (tol {BF16_TOL:.0e}), value gradient {errors[1]:.1e}, "
                       f"weight gradient {errors[2]:.1e} (tol {tolerance:.0e})")
    return f"{shape.slots:,} x {shape.v_dim} fp32 table under amp_bf16, {shape.tokens:,} tokens; " + "; ".join(figures)


# ---------------------------------------------------------------------------------------------- host syncs
def check_no_host_sync(shape: Shape, device: torch.device) -> str:
    """A memory layer's forward and backward under AMP never synchronises with the host, on each path (after a
    first step that compiles the kernels and, for ``auto``, times the paths)."""
    passed = []
    for variant in ("fused", "dense", "auto"):
        backend, bag_path = VARIANT_BACKENDS[variant]
        memory = ProductKeyMemory(shape.width, shape.width, shape.memory_config(), backend=backend,
                                  bag_path=bag_path).to(device)
        x = skewed_tokens(shape.tokens, shape.width, 1.0, device).requires_grad_()

        def step() -> None:
            with precision_context("amp_bf16", device):
                out = memory(x)
            out.float().square().mean().backward()

        step()
        _synchronize(device)
        torch.cuda.set_sync_debug_mode("error")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        passed.append(variant)
    return f"forward + backward under amp_bf16, {shape.tokens:,} tokens, no synchronising call: {', '.join(passed)}"


# ---------------------------------------------------------------------------------------------- crossover
def check_crossover(plan: Plan, table_dtype: torch.dtype, precision: str, device: torch.device,
                    bandwidth: float) -> str:
    """Fused vs dense read-out forward+backward per table size (through :class:`ValueTable`, so an fp32 table under
    AMP reads its bf16 copy), bytes per token against the memory roofline, and the paths ``auto`` and the rule
    pick where they may pick dense."""
    shape = plan.crossover
    figures, misses, dense_wins = [], [], []
    for slots in plan.crossover_slots:
        values, indices, weights = bag_inputs(shape, slots, table_dtype, device)
        table = ValueTable(slots, shape.v_dim).to(device=device, dtype=table_dtype)
        with torch.no_grad():
            table.weight.copy_(values)
        grad_out = torch.randn(shape.tokens, shape.v_dim, device=device)
        times: Dict[str, float] = {}
        outputs = {}
        for path in ("fused", "dense"):
            def step(path: str = path) -> torch.Tensor:
                with precision_context(precision, device):
                    out = table(indices, weights, backend="triton", path=path)
                torch.autograd.grad(out, (table.weight, weights), grad_out.to(out.dtype))
                return out

            outputs[path] = step().detach()
            times[path] = time_ms(step, device, plan.warmup, plan.repeats)
        _assert_close(f"{slots} slots dense vs fused", outputs["dense"], outputs["fused"], BF16_TOL)
        read_bytes = outputs["fused"].element_size()
        text = f"{slots:,} slots: fused {times['fused']:.2f} ms"
        if device.type == "cuda":
            traffic = readout_traffic("fused", slots, shape.bag, shape.v_dim, shape.tokens, read_bytes, read_bytes,
                                      table.weight.element_size(), train=True)
            text += f" ({roofline_text(traffic, shape.tokens, times['fused'] / 1e3, bandwidth, 'fused')})"
            traffic = readout_traffic("dense", slots, shape.bag, shape.v_dim, shape.tokens, read_bytes, read_bytes,
                                      table.weight.element_size(), train=True)
            text += (f", dense {times['dense']:.2f} ms "
                     f"({roofline_text(traffic, shape.tokens, times['dense'] / 1e3, bandwidth, 'dense')})")
        else:
            text += f", dense {times['dense']:.2f} ms"
        faster = min(times, key=times.get)
        if faster == "dense":
            dense_wins.append(slots)
        text += f"; {faster} faster"
        if slots <= dispatch.DENSE_MAX_SLOTS:
            ops.clear_path_caches()
            with precision_context(precision, device):
                table(indices, weights, backend="triton", path="auto")
            (picked,) = ops.bag_path_cache().values()
            picked = "fused" if picked == "triton" else picked
            compute = torch.bfloat16 if read_bytes == 2 else torch.float32
            rule = dispatch.rule_bag_path(slots, shape.bag, shape.tokens, compute)
            text += f", auto picks {picked}, the rule {'fused' if rule == 'triton' else 'dense'}"
            if times[picked] > AUTO_SLACK * times[faster]:
                misses.append(f"{slots:,} slots: auto picked {picked}")
        figures.append(text)
    crossover = f"dense faster up to {max(dense_wins):,} slots" if dense_wins else "fused faster everywhere"
    detail = f"{shape.tokens:,} tokens x {shape.bag} rows of {shape.v_dim}, fwd+bwd: " + "; ".join(figures)
    detail += f"; measured crossover: {crossover}"
    assert not misses or device.type != "cuda", f"{detail}; auto picked the slower path: {misses}"
    return detail


# ---------------------------------------------------------------------------------------------- whole layers
MEMORY_VARIANTS = ("reference", "fused", "dense", "auto")


def _use_variant(memory: ProductKeyMemory, name: str) -> ProductKeyMemory:
    """``memory``, set to run the benchmark's variant ``name`` (see :data:`.bench.VARIANT_BACKENDS`)."""
    memory.backend, memory.bag_path = VARIANT_BACKENDS[name]
    return memory


def _layer_run(memory: ProductKeyMemory, x: torch.Tensor, precision: str
               ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
    """(output, slots, weights, parameter gradients) of one forward+backward."""
    memory.zero_grad(set_to_none=True)
    with precision_context(precision, x.device):
        slots, weights = memory.lookup(x)
        out = memory(x)
    out.float().square().mean().backward()
    return out.detach(), slots, weights, {n: p.grad.detach().clone() for n, p in memory.named_parameters()}


def _fp32_at_slots(memory: ProductKeyMemory, x: torch.Tensor, slots: torch.Tensor
                   ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """The fp32 layer's output and gradients when it reads ``slots`` (T, heads * knn) instead of its own."""
    memory.zero_grad(set_to_none=True)
    _use_variant(memory, "reference")
    halves = memory.half_scores(x)
    tokens = x.shape[0]
    scores = ops.slot_scores(halves, slots.view(tokens, memory.heads, memory.knn))
    weights = F.softmax(scores, dim=-1).view(tokens, -1)
    out = memory.read_out(x, slots, weights)
    out.square().mean().backward()
    return out.detach(), {n: p.grad.detach().clone() for n, p in memory.named_parameters()}


def check_layer_accuracy(shape: Shape, device: torch.device) -> str:
    """Under AMP every backend reads the same slots with the same weights, and gives the torch backend's outputs and
    gradients; against the fp32 layer read at the AMP slots, every row."""
    torch.manual_seed(0)
    memory = ProductKeyMemory(shape.width, shape.width, shape.memory_config()).to(device)
    x = skewed_tokens(shape.tokens, shape.width, 1.0, device)
    _, fp32_slots, _, _ = _layer_run(_use_variant(memory, "reference"), x, "fp32")
    amp = {}
    figures = []
    for name in MEMORY_VARIANTS:
        amp[name] = _layer_run(_use_variant(memory, name), x, "amp_bf16")
        out, slots, weights, grads = amp[name]
        reference_out, reference_slots, reference_weights, reference_grads = amp["reference"]
        assert torch.equal(slots, reference_slots), f"{name}: under AMP it reads other slots than torch"
        assert torch.equal(weights, reference_weights), f"{name}: under AMP its slot weights differ from torch's"
        error = _assert_close(f"{name} output vs torch under AMP", out, reference_out, BF16_TOL)
        grad_error = max(_assert_close(f"{name} {param} gradient vs torch under AMP", grads[param],
                                       reference_grads[param], AMP_GRAD_TOL)
                         for param in ("keys", "query_proj.weight", "values.weight"))
        figures.append(f"{name} {error:.1e} (gradients {grad_error:.1e})")
    amp_out, amp_slots, _, amp_grads = amp["reference"]
    per_head = (amp_slots.view(shape.tokens, shape.heads, shape.knn).sort(-1).values
                == fp32_slots.view(shape.tokens, shape.heads, shape.knn).sort(-1).values).all(-1)
    agreement = per_head.float().mean().item()
    assert agreement >= MIN_SLOT_AGREEMENT, (f"only {agreement:.1%} of (token, head) pairs read the fp32 slots "
                                             f"under AMP (at least {MIN_SLOT_AGREEMENT:.0%} expected)")
    at_out, at_grads = _fp32_at_slots(memory, x, amp_slots)
    fp32_error = _assert_close("AMP output vs fp32 at the AMP slots", amp_out, at_out, BF16_TOL)
    fp32_grad_error = max(_assert_close(f"AMP {param} gradient vs fp32 at the AMP slots", amp_grads[param],
                                        at_grads[param], AMP_GRAD_TOL)
                          for param in ("keys", "query_proj.weight", "values.weight"))
    return (f"{shape.tokens:,} tokens, every backend reads the same slots with the same weights; output vs torch "
            f"under AMP (tol {BF16_TOL:.0e}, gradients {AMP_GRAD_TOL:.0e}): {'; '.join(figures)}; "
            f"{agreement:.1%} of (token, head) pairs choose the fp32 slots (at least {MIN_SLOT_AGREEMENT:.0%}); "
            f"against the fp32 layer read at the AMP slots, all {shape.tokens:,} rows: output {fp32_error:.1e}, "
            f"gradients {fp32_grad_error:.1e}")


def _step_bits(memory: ProductKeyMemory, x: torch.Tensor, wrap: Optional[Callable] = None
               ) -> List[torch.Tensor]:
    """Output, slots and every gradient of one AMP step (``wrap(memory, x)`` instead of ``memory(x)``)."""
    memory.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_()
    with precision_context("amp_bf16", x.device):
        out = wrap(memory, x) if wrap is not None else memory(x)
        slots, _ = memory.lookup(x.detach())
    out.float().square().mean().backward()
    return [out.detach(), slots, x.grad] + [p.grad.detach().clone() for p in memory.parameters()]


def check_determinism(shape: Shape, device: torch.device) -> str:
    """The same AMP step twice gives the same bits, under ``torch.use_deterministic_algorithms(True)`` (every
    output and gradient, each path), and without it for the fused bag's value gradient (no atomics)."""
    torch.manual_seed(0)
    memory = ProductKeyMemory(shape.width, shape.width, shape.memory_config()).to(device)
    x = skewed_tokens(shape.tokens, shape.width, 1.0, device)
    same = []
    with deterministic_algorithms():
        for variant in ("fused", "dense", "auto"):
            _use_variant(memory, variant)
            first, second = _step_bits(memory, x), _step_bits(memory, x)
            differing = [i for i, (a, b) in enumerate(zip(first, second)) if not torch.equal(a, b)]
            assert not differing, f"{variant}: tensors {differing} of (output, slots, input grad, params) differ"
            same.append(variant)
    values, indices, weights = bag_inputs(shape, shape.slots, torch.float32, device)
    grad_out = torch.randn(shape.tokens, shape.v_dim, device=device)
    runs = [torch.autograd.grad(ops.embedding_bag_triton(values, indices, weights), (values,), grad_out)[0]
            for _ in range(2)]
    assert torch.equal(*runs), "the fused bag's value gradient differs between two runs"
    return (f"{shape.tokens:,} tokens: output, slots and every gradient bit-identical twice under deterministic "
            f"algorithms ({', '.join(same)}); the fused value gradient bit-identical without them")


def check_checkpointing(shape: Shape, device: torch.device) -> str:
    """One AMP step through ``torch.utils.checkpoint`` (non-reentrant, ``auto`` paths measured inside) gives the
    plain step's bits (under deterministic algorithms)."""
    torch.manual_seed(0)
    memory = ProductKeyMemory(shape.width, shape.width, shape.memory_config()).to(device)
    x = skewed_tokens(shape.tokens, shape.width, 1.0, device)
    ops.clear_path_caches()
    with deterministic_algorithms():
        checkpointed = _step_bits(_use_variant(memory, "auto"), x,
                                  lambda module, inputs: checkpoint(module, inputs, use_reentrant=False))
        plain = _step_bits(memory, x)
    differing = [i for i, (a, b) in enumerate(zip(checkpointed, plain)) if not torch.equal(a, b)]
    assert not differing, f"tensors {differing} of (output, slots, input grad, params) differ under checkpointing"
    paths = sorted({"fused" if p == "triton" else p for p in ops.bag_path_cache().values()})
    measured = f"bag path measured inside the checkpoint: {', '.join(paths)}" if paths else "torch backend"
    return (f"{shape.tokens:,} tokens, auto ({measured}): output and every gradient bit-identical to the plain "
            "step")


class SharedMemories(torch.nn.Module):
    """``SHARED_LAYERS`` memories reading one value table, applied residually: x -> x + memory_i(x)."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        config = shape.memory_config()
        self.table = ValueTable(config.n_slots, shape.v_dim)
        self.layers = torch.nn.ModuleList(ProductKeyMemory(shape.width, shape.width, config, values=self.table)
                                          for _ in range(SHARED_LAYERS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + layer(x)
        return x


def check_shared_table(shape: Shape, device: torch.device, plan: Plan) -> str:
    """Five layers sharing one table under AMP: one bf16 copy for all of them, the table's gradient (the sum over
    the layers) and the first layer's against the torch backend, and the times against five MLPs."""
    torch.manual_seed(0)
    model = SharedMemories(shape).to(device)
    x = skewed_tokens(shape.tokens, shape.width, 1.0, device)
    copies: List[int] = []
    read_copy = model.table.read_copy
    model.table.read_copy = lambda: copies.append(id(read_copy())) or read_copy()
    results, times = {}, {}
    try:
        for variant in MEMORY_VARIANTS:
            for layer in model.layers:
                _use_variant(layer, variant)
            copies.clear()

            def step() -> List[torch.Tensor]:
                model.zero_grad(set_to_none=True)
                with precision_context("amp_bf16", device):
                    out = model(x)
                out.float().square().mean().backward()
                return [out.detach(), model.table.weight.grad, model.layers[0].keys.grad]

            results[variant] = step()
            assert len(copies) == SHARED_LAYERS and len(set(copies)) == 1, f"{variant}: copies {copies}"
            if device.type == "cuda":  # the interpreter's times mean nothing
                times[variant] = time_ms(step, device, plan.warmup, plan.repeats)
    finally:
        del model.table.read_copy
    errors = {}
    for variant in MEMORY_VARIANTS[1:]:
        errors[variant] = max(_assert_close(f"{variant} {what}", got, want, AMP_GRAD_TOL if i else BF16_TOL)
                              for i, (what, got, want) in enumerate(zip(("output", "table gradient", "keys gradient"),
                                                                        results[variant], results["reference"])))
    mlps = torch.nn.Sequential(*[MLP(shape.width, shape.mlp_width) for _ in range(SHARED_LAYERS)]).to(device)

    def mlp_step() -> None:
        with precision_context("amp_bf16", device):
            out = mlps(x)
        out.float().square().mean().backward()

    detail = (f"{SHARED_LAYERS} layers, one {shape.slots:,} x {shape.v_dim} table, {shape.tokens:,} tokens: one "
              f"bf16 copy read by all; vs torch (output tol {BF16_TOL:.0e}, gradients {AMP_GRAD_TOL:.0e}): "
              + ", ".join(f"{v} {e:.1e}" for v, e in errors.items()))
    if times:
        detail += (f"; fwd+bwd ms: {SHARED_LAYERS} MLPs {time_ms(mlp_step, device, plan.warmup, plan.repeats):.2f}, "
                   + ", ".join(f"{v} {t:.2f}" for v, t in times.items()))
    return detail


def check_layer_speed(shape: Shape, device: torch.device, plan: Plan, report: Report) -> None:
    """Forward and forward+backward ms per backend and of the MLP under AMP; the goal line for ``auto``."""
    start = time.perf_counter()
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
                f"(fwd+bwd vs MLP): MLP {mlp_times[0]:.2f} / {mlp_times[1]:.2f} ms; " + "; ".join(rows),
                time.perf_counter() - start)
    status = "INFO" if device.type != "cuda" else ("PASS" if auto_ratio <= LAYER_GOAL else "FAIL")
    report.line(status, f"goal: auto fwd+bwd <= {LAYER_GOAL}x MLP", f"{auto_ratio:.2f}x")


def run_checks(plan: Plan, device: torch.device) -> Report:
    """Every check of ``plan`` on ``device``, one line each."""
    report = Report()
    for shape in plan.topk_shapes:
        report.run(f"top-k {shape.name}", lambda shape=shape: check_topk(shape, device, plan))
    for shape in plan.bag_shapes:
        for table_dtype in (torch.float32, torch.bfloat16):
            report.run(f"bag {shape.name} {_dtype_name(table_dtype)}",
                       lambda shape=shape, dtype=table_dtype: check_bag(shape, dtype, device, plan.sparse_from_slots))
    report.run(f"bag {plan.layer.name} fp32 table under amp_bf16", lambda: check_amp_table_backward(plan.layer,
                                                                                                   device))
    if device.type == "cuda":
        report.run("no host sync", lambda: check_no_host_sync(plan.small_layer, device))
    else:
        report.line("INFO", "no host sync", "needs CUDA (torch.cuda.set_sync_debug_mode)")
    bandwidth = copy_bandwidth(device, megabytes=0 if device.type == "cuda" else 16)
    report.line("INFO", "memory roofline", f"device-to-device copy {bandwidth / 1e9:.0f} GB/s (measured)")
    for table_dtype, precision in ((torch.bfloat16, "bf16"), (torch.float32, "amp_bf16")):
        name = f"crossover {_dtype_name(table_dtype)} table, {precision}"
        report.run(name, lambda dtype=table_dtype, precision=precision: check_crossover(plan, dtype, precision,
                                                                                         device, bandwidth))
    report.run(f"layer accuracy {plan.layer.name}, amp_bf16", lambda: check_layer_accuracy(plan.layer, device))
    report.run(f"determinism {plan.small_layer.name}", lambda: check_determinism(plan.small_layer, device))
    report.run(f"gradient checkpointing {plan.small_layer.name}", lambda: check_checkpointing(plan.small_layer,
                                                                                               device))
    report.run(f"{SHARED_LAYERS} layers sharing one table, {plan.layer.name}",
               lambda: check_shared_table(plan.layer, device, plan))
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
    # cuBLAS is deterministic only with a fixed workspace, set before it starts (the determinism checks need it)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
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
    print(report.table())
    verdict = "all checks passed" if report.failures == 0 else f"{report.failures} check(s) FAILED"
    print(f"{verdict} in {time.perf_counter() - start:.0f} s")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
