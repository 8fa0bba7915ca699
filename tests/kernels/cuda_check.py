"""CUDA checks of the compiled Triton kernels against the torch references; exits non-zero on the first failure.

Run by ``test_kernels_cuda.py`` in a fresh process without ``TRITON_INTERPRET`` (the pytest process has it set,
which would run the kernels in the interpreter). Also runnable by hand:

    python tests/kernels/cuda_check.py                 # on CUDA, compiled kernels
    TRITON_INTERPRET=1 python tests/kernels/cuda_check.py --device cpu --quick   # smoke run of this script
"""
from __future__ import annotations

import argparse
import logging
import os
import time

import torch

from memory_layers import MemoryConfig, ProductKeyMemory, ops
from memory_layers.ops import dispatch

logger = logging.getLogger("cuda_check")


def check_topk(device: str, n_keys: int, knn: int, heads: int, k_dim: int, tokens: int, dtype: torch.dtype) -> None:
    query = torch.randn(tokens, heads, k_dim, device=device).to(dtype).requires_grad_()
    keys = torch.randn(heads, 2, n_keys, k_dim // 2, device=device, requires_grad=True)
    scores, indices = ops.product_key_topk_triton(query, keys, knn)
    assert scores.dtype == dtype and indices.dtype == torch.int64 and scores.shape == (tokens, heads, knn)
    assert torch.all(scores[..., :-1] >= scores[..., 1:])
    distinct = indices.sort(dim=-1).values
    assert torch.all(distinct[..., 1:] > distinct[..., :-1])
    halves = ops.half_scores(query.detach().double(), keys.detach().double())
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    true = halves[:, :, 0].gather(-1, indices // n_keys) + halves[:, :, 1].gather(-1, indices % n_keys)
    torch.testing.assert_close(true, scores.double(), atol=tol * 10, rtol=tol)
    ref_scores, ref_indices = ops.product_key_topk_torch(query.float(), keys, knn)
    torch.testing.assert_close(scores.float(), ref_scores.detach(), atol=tol * 10, rtol=tol)
    if dtype == torch.float32:
        # rows whose slots differ (near-ties summed in another order) get no gradient in the comparison
        same = (indices == ref_indices).all(dim=-1, keepdim=True)
        assert same.float().mean() > 0.9
        grad = torch.randn_like(ref_scores) * same
        got = torch.autograd.grad(scores, (query, keys), grad)
        want = torch.autograd.grad(ref_scores, (query, keys), grad)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    logger.info("topk ok: N=%d knn=%d H=%d K=%d T=%d %s", n_keys, knn, heads, k_dim, tokens, dtype)


def check_bag(device: str, slots: int, v_dim: int, tokens: int, bag: int, dtype: torch.dtype) -> None:
    values = torch.randn(slots, v_dim, device=device).to(dtype).requires_grad_()
    indices = torch.randint(0, slots - 1, (tokens, bag), device=device)
    indices[:, :4] = 7  # a hot row
    weights = torch.rand(tokens, bag, device=device, requires_grad=True)
    grad_out = torch.randn(tokens, v_dim, device=device).to(dtype)
    values32 = values.detach().float().requires_grad_()
    ref = ops.embedding_bag_naive(values32, indices, weights)
    ref_grads = torch.autograd.grad(ref, (values32, weights), grad_out.float())
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    for name, fn in (("fused", ops.embedding_bag_triton), ("dense", ops.embedding_bag_dense)):
        out = fn(values, indices, weights)
        grads = torch.autograd.grad(out, (values, weights), grad_out)
        assert out.dtype == dtype and grads[0].dtype == dtype and grads[1].dtype == torch.float32
        torch.testing.assert_close(out.float(), ref, atol=tol, rtol=tol)
        torch.testing.assert_close(grads[0].float(), ref_grads[0], atol=tol, rtol=tol)
        torch.testing.assert_close(grads[1], ref_grads[1], atol=tol * 10, rtol=tol)
        assert torch.all(grads[0][slots - 1] == 0)
    logger.info("bag ok: S=%d V=%d T=%d B=%d %s", slots, v_dim, tokens, bag, dtype)


def check_memory_layer(device: str) -> None:
    config = MemoryConfig(n_keys=32, heads=4, knn=16, k_dim=64, v_dim=96, swilu=True)
    memory = ProductKeyMemory(64, 64, config).to(device)
    x = torch.randn(2, 50, 64, device=device)
    results = {}
    for backend in ("torch", "triton"):
        memory.zero_grad()
        os.environ[dispatch.BACKEND_ENV] = backend  # the layer dispatches through the environment
        try:
            y = memory(x)
            y.square().mean().backward()
        finally:
            del os.environ[dispatch.BACKEND_ENV]
        results[backend] = (y.detach(), {n: p.grad.clone() for n, p in memory.named_parameters()})
    torch.testing.assert_close(results["triton"][0], results["torch"][0], atol=1e-4, rtol=1e-4)
    for name, grad in results["triton"][1].items():
        torch.testing.assert_close(grad, results["torch"][1][name], atol=1e-4, rtol=1e-3, msg=name)
    assert ops.resolve_backend(device) == ("triton" if device == "cuda" else "torch")
    logger.info("memory layer ok: triton backend equals torch backend")


def check_auto_bag_path(device: str) -> None:
    ops.clear_path_caches()
    values = torch.randn(4096, 64, device=device, requires_grad=True)
    indices = torch.randint(0, 4096, (256, 32), device=device)
    weights = torch.rand(256, 32, device=device)
    out = ops.embedding_bag(values, indices, weights, backend="triton")
    (choice,) = ops.bag_path_cache().values()
    torch.testing.assert_close(out, ops.embedding_bag_naive(values, indices, weights), atol=1e-4, rtol=1e-4)
    logger.info("auto bag path on S=4096: %s", choice)


def _ms(fn, iterations: int = 10) -> float:
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iterations):
        fn()
    torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - start) / iterations


