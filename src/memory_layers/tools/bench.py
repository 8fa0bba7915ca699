"""`python -m memory_layers.bench`: one memory layer's read-out paths against the MLP it replaces.

    python -m memory_layers.bench                                  # ViT-B-16-mem shapes; 50,432 tokens on a GPU
    python -m memory_layers.bench --config src/memclip/model_configs/ViT-Tiny-8-mem.json   # any model JSON
    python -m memory_layers.bench --memory n_keys=1024 --variants auto,fused,dense,mlp   # 1M slots
    python -m memory_layers.bench --width 1024 --mlp-width 4096 --memory knn=32 --json bench.json

For each path it prints forward ms, forward+backward ms and memory, with ratios against the torch reference and
against the dense MLP (``Linear(width, mlp_width) -> GELU -> Linear(mlp_width, width)``, as in open_clip's ViT):

- ``reference``: the torch backend (pruned top-k selection, torch's ``embedding_bag``);
- ``fused``: the Triton kernels (top-k selection kernel, fused embedding bag with a segment-reduced backward);
- ``dense``: the dense read-out (a (tokens x slots) matrix times the value table), after the Triton top-k on a GPU
  and the torch top-k on the CPU; skipped above ``DENSE_MAX_SLOTS`` slots, where it would not fit;
- ``auto``: what a model runs by default (backend and bag path ``auto``): the measured choices on a GPU, the torch
  backend on the CPU;
- ``mlp``: the block's MLP that the memory replaces.

Precision as in training: ``amp_bf16`` (the default on a GPU) keeps fp32 weights, so an fp32 value table, and runs
under bf16 autocast; ``bf16`` casts the layer itself; ``fp32`` is the CPU default. The input tokens are skewed
(``--skew``: a direction shared by every token, as trained models have hot slots) and the share of reads that
go to the hottest 1% of slots is printed.

A second table times the read-out alone (the embedding bag, forward+backward, on the slots and weights the
layer chooses for these tokens) on each path, with the bytes it moves per token (a model of its loads and stores,
:mod:`memory_layers.tools.roofline`), the rate that reaches and its fraction of the memory roofline: a device-to-device
copy measured on the spot. The dense path is a GEMM and gets its TFLOP/s too.

The paths are timed in turn within each round (interleaved), so the ratios hold up on a machine whose load
changes. Memory is the peak CUDA allocation above what the weights and the input already hold; on the CPU, where
torch keeps no allocator statistics, it is the size of the tensors autograd saves for the backward pass. The fused
Triton path needs CUDA (under ``TRITON_INTERPRET=1`` it runs on the CPU, far too slowly to time, so it is skipped
there).
The layer's shape comes from the arguments (``--width``, ``--mlp-width``, ``--memory KEY=VALUE``) over a model
JSON file (``--config``: ``vision_cfg.width``, ``vision_cfg.mlp_ratio`` and a ``memory`` block, as memclip's
``model_configs/*.json``), else over :data:`DEFAULT_SHAPE`, the thesis's ViT-B-16-mem layer. Each path's backend
is passed to the layer it builds; nothing imports open_clip or memclip.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..config import MemoryConfig
from ..memory import ProductKeyMemory
from ..ops import dispatch
from ..values import ValueTable
from .roofline import copy_bandwidth, readout_traffic

VARIANTS = ("reference", "fused", "dense", "auto", "mlp")
# variant -> (backend, bag path) of the memory layer it builds; mlp runs no memory op
VARIANT_BACKENDS: Dict[str, Tuple[str, str]] = {"reference": ("torch", "auto"), "fused": ("triton", "fused"),
                                                "dense": ("auto", "dense"), "auto": ("auto", "auto")}
PRECISIONS = ("fp32", "bf16", "amp_bf16")
GPU_TOKENS = 256 * 197  # the thesis's ViT-B-16 batch of 256 images: 50,432 tokens
CPU_TOKENS = 2048
DEFAULT_SKEW = 1.0
HOT_FRACTION = 0.01


@dataclass(frozen=True)
class LayerShape:
    """The shapes one memory block sees: the block width, the MLP's hidden width and the memory knobs."""

    name: str
    width: int
    mlp_width: int
    memory: MemoryConfig


