"""The Triton slot selection (run in the interpreter) against the torch and brute-force references."""
import logging

import pytest
import torch

pytest.importorskip("triton")
pytestmark = pytest.mark.usefixtures("triton_interpreter")

from memory_layers.ops import (  # noqa: E402
    half_scores,
    product_key_topk,
    product_key_topk_bruteforce,
    product_key_topk_torch,
    product_key_topk_triton,
    select_topk_torch,
    select_topk_triton,
    slot_scores,
    topk_path_cache,
)
from memory_layers.ops import dispatch  # noqa: E402


def full_scores(query, keys):
    """(T, H, N * N) scores of every slot, in float64."""
    halves = half_scores(query.double(), keys.double())
    return (halves[:, :, 0].unsqueeze(-1) + halves[:, :, 1].unsqueeze(-2)).flatten(-2)


def assert_exact_topk(scores, indices, query, keys, knn, atol=1e-5, rtol=1e-5):
    """Tie-proof check: right shapes/dtypes, sorted, distinct slots whose true scores are the returned ones and
    equal the brute-force top-knn scores."""
    tokens, heads = query.shape[:2]
    n_keys = keys.shape[2]
    assert scores.shape == indices.shape == (tokens, heads, knn)
    assert indices.dtype == torch.int64
    assert indices.min() >= 0 and indices.max() < n_keys * n_keys
    assert torch.all(scores[..., :-1] >= scores[..., 1:]), "scores must be sorted descending"
    distinct = indices.sort(dim=-1).values
    assert torch.all(distinct[..., 1:] > distinct[..., :-1]), "slots repeat within a (token, head)"
    full = full_scores(query, keys)
    torch.testing.assert_close(full.gather(-1, indices), scores.double(), atol=atol, rtol=rtol)
    torch.testing.assert_close(scores.double(), full.topk(knn, dim=-1).values, atol=atol, rtol=rtol)


