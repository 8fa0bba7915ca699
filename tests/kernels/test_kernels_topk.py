"""The fused Triton product-key top-k (run in the interpreter) against the torch and brute-force references."""
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
)
from memory_layers.ops.triton_topk import candidate_pairs, product_key_topk_backward  # noqa: E402


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


def test_candidate_pairs_are_exactly_the_rank_pairs_that_can_win():
    pair_a, pair_b = candidate_pairs(64)
    assert pair_a.numel() == 280
    pairs = set(zip(pair_a.tolist(), pair_b.tolist()))
    assert pairs == {(a, b) for a in range(64) for b in range(64) if (a + 1) * (b + 1) <= 64}
    assert candidate_pairs(1)[0].tolist() == [0] and candidate_pairs(1)[1].tolist() == [0]


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
    # random data has no ties: the very same slots in the same order
    assert torch.equal(indices, ref_indices)
    assert torch.equal(indices, brute_indices)
    torch.testing.assert_close(scores, ref_scores)
    torch.testing.assert_close(scores, brute_scores)


def test_topk_with_ties_returns_an_exact_top_set():
    """Duplicate sub-keys make many slots tie; any tie-break is fine as long as the set of scores is exact."""
    heads, n_keys, k_dim, knn = 1, 6, 4, 5
    keys = torch.randn(heads, 2, n_keys, k_dim // 2)
    keys[:, :, 3] = keys[:, :, 0]
    keys[:, 1, 5] = keys[:, 1, 2]
    query = torch.randn(2, heads, k_dim)
    scores, indices = product_key_topk_triton(query, keys, knn)
    assert_exact_topk(scores, indices, query, keys, knn)


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
    # only the query needs a gradient: keys untouched
    query_only = product_key_topk_triton(query, keys.detach(), knn)[0]
    (grad_query,) = torch.autograd.grad(query_only, (query,), grad)
    torch.testing.assert_close(grad_query, ref_grads[0])


class _ReferenceForwardTritonBackward(torch.autograd.Function):
    """The triton Function's backward formula behind the float64 torch forward, so gradcheck can test it."""

    @staticmethod
    def forward(ctx, query, keys, knn):
        scores, indices = product_key_topk_torch(query, keys, knn)
        ctx.save_for_backward(query, keys, indices)
        return scores

    @staticmethod
    def backward(ctx, grad_scores):
        query, keys, indices = ctx.saved_tensors
        grad_query, grad_keys = product_key_topk_backward(grad_scores.double(), indices, query, keys)
        return grad_query, grad_keys, None


def test_topk_backward_formula_gradcheck_float64():
    """The kernel computes in fp32, so gradcheck targets the backward formula with a float64 forward."""
    query = torch.randn(3, 2, 6, dtype=torch.float64, requires_grad=True)
    keys = torch.randn(2, 2, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, k: _ReferenceForwardTritonBackward.apply(q, k, 3), (query, keys))


def test_topk_bf16_query_computes_in_fp32_and_returns_query_dtype():
    tokens, heads, n_keys, k_dim, knn = 3, 2, 12, 8, 4
    query = torch.randn(tokens, heads, k_dim).bfloat16()
    keys = torch.randn(heads, 2, n_keys, k_dim // 2)
    scores, indices = product_key_topk_triton(query, keys, knn)
    assert scores.dtype == product_key_topk_torch(query, keys, knn)[0].dtype == torch.bfloat16
    ref_scores, ref_indices = product_key_topk_torch(query.float(), keys, knn)
    assert torch.equal(indices, ref_indices)
    torch.testing.assert_close(scores.float(), ref_scores, atol=2e-2, rtol=1e-2)
    # bf16 keys too
    keys_bf16 = keys.bfloat16()
    scores_bf16_keys, indices_bf16_keys = product_key_topk_triton(query, keys_bf16, knn)
    assert_exact_topk(scores_bf16_keys.float(), indices_bf16_keys, query, keys_bf16, knn, atol=3e-2, rtol=1e-2)


def test_topk_bf16_backward_returns_input_dtypes():
    query = torch.randn(2, 1, 8).bfloat16().requires_grad_()
    keys = torch.randn(1, 2, 8, 4, requires_grad=True)
    scores, _ = product_key_topk_triton(query, keys, 3)
    grad_query, grad_keys = torch.autograd.grad(scores.float().sum(), (query, keys))
    assert grad_query.dtype == torch.bfloat16 and grad_keys.dtype == torch.float32
    ref_scores, _ = product_key_topk_torch(query.float(), keys, 3)
    ref_query, ref_keys = torch.autograd.grad(ref_scores.sum(), (query, keys))
    torch.testing.assert_close(grad_query.float(), ref_query.float(), atol=2e-2, rtol=1e-2)
    torch.testing.assert_close(grad_keys, ref_keys, atol=2e-2, rtol=1e-2)


def test_topk_rejects_float64_and_bad_shapes():
    with pytest.raises(TypeError, match="float64"):
        product_key_topk_triton(torch.randn(2, 1, 4, dtype=torch.float64), torch.randn(1, 2, 4, 2), 2)
    with pytest.raises(ValueError, match="knn=9"):
        product_key_topk_triton(torch.randn(2, 1, 4), torch.randn(1, 2, 8, 2), 9)


def test_dispatching_topk_on_the_triton_backend_uses_the_kernel():
    query = torch.randn(2, 1, 6, requires_grad=True)
    keys = torch.randn(1, 2, 9, 3)
    scores, indices = product_key_topk(query, keys, 4, backend="triton")
    assert "ProductKeyTopk" in type(scores.grad_fn).__name__
    ref_scores, ref_indices = product_key_topk_torch(query, keys, 4)
    assert torch.equal(indices, ref_indices)
    torch.testing.assert_close(scores, ref_scores)