@dataclass
class Measurement:
    """One path's figures; ``note`` says why a path was skipped (its figures are then None)."""

    variant: str
    forward_ms: Optional[float] = None
    train_ms: Optional[float] = None
    memory_mb: Optional[float] = None
    note: str = ""


@dataclass
class ReadoutMeasurement:
    """One path's read-out alone (the embedding bag, forward+backward) and what it moves per token."""

    variant: str
    train_ms: Optional[float] = None
    bytes_per_token: Optional[float] = None
    gb_per_s: Optional[float] = None
    roofline_fraction: Optional[float] = None
    tflops: Optional[float] = None
    note: str = ""


# read-out variant -> (backend, bag path) of the table read; "auto" is one of these, so it is not repeated
READOUT_BACKENDS: Dict[str, Tuple[str, str]] = {"reference": ("torch", "fused"), "fused": ("triton", "fused"),
                                                "dense": ("auto", "dense")}


DEFAULT_SHAPE = LayerShape("ViT-B-16-mem", 768, 3072, MemoryConfig(n_keys=64, heads=4, knn=64, k_dim=256, v_dim=1024))
"""The thesis's ViT-B/16 block (width 768, MLP 3,072) with its memory knobs: the shape when no --config is given."""


def shape_from_config(name: str, config: Mapping[str, Any]) -> LayerShape:
    """A :class:`LayerShape` from a model config dict: ``vision_cfg`` (``width``, ``mlp_ratio``) and ``memory``.

    Raises:
        ValueError: the config has no ``memory`` block.
    """
    if "memory" not in config:
        raise ValueError(f"--config {name!r}: the config has no 'memory' block")
    vision = config["vision_cfg"]
    width = int(vision["width"])
    return LayerShape(name, width, int(width * float(vision.get("mlp_ratio", 4.0))),
                      MemoryConfig.from_dict(config["memory"]))


def load_shape(path: Path) -> LayerShape:
    """A :class:`LayerShape` from a model JSON file (see :func:`shape_from_config`), named after the file.

    Raises:
        ValueError: the file does not exist, or the config has no ``memory`` block.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--config {str(path)!r}: no such model config file")
    return shape_from_config(path.stem, json.loads(path.read_text()))


class MLP(nn.Sequential):
    """The dense MLP of a ViT block: (T, width) -> (T, width)."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))


def precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for ``amp_bf16``, nothing otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "amp_bf16")


def skewed_tokens(tokens: int, width: int, skew: float, device: torch.device, seed: int = 0) -> torch.Tensor:
    """(tokens, width) fp32 inputs: standard normal noise plus ``skew`` times one direction shared by every token
    (of the same norm as the noise), so the queries lean one way and some slots are read far more than others."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(tokens, width, generator=generator)
    shared = torch.randn(width, generator=generator)
    return (noise + skew * shared).to(device)


def hot_slot_share(module: ProductKeyMemory, x: torch.Tensor, precision: str) -> float:
    """The share of the reads of ``x`` that go to the hottest :data:`HOT_FRACTION` of the memory's slots."""
    with torch.no_grad(), precision_context(precision, x.device):
        indices, _ = module.lookup(x.to(module.keys.dtype))
    counts = torch.bincount(indices.flatten(), minlength=module.config.n_slots).float()
    hot = max(1, int(HOT_FRACTION * counts.numel()))
    return (counts.topk(hot).values.sum() / counts.sum()).item()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _elapsed_ms(fn: Callable[[], None], device: torch.device) -> float:
    """Wall time of one call of ``fn`` in milliseconds (synchronised on CUDA)."""
    _synchronize(device)
    start = time.perf_counter()
    fn()
    _synchronize(device)
    return (time.perf_counter() - start) * 1e3


