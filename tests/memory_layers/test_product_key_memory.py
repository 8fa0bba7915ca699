import math

import pytest
import torch

from memory_layers import MemoryConfig, ProductKeyMemory, ValueTable, param_groups, track_usage
from memory_layers.ops import (
    candidate_pairs,
    embedding_bag_naive,
    embedding_bag_torch,
    half_scores,
    product_key_topk_bruteforce,
    product_key_topk_torch,
    select_topk_torch,
    slot_scores,
)
from memory_layers.ops import reference


@pytest.mark.parametrize("n_keys, knn, heads", [(8, 1, 1), (8, 8, 2), (16, 5, 3), (32, 32, 1)])
def test_product_search_equals_bruteforce(n_keys, knn, heads):
    tokens, k_dim = 50, 12
    query = torch.randn(tokens, heads, k_dim, dtype=torch.float64)
    keys = torch.randn(heads, 2, n_keys, k_dim // 2, dtype=torch.float64)
    scores, indices = product_key_topk_torch(query, keys, knn)
    brute_scores, brute_indices = product_key_topk_bruteforce(query, keys, knn)
    assert scores.shape == indices.shape == (tokens, heads, knn)
    torch.testing.assert_close(scores, brute_scores)
    assert torch.equal(indices, brute_indices)
    assert indices.min() >= 0 and indices.max() < n_keys * n_keys
    assert torch.all(scores[..., :-1] >= scores[..., 1:]), "scores must be sorted descending"


def test_candidate_pairs_are_exactly_the_rank_pairs_that_can_win():
    pair_a, pair_b = candidate_pairs(64)
    assert pair_a.numel() == 280 and pair_a.dtype == torch.int64
    pairs = set(zip(pair_a.tolist(), pair_b.tolist()))
    assert pairs == {(a, b) for a in range(64) for b in range(64) if (a + 1) * (b + 1) <= 64}
    assert candidate_pairs(1)[0].tolist() == [0] and candidate_pairs(1)[1].tolist() == [0]
    assert candidate_pairs(64) is candidate_pairs(64), "the table is built once per (knn, device)"


@pytest.mark.parametrize("n_keys, knn", [(16, 16), (16, 5), (64, 64), (64, 32), (13, 1), (100, 17)])
def test_pruned_fp32_search_returns_the_bruteforce_scores_exactly(n_keys, knn):
    """The scores are the very fp32 sums the brute force ranks, and every slot's true score."""
    query = torch.randn(40, 3, 16)
    keys = torch.randn(3, 2, n_keys, 8)
    scores, indices = product_key_topk_torch(query, keys, knn)
    brute_scores, brute_indices = product_key_topk_bruteforce(query, keys, knn)
    assert scores.dtype == torch.float32
    assert torch.equal(scores, brute_scores)
    with torch.no_grad():  # without gradient the scores come from the selection itself: the same sums
        assert torch.equal(product_key_topk_torch(query, keys, knn)[0], scores)
    halves = half_scores(query, keys)
    full = (halves[:, :, 0].unsqueeze(-1) + halves[:, :, 1].unsqueeze(-2)).flatten(-2)
    assert torch.equal(full.gather(-1, indices), scores)
    assert torch.equal(indices.sort(-1).values, brute_indices.sort(-1).values), "random data: no ties"


def test_pruned_search_with_ties_returns_the_bruteforce_tie_scores():
    """Repeated sub-keys and a query that zeroes one half make many slots tie at the knn-th score."""
    keys = torch.randn(2, 2, 12, 4)
    keys[:, 0, 6:] = keys[:, 0, :6]  # every first-half score appears twice
    keys[:, 1, 1::2] = keys[:, 1, ::2]
    query = torch.randn(30, 2, 8)
    query[:10, :, 4:] = 0.0  # the second half scores 0 for every sub-key: whole rows of ties
    for knn in (1, 5, 12):
        scores, indices = product_key_topk_torch(query, keys, knn)
        brute_scores, brute_indices = product_key_topk_bruteforce(query, keys, knn)
        assert torch.equal(scores, brute_scores), knn
        assert torch.equal(indices, brute_indices), f"knn {knn}: ties are broken alike by the pruned and brute search"
        distinct = indices.sort(-1).values
        assert torch.all(distinct[..., 1:] > distinct[..., :-1]), "a slot is returned at most once"
        assert torch.equal(slot_scores(half_scores(query, keys), indices), scores)


def test_selection_on_float64_half_scores_and_order_keys():
    halves = torch.randn(7, 2, 2, 10, dtype=torch.float64)
    scores, slots = select_topk_torch(halves, 4)
    full = (halves[:, :, 0].unsqueeze(-1) + halves[:, :, 1].unsqueeze(-2)).flatten(-2)
    assert torch.equal(slot_scores(halves, slots), full.topk(4, dim=-1).values)
    assert torch.equal(scores, full.topk(4, dim=-1).values)
    values = torch.tensor([3.0, -0.5, float("-inf"), 0.0, -7.25, 1e-30, -1e-30, float("inf")])
    for dtype in (torch.float32, torch.float64):
        keys = reference.order_keys(values.to(dtype))
        assert torch.equal(values[keys.argsort()], values.sort().values), dtype


def test_topk_rejects_bad_shapes():
    with pytest.raises(ValueError, match="knn=9"):
        product_key_topk_torch(torch.randn(3, 1, 4), torch.randn(1, 2, 8, 2), 9)
    with pytest.raises(ValueError, match="does not match keys"):
        product_key_topk_torch(torch.randn(3, 2, 4), torch.randn(1, 2, 8, 2), 2)


def test_embedding_bag_matches_naive_gather_forward_and_backward():
    values = torch.randn(64, 10, dtype=torch.float64, requires_grad=True)
    indices = torch.randint(0, 64, (7, 12))
    weights = torch.rand(7, 12, dtype=torch.float64, requires_grad=True)
    fast = embedding_bag_torch(values, indices, weights)
    slow = embedding_bag_naive(values, indices, weights)
    torch.testing.assert_close(fast, slow)
    grad = torch.randn_like(fast)
    fast_grads = torch.autograd.grad(fast, (values, weights), grad)
    slow_grads = torch.autograd.grad(slow, (values, weights), grad)
    for a, b in zip(fast_grads, slow_grads):
        torch.testing.assert_close(a, b)


def test_cpu_readout_in_column_blocks_gives_the_same_sums(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # blocks are read on one thread only
    values = torch.randn(64, 40)
    indices = torch.randint(0, 64, (9, 12))
    weights = torch.rand(9, 12)
    plain = torch.nn.functional.embedding_bag(indices, values, per_sample_weights=weights, mode="sum")
    monkeypatch.setattr(reference, "CPU_BLOCK_BYTES", 64 * 16 * 4)  # 16-column blocks: 3 blocks, the last narrower
    monkeypatch.setattr(reference, "CPU_MIN_BLOCK", 8)
    assert reference.column_block(values) == 16
    with torch.no_grad():
        assert torch.equal(embedding_bag_torch(values, indices, weights), plain)
    values.requires_grad_()
    out = embedding_bag_torch(values, indices, weights)  # with gradient: one call, torch's own backward
    assert torch.equal(out, plain)
    (grad,) = torch.autograd.grad(out.sum(), values)
    torch.testing.assert_close(grad, torch.zeros(64).index_add_(0, indices.flatten(), weights.flatten())
                               .unsqueeze(1).expand(64, 40))
    assert reference.column_block(torch.empty(64, 16)) is None, "a block as wide as the table is no block"


def test_embedding_bag_gradcheck():
    values = torch.randn(16, 5, dtype=torch.float64, requires_grad=True)
    indices = torch.randint(0, 16, (4, 6))
    weights = torch.rand(4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, w: embedding_bag_torch(v, indices, w), (values, weights))


def small_config(**changes):
    base = dict(n_keys=8, heads=2, knn=4, k_dim=16, v_dim=24)
    return MemoryConfig(**{**base, **changes})


def test_forward_shape_and_every_parameter_initialised():
    memory = ProductKeyMemory(32, 40, small_config(gated=True, query_batchnorm=True))
    out = memory(torch.randn(3, 5, 32))
    assert out.shape == (3, 5, 40)
    assert torch.isfinite(out).all()
    for name, param in memory.named_parameters():
        assert torch.isfinite(param).all(), name
        if not name.endswith("bias") and "query_norm" not in name:
            assert param.abs().sum() > 0, f"{name} was left at zero"
    bound = 1 / math.sqrt(16)
    assert memory.keys.abs().max() <= bound
    assert memory.values.weight.std().item() == pytest.approx(1 / math.sqrt(24), rel=0.3)


def test_lookup_weights_are_a_softmax_per_head():
    memory = ProductKeyMemory(32, 32, small_config())
    indices, weights = memory.lookup(torch.randn(9, 32))
    assert indices.shape == weights.shape == (9, 2 * 4)
    assert weights.dtype == torch.float32
    torch.testing.assert_close(weights.view(9, 2, 4).sum(-1), torch.ones(9, 2))


def test_folded_query_projection_equals_the_plain_one():
    """Long fp32 batches fold the query projection into the sub-keys: the same slots, scores up to rounding."""
    memory = ProductKeyMemory(32, 32, small_config(n_keys=8, k_dim=32, heads=2, knn=4))
    x = torch.randn(80, 32, requires_grad=True)
    assert memory._folds_query(x) and not memory._folds_query(x[:8]), "80 tokens fold, 8 do not"
    folded = memory.half_scores(x)
    query = memory.query_proj(x).view(80, 2, 32)
    plain = half_scores(query, memory.keys)
    torch.testing.assert_close(folded, plain, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(folded.square().sum(), (x, memory.keys, memory.query_proj.weight,
                                                        memory.query_proj.bias))
    plain_grads = torch.autograd.grad(plain.square().sum(), (x, memory.keys, memory.query_proj.weight,
                                                             memory.query_proj.bias))
    for got, want in zip(grads, plain_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not memory._folds_query(x), "under autocast the query GEMM runs in bf16, unfolded"
    assert not ProductKeyMemory(32, 32, small_config(n_keys=8, k_dim=32, query_batchnorm=True))._folds_query(x)
    assert not ProductKeyMemory(32, 32, small_config(n_keys=16, k_dim=32))._folds_query(x), "2 * n_keys >= k_dim"
    assert not memory._folds_query(x[:20])
    torch.testing.assert_close(memory(x.detach()[:20]), memory(x.detach())[:20], rtol=1e-5, atol=1e-5)


def test_forward_matches_manual_readout():
    config = small_config(gated=True)
    memory = ProductKeyMemory(32, 32, config)
    x = torch.randn(6, 32)
    indices, weights = memory.lookup(x)
    bag = embedding_bag_naive(memory.values.weight, indices, weights)
    expected = memory.value_proj(bag * torch.nn.functional.silu(memory.swilu_proj(x)))
    expected = expected * torch.sigmoid(memory.gate(x))
    torch.testing.assert_close(memory(x), expected)


def test_projection_only_when_needed():
    plain = ProductKeyMemory(32, 32, small_config(swilu=False, v_dim=-1))
    assert plain.value_proj is None and plain.swilu_proj is None
    assert plain(torch.randn(4, 32)).shape == (4, 32)
    widened = ProductKeyMemory(32, 32, small_config(swilu=False, v_dim=48))
    assert widened.value_proj is not None and widened.value_proj.in_features == 48


def test_shared_values_are_one_parameter_and_checked():
    config = small_config()
    table = ValueTable(config.n_slots, 24)
    a = ProductKeyMemory(32, 32, config, values=table)
    b = ProductKeyMemory(32, 32, config, values=table)
    assert a.values.weight is b.values.weight
    holder = torch.nn.ModuleList([a, b])
    assert sum(1 for p in holder.parameters() if p is table.weight) == 1
    with pytest.raises(ValueError, match="shared value table"):
        ProductKeyMemory(32, 32, config.replace(v_dim=12), values=table)


def test_gradients_reach_values_keys_and_query():
    memory = ProductKeyMemory(32, 32, small_config())
    memory(torch.randn(10, 32)).square().sum().backward()
    for name in ("values.weight", "keys", "query_proj.weight", "value_proj.weight", "swilu_proj.weight"):
        grad = dict(memory.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_param_groups_fixed_value_lr_and_no_decay_for_norms_and_biases():
    config = small_config(value_lr=0.05, value_weight_decay=0.0, query_batchnorm=True)
    memory = ProductKeyMemory(32, 32, config)
    model = torch.nn.Sequential(torch.nn.LayerNorm(32), memory)
    groups = {g["name"]: g for g in param_groups(model, lr=1e-4, weight_decay=0.1)}
    assert set(groups) == {"values", "decay", "no_decay"}
    assert groups["values"]["lr"] == 0.05 and groups["values"]["weight_decay"] == 0.0
    assert groups["values"]["fixed_lr"] is True
    assert groups["values"]["params"] == [memory.values.weight]
    no_decay = {id(p) for p in groups["no_decay"]["params"]}
    assert id(model[0].weight) in no_decay and id(memory.query_proj.bias) in no_decay
    assert id(memory.query_norm.weight) in no_decay
    assert id(memory.keys) in {id(p) for p in groups["decay"]["params"]}
    assert groups["decay"]["weight_decay"] == 0.1
    overridden = {g["name"]: g for g in param_groups(model, 1e-4, 0.1, value_lr=0.5)}
    assert overridden["values"]["lr"] == 0.5
    every = [id(p) for g in param_groups(model, 1e-4, 0.1) for p in g["params"]]
    assert len(every) == len(set(every)) == len(list(model.parameters()))


def test_param_groups_skip_frozen():
    memory = ProductKeyMemory(32, 32, small_config())
    memory.values.weight.requires_grad_(False)
    names = {g["name"] for g in param_groups(memory, 1e-3, 0.1)}
    assert "values" not in names


def test_usage_statistics():
    config = small_config(n_keys=4, knn=2, heads=1)
    memory = ProductKeyMemory(32, 32, config).eval()
    with torch.no_grad(), track_usage(memory) as trackers:
        memory(torch.randn(200, 32))
    summary = trackers[""].summary()
    assert summary.tokens == 200 and summary.n_slots == 16
    assert 0 < summary.fraction_read <= 1
    assert 0 <= summary.kl_from_uniform <= math.log(16)
    assert memory.usage_tracker is None, "tracking stops when the block exits"
    # nested blocks share the outer accumulator: both see every read, and the inner exit does not stop it
    with torch.no_grad(), track_usage(memory) as outer:
        memory(torch.randn(30, 32))
        with track_usage(memory) as inner:
            memory(torch.randn(20, 32))
        assert memory.usage_tracker is outer[""]
        memory(torch.randn(10, 32))
    assert inner[""] is outer[""] and outer[""].tokens == 60
    assert memory.usage_tracker is None
    # A query that always picks the same slot gives the largest KL and one slot read... per weight mass.
    from memory_layers.usage import SlotUsage

    usage = SlotUsage(16)
    usage.update(torch.zeros(5, 1, dtype=torch.long), torch.ones(5, 1))
    assert usage.summary().fraction_read == pytest.approx(1 / 16)
    assert usage.summary().kl_from_uniform == pytest.approx(math.log(16))
    even = SlotUsage(4)
    even.update(torch.arange(4).view(4, 1), torch.ones(4, 1))
    assert even.summary().kl_from_uniform == pytest.approx(0.0, abs=1e-12)
    assert even.summary().fraction_read == 1.0


def test_slot_usage_works_under_deterministic_algorithms(monkeypatch):
    """On CUDA a weighted ``bincount`` raises under ``torch.use_deterministic_algorithms(True)``; the CPU one does
    not, so the CUDA behaviour is stood in for: usage tracking must not call it."""
    from memory_layers.usage import SlotUsage

    bincount = torch.bincount

    def cuda_like_bincount(input, weights=None, minlength=0):
        if weights is not None and torch.are_deterministic_algorithms_enabled():
            raise RuntimeError("bincount_cuda does not have a deterministic implementation")
        return bincount(input, weights, minlength)

    monkeypatch.setattr(torch, "bincount", cuda_like_bincount)
    usage = SlotUsage(6)
    torch.use_deterministic_algorithms(True)
    try:
        usage.update(torch.tensor([[1, 1, 4], [0, 1, 5]]), torch.tensor([[0.5, 0.25, 0.25], [0.0, 0.5, 0.5]]))
    finally:
        torch.use_deterministic_algorithms(False)
    assert usage.weight.tolist() == [0.0, 1.25, 0.0, 0.0, 0.25, 0.5]
    assert usage.reads.tolist() == [0, 3, 0, 0, 1, 1], "a read of weight 0 is not a read"
    assert usage.tokens == 2 and usage.summary().fraction_read == pytest.approx(3 / 6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_slot_usage_on_cuda_under_deterministic_algorithms():
    from memory_layers.usage import SlotUsage

    usage = SlotUsage(8)
    torch.use_deterministic_algorithms(True)
    try:
        usage.update(torch.tensor([[1, 2], [2, 7]], device="cuda"), torch.rand(2, 2, device="cuda"))
    finally:
        torch.use_deterministic_algorithms(False)
    assert usage.summary().fraction_read == pytest.approx(3 / 8)


def _twin_layers(sparse: bool):
    torch.manual_seed(0)
    config = MemoryConfig(n_keys=8, heads=2, knn=3, k_dim=8, v_dim=12, sparse_value_grad=sparse)
    table = ValueTable(64, 12, sparse_grad=sparse)
    return table, [ProductKeyMemory(16, 16, config, values=table, backend="torch") for _ in range(2)]


def test_sparse_value_gradients_hold_the_rows_read_and_equal_the_dense_gradient():
    x = torch.randn(5, 16)
    grads = {}
    for sparse in (False, True):
        table, (first, second) = _twin_layers(sparse)
        second(x + first(x)).square().sum().backward()
        grads[sparse] = table.weight.grad
    assert grads[True].is_sparse and not grads[False].is_sparse
    torch.testing.assert_close(grads[True].to_dense(), grads[False])
    read_rows = set(grads[True].coalesce().indices()[0].tolist())
    assert read_rows == set(grads[False].abs().sum(1).nonzero().view(-1).tolist()) and len(read_rows) < 64


def test_rowwise_adamw_steps_the_rows_read_as_adamw_and_leaves_the_others():
    from memory_layers import RowwiseAdamW

    x = torch.randn(5, 16)
    weights = {}
    for sparse in (False, True):
        table, layers = _twin_layers(sparse)
        params = [p for layer in layers for p in layer.parameters()]
        unique = list({id(p): p for p in params}.values())
        optimizer = (RowwiseAdamW if sparse else torch.optim.AdamW)(unique, lr=0.1, weight_decay=0.5)
        before = table.weight.detach().clone()
        layers[1](x + layers[0](x)).square().sum().backward()
        torch.nn.utils.clip_grad_norm_(unique, 1.0)
        read = table.weight.grad.coalesce().indices()[0] if sparse else None
        optimizer.step()
        weights[sparse] = (before, table.weight.detach().clone(), read, [p.detach().clone() for p in unique])
        if sparse:
            state = optimizer.state[table.weight]
            assert set(state) == {"step", "exp_avg", "exp_avg_sq"} and state["exp_avg"].shape == (64, 12)
            adamw = torch.optim.AdamW(unique, lr=0.1, weight_decay=0.5)
            adamw.load_state_dict(optimizer.state_dict())  # the same state: checkpoints move between them
    before, dense_after, _, dense_params = weights[False]
    _, sparse_after, read, sparse_params = weights[True]
    unread = torch.ones(64, dtype=torch.bool)
    unread[read] = False
    torch.testing.assert_close(sparse_after[read], dense_after[read])
    assert torch.equal(sparse_after[unread], before[unread]), "rows not read keep their values (no decay)"
    assert not torch.equal(dense_after[unread], before[unread]), "AdamW decays every row"
    for got, want in zip(sparse_params, dense_params):
        if got.shape != (64, 12):
            torch.testing.assert_close(got, want)


def test_sparse_value_gradients_are_refused_where_they_cannot_work():
    with pytest.raises(ValueError, match="sparse_value_grad.*values_parallel_group_size"):
        MemoryConfig(sparse_value_grad=True, values_parallel_group_size=2)
    table, (layer, _) = _twin_layers(True)
    with pytest.raises(ValueError, match="dense value gradient"):
        layer.values(torch.zeros(2, 6, dtype=torch.long), torch.rand(2, 6), backend="torch", path="dense")
