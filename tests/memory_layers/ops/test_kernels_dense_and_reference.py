"""The dense bag path (plain torch) and float64 gradchecks of the torch reference ops."""
import pytest
import torch

from memory_layers.ops import (
    embedding_bag,
    embedding_bag_dense,
    embedding_bag_naive,
    embedding_bag_torch,
    half_scores,
    product_key_topk_torch,
)


def forward_backward(fn, values, indices, weights, grad_out):
    out = fn(values, indices, weights)
    return (out, *torch.autograd.grad(out, (values, weights), grad_out))


@pytest.mark.parametrize("chunk_elements", [1 << 24, 50], ids=["one-chunk", "token-chunks"])
def test_dense_forward_and_backward_match_naive(chunk_elements):
    values = torch.randn(24, 10, dtype=torch.float64, requires_grad=True)
    indices = torch.randint(0, 23, (7, 6))
    indices[2, :3] = 4  # repeated within a bag: the scattered weights must add up
    weights = torch.rand(7, 6, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(7, 10, dtype=torch.float64)
    dense = forward_backward(lambda v, i, w: embedding_bag_dense(v, i, w, chunk_elements=chunk_elements),
                             values, indices, weights, grad_out)
    naive = forward_backward(embedding_bag_naive, values, indices, weights, grad_out)
    for a, b in zip(dense, naive):
        torch.testing.assert_close(a, b)
    assert torch.all(dense[1][23] == 0)


def test_dense_bf16_and_empty():
    values = torch.randn(16, 24).bfloat16()
    indices = torch.randint(0, 16, (3, 5))
    weights = torch.rand(3, 5)
    out = embedding_bag_dense(values, indices, weights)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), embedding_bag_naive(values.float(), indices, weights), atol=3e-2, rtol=2e-2)
    assert embedding_bag_dense(values, indices[:0], weights[:0]).shape == (0, 24)


def test_dense_path_through_dispatch_on_torch_backend():
    values = torch.randn(12, 5, requires_grad=True)
    indices = torch.randint(0, 12, (4, 3))
    weights = torch.rand(4, 3)
    out = embedding_bag(values, indices, weights, backend="torch", path="dense")
    torch.testing.assert_close(out, embedding_bag_naive(values, indices, weights))
    (grad_values,) = torch.autograd.grad(out.sum(), (values,))
    torch.testing.assert_close(grad_values, torch.zeros(12).index_add_(0, indices.flatten(), weights.flatten())
                               .unsqueeze(1).expand(12, 5))


def test_reference_and_dense_gradcheck_float64():
    values = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    indices = torch.tensor([[0, 2, 2], [7, 0, 1]])
    weights = torch.rand(2, 3, dtype=torch.float64, requires_grad=True)
    for fn in (embedding_bag_torch, embedding_bag_naive, embedding_bag_dense):
        assert torch.autograd.gradcheck(lambda v, w: fn(v, indices, w), (values, weights)), fn.__name__


def test_product_key_topk_reference_gradcheck_float64():
    query = torch.randn(3, 2, 6, dtype=torch.float64, requires_grad=True)
    keys = torch.randn(2, 2, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, k: product_key_topk_torch(q, k, 3)[0], (query, keys))
    assert torch.autograd.gradcheck(half_scores, (query, keys))