def _saved_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of the distinct tensors autograd saves for backward while ``fn`` runs (a CPU stand-in for peak)."""
    storages: Dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = fn()
    del out
    return sum(storages.values())


def _peak_bytes(fn: Callable[[], None], device: torch.device) -> int:
    """Peak CUDA bytes allocated by ``fn`` above what was allocated before it."""
    _synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    _synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


@dataclass
class _Case:
    """One variant under measurement: its module, timed calls and the times so far."""

    variant: str
    module: nn.Module
    calls: Dict[str, Callable[[], None]]
    times: Dict[str, List[float]]
    note: str = ""


def _case(variant: str, module: nn.Module, x: torch.Tensor, precision: str) -> _Case:
    """The forward (no grad) and forward+backward calls of ``module`` on ``x`` (T, width) at ``precision``."""
    device = x.device
    inputs = x.detach().requires_grad_(True)
    grad = torch.randn_like(x)

    def forward() -> None:
        with torch.no_grad(), precision_context(precision, device):
            module(x)

    def train() -> None:
        with precision_context(precision, device):
            out = module(inputs)
        out.backward(grad.to(out.dtype))
        module.zero_grad(set_to_none=True)
        inputs.grad = None

    return _Case(variant, module, {"forward": forward, "train": train}, {"forward": [], "train": []})


def _memory_mb(case: _Case, x: torch.Tensor, precision: str) -> float:
    """Peak CUDA MB of a forward+backward, or on the CPU the MB of the tensors saved for the backward."""
    inputs = x.detach().requires_grad_(True)
    with precision_context(precision, x.device):
        if x.device.type == "cuda":
            memory = _peak_bytes(case.calls["train"], x.device)
        else:
            memory = _saved_bytes(lambda: case.module(inputs))
    return memory / 2**20


def measure_interleaved(cases: Sequence[_Case], device: torch.device, warmup: int, repeats: int) -> None:
    """Time every case's forward, then its forward+backward: ``warmup`` untimed then ``repeats`` timed rounds, each
    round calling every case once in turn, so a change in the machine's load hits all of them alike. A case that
    runs out of CUDA memory gets a note and drops out."""
    for phase in ("forward", "train"):
        for step in range(warmup + repeats):
            for case in cases:
                if case.note:
                    continue
                try:
                    elapsed = _elapsed_ms(case.calls[phase], device)
                except torch.cuda.OutOfMemoryError:
                    case.note = "out of memory"
                    torch.cuda.empty_cache()
                    continue
                if step >= warmup:
                    case.times[phase].append(elapsed)


def skip_reason(variant: str, shape: LayerShape, device: torch.device) -> str:
    """Why ``variant`` cannot be timed here ("" when it can)."""
    if variant == "fused":
        if not dispatch.triton_available():
            return "triton is not installed (pip install memclip[kernels])"
        if device.type != "cuda":
            return "needs CUDA; the Triton interpreter is too slow to time"
    if variant == "dense" and shape.memory.n_slots > dispatch.DENSE_MAX_SLOTS:
        return (f"{shape.memory.n_slots:,} slots: the dense read-out is for tables of at most "
                f"{dispatch.DENSE_MAX_SLOTS:,} (auto never picks it above)")
    return ""


def build_module(variant: str, shape: LayerShape, device: torch.device, precision: str) -> nn.Module:
    """The MLP or a memory layer on ``device`` running the variant's backend and bag path; cast to bf16 for
    ``bf16``, fp32 weights otherwise."""
    if variant == "mlp":
        module: nn.Module = MLP(shape.width, shape.mlp_width)
    else:
        backend, bag_path = VARIANT_BACKENDS[variant]
        module = ProductKeyMemory(shape.width, shape.width, shape.memory, backend=backend, bag_path=bag_path)
    return module.to(device=device, dtype=torch.bfloat16 if precision == "bf16" else torch.float32)


def run(shape: LayerShape, tokens: int, device: torch.device, precision: str, variants: Sequence[str],
        warmup: int, repeats: int, seed: int = 0, skew: float = DEFAULT_SKEW) -> List[Measurement]:
    """Measure each variant on the same input (T, width), interleaved; skipped variants carry a note."""
    x = skewed_tokens(tokens, shape.width, skew, device, seed)
    if precision == "bf16":
        x = x.bfloat16()
    notes = {variant: skip_reason(variant, shape, device) for variant in variants}
    cases = []
    for variant in variants:
        if not notes[variant]:
            torch.manual_seed(seed)
            cases.append(_case(variant, build_module(variant, shape, device, precision), x, precision))
    measure_interleaved(cases, device, warmup, repeats)
    results = {variant: Measurement(variant, note=note) for variant, note in notes.items() if note}
    for case in cases:
        if case.note:
            results[case.variant] = Measurement(case.variant, note=case.note)
        else:
            results[case.variant] = Measurement(case.variant, statistics.median(case.times["forward"]),
                                                statistics.median(case.times["train"]),
                                                _memory_mb(case, x, precision))
    return [results[variant] for variant in variants]


def _readout_case(variant: str, table: ValueTable, indices: torch.Tensor, weights: torch.Tensor,
                  precision: str) -> _Case:
    """The read-out alone on the table: forward+backward of ``table(indices, weights)`` on the variant's path."""
    backend, path = READOUT_BACKENDS[variant]
    weights = weights.detach().requires_grad_(True)
    grad = torch.randn(indices.shape[0], table.v_dim, device=indices.device)

    def train() -> None:
        with precision_context(precision, indices.device):
            out = table(indices, weights, backend=backend, path=path)
        torch.autograd.grad(out, (table.weight, weights), grad.to(out.dtype))

    return _Case(variant, table, {"train": train}, {"train": []})


