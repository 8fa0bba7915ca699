"""The read-out's cost (issue 29, item 2): the bf16 copy under autocast, bf16 output gradients, hot segments split
over several programs, the dense path in the compute dtype, and the timing-free path rule."""
import pytest
import torch

from memory_layers import MemoryConfig, ProductKeyMemory, ValueTable
from memory_layers import ops
from memory_layers.ops import dense_bag, dispatch

pytest.importorskip("triton")

AMP = {"device_type": "cpu", "dtype": torch.bfloat16}


def bag_inputs(slots=24, v_dim=20, tokens=6, bag=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    table = ValueTable(slots, v_dim)
    indices = torch.randint(0, slots, (tokens, bag), generator=generator)
    indices[:, 0] = 3  # a hot slot
    weights = torch.rand(tokens, bag, generator=generator).requires_grad_()
    return table, indices, weights


def reference_grads(table, indices, weights, grad_out):
    """fp32 reference on the bf16-rounded table, with the same (bf16) output gradient: the roundings the paths make."""
    values = table.weight.detach().bfloat16().float().requires_grad_()
    out = ops.embedding_bag_naive(values, indices, weights)
    return (out, *torch.autograd.grad(out, (values, weights), grad_out.float()))


@pytest.mark.parametrize("path", ["fused", "dense", "torch"])
def test_autocast_reads_a_bf16_copy_and_the_fp32_table_gets_its_gradient(triton_interpreter, path):
    table, indices, weights = bag_inputs()
    backend = "torch" if path == "torch" else "triton"
    with torch.autocast(**AMP):
        out = table(indices, weights, backend=backend, path="fused" if path == "torch" else path)
    assert out.dtype == torch.bfloat16, "every path returns the read copy's dtype under autocast"
    grad_out = torch.randn(out.shape).bfloat16()
    out.backward(grad_out)
    assert table.weight.grad.dtype == torch.float32
    want_out, want_values, want_weights = reference_grads(table, indices, weights, grad_out)
    torch.testing.assert_close(out.float(), want_out, atol=1e-2, rtol=1e-2)
    if path == "fused":  # fp32 accumulation of the bf16 gradient: tight
        torch.testing.assert_close(table.weight.grad, want_values, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(weights.grad, want_weights, atol=1e-6, rtol=1e-5)
    else:  # autocast's GEMM precision (dense), or the fp32 table read whole (torch)
        torch.testing.assert_close(table.weight.grad, want_values, atol=2e-2, rtol=2e-2)


def test_the_copy_is_made_once_per_weight_version_and_shared_by_the_layers(triton_interpreter, monkeypatch):
    table = ValueTable(16, 8)
    config = MemoryConfig(n_keys=4, heads=2, knn=3, k_dim=8, v_dim=8)
    layers = [ProductKeyMemory(8, 8, config, values=table, backend="triton", bag_path="fused") for _ in range(2)]
    casts = []
    to = torch.Tensor.to

    def counting_to(tensor, *args, **kwargs):
        if tensor.shape == table.weight.shape and torch.bfloat16 in args:
            casts.append(1)
        return to(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", counting_to)
    x = torch.randn(5, 8)
    with torch.autocast(**AMP):
        layers[1](layers[0](x)).float().sum().backward()
        first = table.read_copy()
        layers[0](x)
    assert len(casts) == 1, "two layers and two forwards share one copy"
    torch.optim.SGD(table.parameters(), lr=0.1).step()
    with torch.autocast(**AMP):
        second = table.read_copy()
    assert len(casts) == 2 and not torch.equal(first, second), "an optimizer step makes a new copy"
    assert table.read_copy() is None, "no copy outside autocast"
    torch.testing.assert_close(second, table.weight.detach().bfloat16(), rtol=0, atol=0)


def test_the_fused_backward_keeps_a_bf16_output_gradient(triton_interpreter, monkeypatch):
    from memory_layers.ops import triton_bag

    seen = []
    grad_values = triton_bag._bag_grad_values
    monkeypatch.setattr(triton_bag, "_bag_grad_values",
                        lambda n, dtype, i, w, grad, *a: seen.append(grad.dtype) or grad_values(n, dtype, i, w, grad))
    table, indices, weights = bag_inputs()
    with torch.autocast(**AMP):
        out = table(indices, weights, backend="triton", path="fused")
    out.float().sum().backward()
    assert seen == [torch.bfloat16], "grad_out is read as it arrives, not widened to an fp32 copy"


def test_a_hot_segment_is_split_over_several_programs_and_summed_in_a_fixed_order(triton_interpreter):
    from memory_layers.ops import triton_bag

    indices = torch.full((5, 9), 2)
    indices[:, ::4] = 7
    indices[0, 1] = 0
    order, offsets = triton_bag.sorted_segments(indices, 10)
    layout = triton_bag.chunk_layout(offsets, indices.numel(), chunk=4)
    counts = torch.bincount(indices.flatten(), minlength=10)
    assert counts[2].item() == 29 and counts[7].item() == 15
    real = layout.end > layout.start
    lengths = (layout.end - layout.start)[real]
    assert lengths.max().item() <= 4 and lengths.sum().item() == indices.numel()
    assert real.sum().item() == 1 + 8 + 4, "slot 0: one chunk; slot 2: eight; slot 7: four"
    assert sorted(layout.multi_slot[layout.multi_slot >= 0].tolist()) == [2, 7]
    assert (layout.row[real] >= 0).sum().item() == 1 and (layout.partial[real] >= 0).sum().item() == 12
    weights = torch.rand(5, 9, dtype=torch.float64)
    grad_out = torch.randn(5, 6, dtype=torch.float64)
    want = torch.zeros(10, 6, dtype=torch.float64).index_add_(
        0, indices.flatten(), weights.flatten()[:, None] * grad_out.repeat_interleave(9, 0))
    results = [triton_bag._bag_grad_values(10, torch.float64, indices, weights, grad_out, chunk=chunk)
               for chunk in (1, 3, 4, 64)]
    for got in results:
        torch.testing.assert_close(got, want)
    again = triton_bag._bag_grad_values(10, torch.float64, indices, weights, grad_out, chunk=3)
    assert torch.equal(again, results[1]), "a fixed order: the same bits on every run"


def test_the_dense_path_builds_its_matrix_in_the_compute_dtype_and_returns_the_tables(monkeypatch):
    built = []
    scatter = dense_bag._scatter
    monkeypatch.setattr(dense_bag, "_scatter", lambda i, w, s, dtype: built.append(dtype) or scatter(i, w, s, dtype))
    values = torch.randn(16, 8, requires_grad=True)
    indices = torch.randint(0, 16, (4, 3))
    weights = torch.rand(4, 3, requires_grad=True)
    with torch.autocast(**AMP):
        out = ops.embedding_bag_dense(values, indices, weights)
    assert built == [torch.bfloat16], "the (tokens x slots) matrix is built in the autocast dtype"
    assert out.dtype == torch.float32, "the dense path returns the table's dtype, as the fused one does"
    out.sum().backward()
    assert values.grad.dtype == torch.float32 and weights.grad.dtype == torch.float32
    torch.testing.assert_close(out, ops.embedding_bag_naive(values, indices, weights), atol=3e-2, rtol=2e-2)


def test_the_dense_path_saves_no_tokens_by_slots_matrix():
    values = torch.randn(64, 4, requires_grad=True)
    indices = torch.randint(0, 64, (32, 2))
    weights = torch.rand(32, 2, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        ops.embedding_bag_dense(values, indices, weights)
    assert max(saved) < 32 * 64, f"saved tensors of {saved} elements: the backward rebuilds the dense matrix"


def test_the_path_rule_needs_no_timing():
    bf16, fp32 = torch.bfloat16, torch.float32
    assert dispatch.rule_bag_path(4096, 256, 50432, bf16) == "dense", "ViT-B-16-mem under AMP"
    assert dispatch.rule_bag_path(65536, 256, 50432, bf16) == "triton", "past DENSE_MAX_SLOTS"
    assert dispatch.rule_bag_path(4096, 256, 197, bf16) == "dense"
    assert dispatch.rule_bag_path(4096, 256, 8, bf16) == "triton", "a few tokens read fewer rows than the table"
    assert dispatch.rule_bag_path(8192, 256, 50432, fp32) == "triton", "fp32 GEMMs move the crossover down"
    assert dispatch.rule_bag_path(4096, 256, 50432, fp32) == "dense"


def test_under_capture_auto_takes_the_rule_or_the_measured_winner_without_timing(triton_interpreter, monkeypatch):
    monkeypatch.setattr(dispatch, "is_capturing", lambda device: True)
    monkeypatch.setattr(dispatch, "_time_bag", lambda *a, **k: pytest.fail("no timing under capture"))
    values = torch.randn(128, 8, requires_grad=True)
    indices = torch.randint(0, 128, (40, 4))
    weights = torch.rand(40, 4)
    with torch.autocast(**AMP):
        assert ops.resolve_bag_path(values, indices, weights, backend="triton") == "dense"
    assert ops.resolve_bag_path(values, indices, weights, backend="triton") == "triton", "fp32: 128 > 16 * 4 slots"
    assert ops.bag_path_cache() == {}, "a rule's choice is not cached"
    key = dispatch._bag_key(values, indices, weights)
    dispatch._BAG_PATH_CACHE[key] = "dense"
    assert ops.resolve_bag_path(values, indices, weights, backend="triton") == "dense", "a measured winner is kept"


def test_every_triton_launch_runs_under_its_tensors_device(triton_interpreter, monkeypatch):
    """Triton launches on the current CUDA device: each launch must sit inside device_guard(its tensors' device)."""
    import contextlib

    from memory_layers.ops import runtime, triton_bag, triton_topk

    active, launched = [], []

    @contextlib.contextmanager
    def recording_guard(device):
        active.append(torch.device(device))
        yield
        active.pop()

    class CheckedKernel:
        def __init__(self, name, kernel):
            self.name, self.kernel = name, kernel

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                devices = {a.device for a in args if isinstance(a, torch.Tensor)}
                assert active and devices == {active[-1]}, f"{self.name} launched outside its device's guard"
                launched.append(self.name)
                return self.kernel[grid](*args, **kwargs)
            return launch

    kernels = {triton_bag: ["_bag_forward_kernel", "_bag_grad_weights_kernel", "_bag_grad_values_kernel",
                            "_sum_partials_kernel"], triton_topk: ["_select_topk_kernel"]}
    for module, names in kernels.items():
        monkeypatch.setattr(module, "device_guard", recording_guard)
        monkeypatch.setattr(module, "check_triton_launch", lambda device, kernel=None: None)
        for name in names:
            monkeypatch.setattr(module, name, CheckedKernel(name, getattr(module, name)))
    monkeypatch.setattr(triton_bag, "SEGMENT_CHUNK", 2)
    table, indices, weights = bag_inputs()
    out = triton_bag.embedding_bag_triton(table.weight, indices, weights)
    torch.autograd.grad(out.sum(), (table.weight, weights))
    triton_topk.select_topk_triton(torch.randn(3, 2, 2, 8), 4)
    assert sorted(set(launched)) == sorted(sum(kernels.values(), [])), launched
    guard = runtime.device_guard(torch.device("cuda", 1))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    assert isinstance(runtime.device_guard("cpu"), contextlib.nullcontext)


def test_the_fused_backward_gives_a_sparse_gradient_of_the_rows_read(triton_interpreter, monkeypatch):
    """A large table with sparse_grad: the segment sums of the rows read, coalesced, with hot rows split too."""
    from memory_layers.ops import triton_bag

    monkeypatch.setattr(triton_bag, "SEGMENT_CHUNK", 3)
    table, indices, weights = bag_inputs(slots=40)
    table.sparse_grad = True
    dense = ValueTable(40, 20)
    dense.load_state_dict(table.state_dict())
    for module, path in ((table, "auto"), (dense, "fused")):
        with torch.autocast(**AMP):
            module(indices, weights, backend="triton", path=path).float().square().sum().backward()
    grad = table.weight.grad
    assert grad.is_sparse and grad.dtype == torch.float32
    grad = grad.coalesce()
    assert grad.indices()[0].tolist() == indices.unique().tolist()
    torch.testing.assert_close(grad.to_dense(), dense.weight.grad, atol=1e-6, rtol=1e-5)
    assert ops.bag_path_cache() == {}, "auto never weighs the dense path for a sparse gradient"