@pytest.mark.parametrize(
    "n_keys, knn, heads, k_dim",
    [(8, 1, 1, 4), (8, 8, 2, 8), (13, 5, 2, 10), (20, 7, 1, 6), (16, 16, 1, 12)],
    ids=["knn1", "knn=N", "odd-N-odd-knn", "N20-knn7", "knn=N16"],
)
def test_topk_matches_torch_reference_and_bruteforce(n_keys, knn, heads, k_dim):
    tokens = 3
    query = torch.randn(tokens, heads, k_dim)
    keys = torch.randn(heads, 2, n_keys, k_dim // 2)
    scores, indices = product_key_topk_triton(query, keys, knn)
    assert scores.dtype == torch.float32
    assert_exact_topk(scores, indices, query, keys, knn)
    ref_scores, ref_indices = product_key_topk_torch(query, keys, knn)
    brute_scores, brute_indices = product_key_topk_bruteforce(query, keys, knn)
    # random data has no ties: the very same slots in the same order, and the very same fp32 sums
    assert torch.equal(indices, ref_indices)
    assert torch.equal(indices, brute_indices)
    assert torch.equal(scores, ref_scores) and torch.equal(scores, brute_scores)


def test_selection_kernel_equals_torch_selection_on_half_scores():
    """The kernel returns the fp32 sums the torch selection returns (and that gathering from the halves gives)."""
    halves = torch.randn(5, 3, 2, 24)
    scores, slots = select_topk_triton(halves, 9)
    want_scores, want_slots = select_topk_torch(halves, 9)
    assert scores.dtype == torch.float32 and torch.equal(slots, want_slots) and torch.equal(scores, want_scores)
    assert torch.equal(scores, slot_scores(halves, slots))
    unsorted_scores, unsorted_slots = select_topk_torch(halves, 9, sorted=False)
    assert torch.equal(unsorted_scores, slot_scores(halves, unsorted_slots))
    assert torch.equal(unsorted_slots.sort(-1).values, slots.sort(-1).values), "the same set, in any order"
    assert select_topk_triton(halves[:0], 9)[1].shape == (0, 3, 9)


def tied_inputs(tokens, heads, n_keys, k_dim):
    """Small-integer queries and sub-keys: exact integer half scores, so whole rows of slots tie in fp32."""
    generator = torch.Generator().manual_seed(3)
    query = torch.randint(-1, 2, (tokens, heads, k_dim), generator=generator).float()
    keys = torch.randint(-2, 3, (heads, 2, n_keys, k_dim // 2), generator=generator).float()
    return query, keys


@pytest.mark.parametrize("n_keys, knn", [(6, 5), (8, 8), (16, 7), (12, 1)])
def test_ties_are_broken_alike_by_every_backend(n_keys, knn):
    """Rows full of exact ties: the kernel, the torch selection and brute force return the very same slots in the
    same order (ties go to the better-ranked pair; halves tie to the lower sub-key id), and exact top scores."""
    query, keys = tied_inputs(8, 2, n_keys, 4)
    scores, slots = product_key_topk_triton(query, keys, knn)
    torch_scores, torch_slots = product_key_topk_torch(query, keys, knn)
    brute_scores, brute_slots = product_key_topk_bruteforce(query, keys, knn)
    assert_exact_topk(scores, slots, query, keys, knn)
    full = full_scores(query, keys).float()
    assert (full.topk(knn + 1, dim=-1).values[..., -2:].diff(dim=-1) == 0).any(), "the inputs must tie at the cut"
    assert torch.equal(slots, torch_slots) and torch.equal(slots, brute_slots)
    assert torch.equal(scores, torch_scores) and torch.equal(scores, brute_scores)
    unsorted = select_topk_torch(half_scores(query, keys), knn, sorted=False)[1]
    assert torch.equal(unsorted.sort(-1).values, slots.sort(-1).values), "unsorted: the same set"


def test_ties_between_equal_halves_go_to_the_lower_slot_id():
    """Every sub-key scores alike: each half ranks its sub-keys by id, so the slots come in slot-id order."""
    query = torch.zeros(1, 1, 4)
    keys = torch.randn(1, 2, 5, 2)
    for select in (product_key_topk_triton, product_key_topk_torch, product_key_topk_bruteforce):
        assert select(query, keys, 3)[1].tolist() == [[[0, 1, 2]]], select.__name__


def test_topk_backward_matches_reference_autograd():
    tokens, heads, n_keys, k_dim, knn = 3, 2, 10, 8, 4
    query = torch.randn(tokens, heads, k_dim, requires_grad=True)
    keys = torch.randn(heads, 2, n_keys, k_dim // 2, requires_grad=True)
    scores, indices = product_key_topk_triton(query, keys, knn)
    ref_scores, ref_indices = product_key_topk_torch(query, keys, knn)
    assert torch.equal(indices, ref_indices)
    assert not indices.requires_grad
    grad = torch.randn_like(scores)
    grads = torch.autograd.grad(scores, (query, keys), grad)
    ref_grads = torch.autograd.grad(ref_scores, (query, keys), grad)
    for got, want in zip(grads, ref_grads):
        assert got.abs().sum() > 0
        torch.testing.assert_close(got, want)


def test_topk_bf16_inputs_score_in_fp32_and_return_fp32_scores():
    tokens, heads, n_keys, k_dim, knn = 3, 2, 12, 8, 4
    query = torch.randn(tokens, heads, k_dim).bfloat16().requires_grad_()
    keys = torch.randn(heads, 2, n_keys, k_dim // 2)
    scores, indices = product_key_topk_triton(query, keys, knn)
    assert scores.dtype == product_key_topk_torch(query, keys, knn)[0].dtype == torch.float32
    ref_scores, ref_indices = product_key_topk_torch(query.detach().float(), keys, knn)
    assert torch.equal(indices, ref_indices)
    assert torch.equal(scores, ref_scores), "bf16 queries are widened exactly, then scored in fp32"
    (grad_query,) = torch.autograd.grad(scores.sum(), (query,))
    assert grad_query.dtype == torch.bfloat16
    keys_bf16 = keys.bfloat16()
    scores_bf16_keys, indices_bf16_keys = product_key_topk_triton(query.detach(), keys_bf16, knn)
    assert_exact_topk(scores_bf16_keys, indices_bf16_keys, query.detach().float(), keys_bf16.float(), knn)


def test_topk_rejects_float64_and_bad_shapes():
    with pytest.raises(TypeError, match="float64"):
        product_key_topk_triton(torch.randn(2, 1, 4, dtype=torch.float64), torch.randn(1, 2, 4, 2), 2)
    with pytest.raises(ValueError, match="knn=9"):
        product_key_topk_triton(torch.randn(2, 1, 4), torch.randn(1, 2, 8, 2), 9)


def test_dispatching_topk_on_the_triton_backend_uses_the_kernel(monkeypatch):
    from memory_layers.ops import triton_topk

    calls = []
    kernel = triton_topk.select_topk_triton
    monkeypatch.setattr(triton_topk, "select_topk_triton", lambda halves, knn: calls.append(knn) or kernel(halves,
                                                                                                             knn))
    query = torch.randn(2, 1, 6, requires_grad=True)
    keys = torch.randn(1, 2, 9, 3)
    scores, indices = product_key_topk(query, keys, 4, backend="triton")
    assert calls == [4]
    ref_scores, ref_indices = product_key_topk_torch(query, keys, 4)
    assert torch.equal(indices, ref_indices)
    torch.testing.assert_close(scores, ref_scores)


def test_auto_on_the_triton_backend_times_the_selection_once_per_key(monkeypatch, caplog):
    """`auto` with triton resolved (CUDA) races the two selections once per key, like the bag paths."""
    calls = []

    def fake_time(fn, halves, knn):
        calls.append(fn.__name__)
        return {"select_topk_triton": 2.0, "select_topk_torch": 1.0}[fn.__name__]

    monkeypatch.setattr(dispatch, "resolve_backend", lambda device, backend=None: "triton")
    monkeypatch.setattr(dispatch, "_time_select", fake_time)
    query, keys = torch.randn(5, 2, 8), torch.randn(2, 2, 6, 4)
    with caplog.at_level(logging.INFO, logger=dispatch.__name__):
        first = product_key_topk(query, keys, 3)  # 10 token-heads: bucket 16
        second = product_key_topk(query[:4], keys, 3)  # 8 token-heads: bucket 8
        product_key_topk(query[:3], keys, 3)  # 6 token-heads: bucket 8 again, cached
    assert sorted(calls) == ["select_topk_torch", "select_topk_torch", "select_topk_triton", "select_topk_triton"]
    assert topk_path_cache() == {("cpu", 6, 3, 16): "torch", ("cpu", 6, 3, 8): "torch"}
    assert len([r for r in caplog.records if "top-k selection" in r.getMessage()]) == 2
    for scores, slots in (first, second):
        assert torch.equal(slots, product_key_topk_torch(query[:slots.shape[0]], keys, 3)[1])
    # float64 half scores never go to the kernel
    calls.clear()
    product_key_topk(query.double(), keys.double(), 3)
    assert calls == []