def run_readout(shape: LayerShape, tokens: int, device: torch.device, precision: str, variants: Sequence[str],
                warmup: int, repeats: int, bandwidth: float, seed: int = 0, skew: float = DEFAULT_SKEW
                ) -> List[ReadoutMeasurement]:
    """Time the read-out alone on each path (interleaved) on the slots the layer picks for the skewed tokens; the
    bytes per token, rate and roofline fraction beside each time."""
    torch.manual_seed(seed)
    layer = build_module("auto", shape, device, precision)
    with torch.no_grad(), precision_context(precision, device):
        indices, weights = layer.lookup(skewed_tokens(tokens, shape.width, skew, device, seed).to(layer.keys.dtype))
    table = layer.values
    variants = [v for v in variants if v in READOUT_BACKENDS]
    notes = {v: skip_reason(v, shape, device) for v in variants}
    cases = [_readout_case(v, table, indices, weights.float(), precision) for v in variants if not notes[v]]
    for step in range(warmup + repeats):
        for case in cases:
            elapsed = _elapsed_ms(case.calls["train"], device)
            if step >= warmup:
                case.times["train"].append(elapsed)
    read_bytes = 2 if precision != "fp32" else 4
    results = {v: ReadoutMeasurement(v, note=note) for v, note in notes.items() if note}
    for case in cases:
        ms = statistics.median(case.times["train"])
        path = "dense" if case.variant == "dense" else "fused"
        traffic = readout_traffic(path, shape.memory.n_slots, indices.shape[1], table.v_dim, tokens, read_bytes,
                                  read_bytes, table.weight.element_size(), train=True)
        rate = traffic.bytes_per_token * tokens / (ms / 1e3)
        tflops = traffic.flops_per_token * tokens / (ms / 1e3) / 1e12 if path == "dense" else None
        results[case.variant] = ReadoutMeasurement(case.variant, ms, traffic.bytes_per_token, rate / 1e9,
                                                   rate / bandwidth, tflops)
    return [results[v] for v in variants]


