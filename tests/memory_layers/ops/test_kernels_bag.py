"""The fused Triton embedding bag (run in the interpreter) against the naive gather-then-sum reference."""
import pytest
import torch

pytest.importorskip("triton")
pytestmark = pytest.mark.usefixtures("triton_interpreter")

from memory_layers.ops import embedding_bag, embedding_bag_naive, embedding_bag_triton  # noqa: E402
from memory_layers.ops.triton_bag import sorted_segments  # noqa: E402


def bag_inputs(slots, v_dim, tokens, bag, dtype=torch.float32, weights_dtype=torch.float32):
    """Random table and bags that repeat a slot within a bag and across tokens, and never read the last slot."""
    values = torch.randn(slots, v_dim, dtype=dtype, requires_grad=True)
    indices = torch.randint(0, slots - 1, (tokens, bag))
    indices[0, :2] = 3
    indices[-1, -1] = 3
    weights = torch.rand(tokens, bag, dtype=weights_dtype, requires_grad=True)
    return values, indices, weights


def forward_backward(fn, values, indices, weights, grad_out):
    out = fn(values, indices, weights)
    grad_values, grad_weights = torch.autograd.grad(out, (values, weights), grad_out)
    return out, grad_values, grad_weights


@pytest.mark.parametrize(
    "slots, v_dim, tokens, bag",
    [(64, 10, 5, 12), (40, 24, 3, 5), (30, 1280, 2, 6), (20, 1024, 2, 3), (16, 130, 2, 40)],
    ids=["V10", "V24", "V1280", "V1024", "B40-V130"],
)
def test_bag_forward_and_backward_match_naive(slots, v_dim, tokens, bag):
    values, indices, weights = bag_inputs(slots, v_dim, tokens, bag)
    grad_out = torch.randn(tokens, v_dim)
    out, grad_values, grad_weights = forward_backward(embedding_bag_triton, values, indices, weights, grad_out)
    ref_out, ref_values, ref_weights = forward_backward(embedding_bag_naive, values, indices, weights, grad_out)
    assert out.shape == (tokens, v_dim) and out.dtype == torch.float32
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(grad_values, ref_values)
    torch.testing.assert_close(grad_weights, ref_weights, atol=1e-4, rtol=1e-5)
    assert torch.all(grad_values[slots - 1] == 0), "a row never read must get an exact zero gradient"
    assert grad_values[3].abs().sum() > 0


def test_hot_row_spanning_several_segment_chunks():
    """One slot read 3 * 40 = 120 times: its segment spans several BLOCK_E chunks of the grad_values kernel."""
    values = torch.randn(8, 6, dtype=torch.float64, requires_grad=True)
    indices = torch.full((3, 40), 5)
    indices[:, ::7] = 2
    weights = torch.rand(3, 40, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(3, 6, dtype=torch.float64)
    got = forward_backward(embedding_bag_triton, values, indices, weights, grad_out)
    want = forward_backward(embedding_bag_naive, values, indices, weights, grad_out)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    assert torch.all(got[1][[0, 1, 3, 4, 6, 7]] == 0)


def test_sorted_segments_layout():
    indices = torch.tensor([[2, 0, 2], [5, 2, 0]])
    order, offsets = sorted_segments(indices, 6)
    assert offsets.tolist() == [0, 2, 2, 5, 5, 5, 6]
    flat = indices.flatten()
    assert flat[order].tolist() == [0, 0, 2, 2, 2, 5]
    assert order[2:5].tolist() == [0, 2, 4], "stable: equal slots keep entry order"


def test_bf16_table_with_fp32_weights_against_fp32_reference():
    values, indices, weights = bag_inputs(48, 24, 4, 8, dtype=torch.bfloat16)
    grad_out = torch.randn(4, 24).bfloat16()
    out, grad_values, grad_weights = forward_backward(embedding_bag_triton, values, indices, weights, grad_out)
    assert out.dtype == grad_values.dtype == torch.bfloat16 and grad_weights.dtype == torch.float32
    values32 = values.detach().float().requires_grad_()
    ref_out, ref_values, ref_weights = forward_backward(embedding_bag_naive, values32, indices, weights,
                                                        grad_out.float())
    torch.testing.assert_close(out.float(), ref_out, atol=2e-2, rtol=1e-2)
    torch.testing.assert_close(grad_values.float(), ref_values, atol=2e-2, rtol=1e-2)
    torch.testing.assert_close(grad_weights, ref_weights, atol=1e-3, rtol=1e-3)


def test_bag_gradcheck_float64():
    values = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    indices = torch.tensor([[0, 2, 2], [5, 0, 1]])
    weights = torch.rand(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, w: embedding_bag_triton(v, indices, w), (values, weights),
                                    fast_mode=True)


def test_bag_edge_cases_and_errors():
    values = torch.randn(10, 7)
    empty = embedding_bag_triton(values, torch.zeros(0, 4, dtype=torch.int64), torch.zeros(0, 4))
    assert empty.shape == (0, 7)
    indices32 = torch.tensor([[1, 9], [0, 0]], dtype=torch.int32)
    weights = torch.rand(2, 2)
    torch.testing.assert_close(embedding_bag_triton(values, indices32, weights),
                               embedding_bag_naive(values, indices32.long(), weights))
    strided = torch.randn(7, 10).t()  # non-contiguous table
    torch.testing.assert_close(embedding_bag_triton(strided, indices32.long(), weights),
                               embedding_bag_naive(strided, indices32.long(), weights))
    with pytest.raises(ValueError, match="indices and weights"):
        embedding_bag_triton(values, indices32.long(), torch.rand(2, 3))
    with pytest.raises(TypeError, match="indices"):
        embedding_bag_triton(values, indices32.float(), weights)


def test_dispatching_fused_path_uses_the_kernel():
    values, indices, weights = bag_inputs(32, 10, 3, 4)
    out = embedding_bag(values, indices, weights, backend="triton", path="fused")
    assert "EmbeddingBag" in type(out.grad_fn).__name__
    torch.testing.assert_close(out, embedding_bag_naive(values, indices, weights))