def report_timings() -> None:
    """Informational forward+backward timings at ViT-B-16-like shapes (not asserted)."""
    query = torch.randn(8192, 4, 256, device="cuda", requires_grad=True)
    keys = torch.randn(4, 2, 256, 128, device="cuda", requires_grad=True)
    for name, fn in (("torch", ops.product_key_topk_torch), ("triton", ops.product_key_topk_triton)):
        ms = _ms(lambda: fn(query, keys, 32)[0].sum().backward())
        logger.info("topk fwd+bwd T=8192 H=4 N=256 knn=32 K=256, %s: %.2f ms", name, ms)
    values = torch.randn(65536, 1024, device="cuda", requires_grad=True)
    indices = torch.randint(0, 65536, (8192, 128), device="cuda")
    weights = torch.rand(8192, 128, device="cuda", requires_grad=True)
    for name, fn in (("torch", ops.embedding_bag_torch), ("triton", ops.embedding_bag_triton)):
        ms = _ms(lambda: fn(values, indices, weights).sum().backward())
        logger.info("bag fwd+bwd S=65536 V=1024 T=8192 B=128, %s: %.2f ms", name, ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny shapes only (for the interpreter)")
    parser.add_argument("--timings", action="store_true", help="also log fwd+bwd timings (CUDA)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(0)
    device = args.device
    if device == "cuda":
        assert torch.cuda.is_available(), "no CUDA device"
    topk_cases = [(16, 1, 1, 8, 3), (13, 5, 2, 10, 3)]
    bag_cases = [(64, 10, 3, 8), (40, 24, 2, 6)]
    if not args.quick:
        topk_cases += [(64, 64, 4, 64, 64), (256, 32, 4, 256, 128), (1024, 32, 2, 128, 16), (100, 17, 3, 30, 64)]
        bag_cases += [(4096, 1280, 64, 128), (65536, 1024, 64, 64), (1000, 768, 33, 17)]
    for n_keys, knn, heads, k_dim, tokens in topk_cases:
        for dtype in (torch.float32, torch.bfloat16):
            check_topk(device, n_keys, knn, heads, k_dim, tokens, dtype)
    for slots, v_dim, tokens, bag in bag_cases:
        for dtype in (torch.float32, torch.bfloat16):
            check_bag(device, slots, v_dim, tokens, bag, dtype)
    if not args.quick:
        check_memory_layer(device)
        check_auto_bag_path(device)
    if args.timings and device == "cuda":
        report_timings()
    print("cuda checks passed")


if __name__ == "__main__":
    main()