def format_readout_table(results: Sequence[ReadoutMeasurement]) -> str:
    """A markdown table of the read-out alone: ms, MB moved per token, GB/s, its fraction of the copy bandwidth, and
    for the dense path (a GEMM) TFLOP/s."""
    lines = ["| read-out alone | fwd+bwd ms | MB/token (model) | GB/s | of copy bandwidth | TFLOP/s |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        if r.note:
            lines.append(f"| {r.variant} | - | - | - | - | - |  ({r.note})")
            continue
        lines.append(f"| {r.variant} | {_number(r.train_ms)} | {_number(r.bytes_per_token / 1e6, 3)} | "
                     f"{_number(r.gb_per_s, 1)} | {_number(r.roofline_fraction, 3)} | {_number(r.tflops, 2)} |")
    return "\n".join(lines)


def _ratio(value: Optional[float], base: Optional[float]) -> str:
    return f"{value / base:.2f}x" if value is not None and base else "-"


def _number(value: Optional[float], digits: int = 2) -> str:
    return f"{value:.{digits}f}" if value is not None else "-"


def format_table(results: Sequence[Measurement], memory_label: str) -> str:
    """A markdown table, one row per path: its speed-up over the reference (reference time / its time), its time
    relative to the MLP (its time / MLP time) and its memory relative to the reference."""
    by_name = {r.variant: r for r in results}
    reference, mlp = by_name.get("reference"), by_name.get("mlp")
    header = (f"| path | fwd ms | fwd+bwd ms | {memory_label} MB | fwd+bwd speed-up vs reference | "
              f"fwd+bwd time vs MLP | memory vs reference |")
    lines = [header, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        if r.note:
            lines.append(f"| {r.variant} | - | - | - | - | - | - |  ({r.note})")
            continue
        lines.append(
            f"| {r.variant} | {_number(r.forward_ms)} | {_number(r.train_ms)} | {_number(r.memory_mb, 1)} | "
            f"{_ratio(reference.train_ms if reference else None, r.train_ms)} | "
            f"{_ratio(r.train_ms, mlp.train_ms if mlp else None)} | "
            f"{_ratio(r.memory_mb, reference.memory_mb if reference else None)} |")
    return "\n".join(lines)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m memory_layers.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="a model JSON with vision_cfg and a memory block (default: the "
                                                     f"{DEFAULT_SHAPE.name} layer)")
    parser.add_argument("--width", type=int, help="block width (tokens are (T, width))")
    parser.add_argument("--mlp-width", type=int, help="hidden width of the MLP the memory replaces")
    parser.add_argument("--tokens", type=int, help=f"tokens per call (default {GPU_TOKENS:,} on a GPU, "
                                                   f"{CPU_TOKENS:,} on the CPU)")
    parser.add_argument("--precision", choices=PRECISIONS, help="default amp_bf16 on a GPU, fp32 on the CPU")
    parser.add_argument("--memory", action="append", default=[], metavar="KEY=VALUE",
                        help="override a memory knob of the config, e.g. --memory n_keys=1024 (repeatable)")
    parser.add_argument("--skew", type=float, default=DEFAULT_SKEW,
                        help="weight of the direction every input token shares (0: isotropic noise)")
    parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {VARIANTS}")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    return parser


def parse_memory_overrides(items: Sequence[str]) -> Dict[str, object]:
    """``["n_keys=1024", "layers=2,3"]`` -> ``{"n_keys": 1024, "layers": (2, 3)}``, each by
    :meth:`MemoryConfig.parse_override` (the trainer's ``--memory`` grammar).

    Raises:
        ValueError: a malformed item, quoted after ``--memory``.
    """
    overrides: Dict[str, object] = {}
    for item in items:
        try:
            key, value = MemoryConfig.parse_override(item)
        except ValueError as error:
            raise ValueError(f"--memory {error}") from None
        overrides[key] = value
    return overrides


def shape_from_arguments(args: argparse.Namespace) -> LayerShape:
    """The --config file's shape (or :data:`DEFAULT_SHAPE`) with --width, --mlp-width and --memory applied.

    Raises:
        ValueError: a missing or memory-less config, a bad KEY=VALUE, an unknown memory knob, a bad width.
    """
    shape = load_shape(args.config) if args.config is not None else DEFAULT_SHAPE
    memory = MemoryConfig.with_overrides(shape.memory, parse_memory_overrides(args.memory))
    width = args.width if args.width is not None else shape.width
    mlp_width = args.mlp_width if args.mlp_width is not None else shape.mlp_width
    if width < 1 or mlp_width < 1:
        raise ValueError(f"--width {width} --mlp-width {mlp_width}: both must be >= 1")
    return replace(shape, width=width, mlp_width=mlp_width, memory=memory)


def load_average() -> str:
    """The 1-minute load average and the core count, e.g. ``load 1.32 on 2 cores``."""
    try:
        load = f"{os.getloadavg()[0]:.2f}"
    except OSError:
        load = "unknown"
    return f"load {load} on {os.cpu_count()} cores"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available on this machine")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        parser.error(f"--variants {args.variants!r}: choose from {VARIANTS}")
    if args.warmup < 0 or args.repeats < 1:
        parser.error("--warmup must be >= 0 and --repeats >= 1")
    try:
        shape = shape_from_arguments(args)
    except ValueError as error:
        parser.error(str(error))
    tokens = args.tokens or (GPU_TOKENS if device.type == "cuda" else CPU_TOKENS)
    if tokens < 1:
        parser.error(f"--tokens {tokens}: must be >= 1")
    precision = args.precision or ("amp_bf16" if device.type == "cuda" else "fp32")
    memory = shape.memory
    print(f"{shape.name}: width {shape.width}, MLP {shape.width}->{shape.mlp_width}->{shape.width}; memory "
          f"n_keys {memory.n_keys} ({memory.n_slots:,} slots), heads {memory.heads}, knn {memory.knn}, "
          f"k_dim {memory.k_dim}, v_dim {memory.value_dim(shape.width)}")
    torch.manual_seed(args.seed)
    hot = hot_slot_share(build_module("auto", shape, device, precision),
                         skewed_tokens(min(tokens, CPU_TOKENS), shape.width, args.skew, device, args.seed), precision)
    print(f"{tokens:,} tokens, {precision}, {device_name(device)}, torch {torch.__version__}, median of "
          f"{args.repeats} after {args.warmup} warm-up calls; skew {args.skew:g}: the hottest "
          f"{HOT_FRACTION:.0%} of slots take {hot:.1%} of the reads; {load_average()}")
    results = run(shape, tokens, device, precision, variants, args.warmup, args.repeats, args.seed, args.skew)
    memory_label = "peak" if device.type == "cuda" else "saved-for-backward"
    print(format_table(results, memory_label))
    bandwidth = copy_bandwidth(device)
    readout = run_readout(shape, tokens, device, precision, variants, args.warmup, args.repeats, bandwidth,
                          args.seed, args.skew)
    if readout:
        print(f"memory roofline: a device-to-device copy moves {bandwidth / 1e9:.1f} GB/s here (measured); a "
              "fraction above 1 means the cache served the gathers")
        print(format_readout_table(readout))
    if args.json:
        args.json.write_text(json.dumps({"config": shape.name, "tokens": tokens, "precision": precision,
                                         "skew": args.skew, "hot_slot_share": hot, "device": device_name(device),
                                         "memory": memory_label, "n_slots": memory.n_slots,
                                         "results": [asdict(r) for r in results], "copy_bandwidth": bandwidth,
                                         "readout": [asdict(r) for r in readout]}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
