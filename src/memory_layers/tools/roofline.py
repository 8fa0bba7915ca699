"""Bytes and FLOPs a read-out moves per token, and the memory bandwidth they are measured against.

The benchmark and the GPU check print, beside each read-out time, the bytes its kernels move per token (a model of
their loads and stores, from the shapes: :func:`readout_traffic`) and the fraction of the device's memory roofline
that reaches: bytes / time over the bandwidth of a large device-to-device copy measured on the spot
(:func:`copy_bandwidth`). The fused bag gathers rows scattered over the table, so it is bound by bytes; the dense
read-out is a GEMM, bound by FLOPs, and gets its TFLOP/s instead. A fraction above 1 means the gathers were served
by the L2 cache (a table of a few MB fits in an H100's 50 MB), not by HBM. The derivation is in docs/kernels.md.

Per token, with B = bag (heads * knn), V = v_dim, S = slots, T = tokens, r / g / m / c = bytes per element of the
table read, the output gradient, the master table and the dense path's compute dtype:

fused, forward:   B * (8 + 4) index and weight + B * V * r rows + V * r output
fused, backward:  weight gradient: B * 8 + B * V * r rows again + V * g + B * 4;
                  value gradient: sort and offsets about B * 40 + B * 4 weights + B * V * g gathered output-gradient
                  rows + 2 * S * V * m / T (zero fill and the rows written)
dense:            forward 2 * S * V FLOPs, backward 4 * S * V (the two GEMMs); bytes: the (T, S) matrix written and
                  read, about 2 * S * c forward and 6 * S * c backward, plus the table once per token chunk
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

INDEX_BYTES = 8
WEIGHT_BYTES = 4
SORT_BYTES_PER_ENTRY = 40  # a stable radix sort of int64 keys with their positions, and the searchsorted offsets


@dataclass(frozen=True)
class Traffic:
    """Bytes and FLOPs one token costs a read-out path (estimates from the shapes)."""

    bytes_per_token: float
    flops_per_token: float


def readout_traffic(path: str, slots: int, bag: int, v_dim: int, tokens: int, read_bytes: int, grad_bytes: int,
                    master_bytes: int, train: bool) -> Traffic:
    """The :class:`Traffic` of ``path`` (``fused`` or ``dense``; ``torch`` counts as ``fused``) for one token of a
    call of ``tokens`` tokens; ``train`` adds the backward."""
    if path == "dense":
        flops = 2.0 * slots * v_dim * (3 if train else 1)
        moved = slots * read_bytes * (8 if train else 2) + v_dim * (read_bytes + (2 * grad_bytes if train else 0))
        return Traffic(moved, flops)
    moved = bag * (INDEX_BYTES + WEIGHT_BYTES) + bag * v_dim * read_bytes + v_dim * read_bytes
    if train:
        moved += bag * INDEX_BYTES + bag * v_dim * read_bytes + v_dim * grad_bytes + bag * WEIGHT_BYTES
        moved += (bag * (SORT_BYTES_PER_ENTRY + WEIGHT_BYTES) + bag * v_dim * grad_bytes
                  + 2.0 * slots * v_dim * master_bytes / max(1, tokens))
    return Traffic(moved, 2.0 * bag * v_dim * (3 if train else 1))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(device: torch.device, megabytes: int = 0, repeats: int = 5) -> float:
    """Bytes per second of a device-to-device copy of a large buffer (read + write counted), the best of
    ``repeats``: the memory roofline the read-outs are measured against. ``megabytes`` 0: 1024 on CUDA, 256 on the
    CPU."""
    size = (megabytes or (1024 if device.type == "cuda" else 256)) << 20
    source = torch.empty(size // 4, dtype=torch.float32, device=device).fill_(1.0)
    target = torch.empty_like(source)
    target.copy_(source)
    best = float("inf")
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        target.copy_(source)
        _synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size / best


def roofline_text(traffic: Traffic, tokens: int, seconds: float, bandwidth: float, path: str) -> str:
    """``"1.23 MB/token, 812 GB/s, 0.27 of copy bandwidth"`` (fused) or ``"..., 412 TFLOP/s"`` (dense)."""
    total_bytes = traffic.bytes_per_token * tokens
    text = f"{traffic.bytes_per_token / 1e6:.2f} MB/token, {total_bytes / seconds / 1e9:.0f} GB/s"
    if path == "dense":
        return text + f", {traffic.flops_per_token * tokens / seconds / 1e12:.1f} TFLOP/s (GEMM-bound)"
    return text + f", {total_bytes / seconds / bandwidth:.2f} of copy bandwidth"
