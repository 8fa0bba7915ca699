"""Sparse value gradients in a training loop: accumulation, clipping, the fp16 scaler, torch.compile and the
average over gloo ranks (memory_layers.sparse_grads)."""
import copy

import pytest
import torch
import torch.multiprocessing as mp
from sparse_grads_worker import rank_reads, read, reads, twins, worker

from memory_layers import MemoryConfig, ProductKeyMemory, RowwiseAdamW, ValueTable
from memory_layers.sparse_grads import coalesce_sparse_grads, sparse_grad_parameter_names, sparse_grad_tables
from memory_layers.values_parallel import sharded_clip_grad_norm_


def test_tables_with_sparse_gradients_are_found_once_with_every_name():
    table = ValueTable(16, 4, sparse_grad=True)
    first, second = torch.nn.Module(), torch.nn.Module()
    first.values = second.values = table
    model = torch.nn.ModuleDict({"a": first, "b": second, "dense": ValueTable(16, 4),
                                 "frozen": ValueTable(16, 4, sparse_grad=True)})
    model["frozen"].weight.requires_grad_(False)
    assert sparse_grad_tables(model) == [table]
    assert sparse_grad_parameter_names(model) == ["a.values.weight", "b.values.weight"]


def test_accumulated_sparse_gradients_add_up_and_coalesce_to_one_row_per_slot():
    dense, sparse = twins()
    for micro_batch in range(3):
        for model in (dense, sparse):
            read(model, *reads(micro_batch)).backward()
    grad = sparse.table.weight.grad
    assert grad.is_sparse and grad._nnz() > 64, "uncoalesced: one row per read, for both reads and every micro-batch"
    coalesce_sparse_grads([sparse.table.weight, sparse.head.weight])
    grad = sparse.table.weight.grad
    assert grad.is_coalesced() and grad._nnz() <= 64
    torch.testing.assert_close(grad.to_dense(), dense.table.weight.grad)


@pytest.mark.parametrize("coalesced", [False, True])
def test_clipping_counts_the_rows_of_a_sparse_gradient(coalesced):
    dense, sparse = twins()
    for model in (dense, sparse):
        read(model, *reads(0)).backward()
    if coalesced:
        coalesce_sparse_grads(sparse.parameters())
    assert sparse.table.weight.grad.is_coalesced() == coalesced
    norms = [sharded_clip_grad_norm_(list(model.parameters()), 0.5, model) for model in (dense, sparse)]
    assert norms[0] > 1.0, "the clip must bite"
    torch.testing.assert_close(norms[1], norms[0])
    for (name, want), got in zip(dense.named_parameters(), sparse.parameters()):
        torch.testing.assert_close(got.grad.to_dense(), want.grad, msg=name)


def test_the_grad_scaler_unscales_sparse_gradients_and_skips_non_finite_ones():
    """The trainer's fp16 path (scale, backward, unscale_, clip, step, update), with torch's CPU GradScaler."""
    plain, scaled = twins()[1], copy.deepcopy(twins()[1])
    optimizers = [RowwiseAdamW(m.parameters(), lr=0.05) for m in (plain, scaled)]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    for step in range(2):
        read(plain, *reads(step)).backward()
        sharded_clip_grad_norm_(list(plain.parameters()), 0.5, plain)
        optimizers[0].step()
        optimizers[0].zero_grad(set_to_none=True)
        scaler.scale(read(scaled, *reads(step))).backward()
        scaler.unscale_(optimizers[1])
        sharded_clip_grad_norm_(list(scaled.parameters()), 0.5, scaled)
        scaler.step(optimizers[1])
        scaler.update()
        optimizers[1].zero_grad(set_to_none=True)
    for (name, want), got in zip(plain.named_parameters(), scaled.parameters()):
        torch.testing.assert_close(got, want, msg=name)

    before = {name: p.detach().clone() for name, p in scaled.named_parameters()}
    scaler.scale(read(scaled, *reads(5))).backward()
    scaled.table.weight.grad._values()[0, 0] = float("inf")
    scaler.step(optimizers[1])
    scaler.update()
    assert scaler.get_scale() == 2.0 ** 11, "an inf in the sparse gradient is found"
    for name, param in scaled.named_parameters():
        assert torch.equal(param, before[name]), f"{name}: the step is skipped"


def memory(sparse: bool) -> ProductKeyMemory:
    torch.manual_seed(0)
    config = MemoryConfig(n_keys=8, heads=2, knn=4, k_dim=16, v_dim=24, sparse_value_grad=sparse)
    return ProductKeyMemory(32, 32, config, backend="torch")


def test_the_bf16_read_copy_does_not_break_the_compiled_graph():
    """Under torch.compile the read copy's cache (keyed by data pointer and version) broke the graph on every call
    after the first; the copy is now a cast inside the graph: one frame for all calls, weight updates included."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    layer = memory(sparse=False)
    counter = CompileCounter()
    compiled = torch.compile(layer, backend=counter)
    x = torch.randn(2, 5, 32)
    for _ in range(3):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.testing.assert_close(compiled(x), layer(x))
        with torch.no_grad():
            layer.values.weight.add_(0.01)
    assert counter.frame_count == 1


@pytest.mark.slow
def test_a_table_with_sparse_gradients_trains_under_torch_compile():
    """AOTAutograd cannot trace a backward that returns a sparse gradient: the read runs outside the graph."""
    torch._dynamo.reset()
    eager, layer = memory(sparse=True), memory(sparse=True)
    x = torch.randn(2, 5, 32)
    torch.compile(layer, backend="aot_eager")(x).square().sum().backward()
    eager(x).square().sum().backward()
    grad = layer.values.weight.grad
    assert grad.is_sparse
    torch.testing.assert_close(grad.to_dense(), eager.values.weight.grad.to_dense())
    for (name, want), got in zip(eager.named_parameters(), layer.parameters()):
        if got.grad is not None and not got.grad.is_sparse:
            torch.testing.assert_close(got.grad, want.grad, msg=name)


@pytest.mark.distributed
@pytest.mark.slow
def test_two_ranks_average_sparse_gradients_as_one_process(tmp_path):
    """Each rank reads its own rows (one row read with weight 0: read, zero gradient); the gloo sparse all_reduce
    and the dense fallback (NCCL's) both give every rank the mean gradient over the rows any rank read."""
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    single = twins()[1]
    for rank in range(2):
        (read(single, *rank_reads(rank)) / 2).backward()
    expected = single.table.weight.grad.coalesce()
    assert {60, 61} <= set(expected.indices()[0].tolist()) and expected.to_dense()[60:62].abs().sum() == 0
    for rank, result in enumerate(results):
        assert torch.equal(result["table"], results[0]["table"]), "rank 0's table was broadcast"
        for way in ("sparse", "densified"):
            got = result[way]
            assert torch.equal(got["rows"], expected.indices()[0]), f"rank {rank} {way}: the rows any rank read"
            torch.testing.assert_close(got["values"], expected.values(), msg=f"rank {rank} {way}")
        assert result["unread_table_grad"] is None
