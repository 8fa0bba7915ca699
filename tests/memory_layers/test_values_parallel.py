"""Values parallelism: a value table split by columns over gloo processes matches the unsharded layer exactly."""
import logging
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from values_parallel_worker import CONFIG, TwoMemories, worker

import memclip
from memclip_train.distributed import DistributedEnv
from memclip_train.values_parallel_setup import setup_values_parallel
from memory_layers import ValueTable, param_groups
from memory_layers.values_parallel import (ShardedValueTable, ValuesParallelGroups, shard_value_tables,
                                           sharded_clip_grad_norm_, value_shards)

TIGHT = {"rtol": 1e-5, "atol": 1e-6}


def spawn(folder, world: int, group_sizes):
    """Run the worker on ``world`` gloo processes for each group size -> {group_size: [result of each rank]}."""
    mp.spawn(worker, args=(world, list(group_sizes), str(folder / "init"), str(folder)), nprocs=world, join=True)
    return {g: [torch.load(folder / f"g{g}_rank{rank}.pt", weights_only=True) for rank in range(world)]
            for g in group_sizes}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return spawn(tmp_path_factory.mktemp("values_parallel_2"), 2, (2, 1))


@pytest.fixture(scope="module")
def four_ranks(tmp_path_factory):
    return spawn(tmp_path_factory.mktemp("values_parallel_4"), 4, (4, 2))


def assert_dicts_close(actual, expected, what, **tolerance):
    assert actual.keys() == expected.keys(), what
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, msg=f"{what}: {name}", **tolerance)


def check_against_unsharded(results, world: int, group_size: int) -> None:
    for rank, result in enumerate(results):
        what = f"rank {rank}"
        assert result["count"] == 1 and result["shared"] and result["is_shard"]
        assert result["shard_shape"] == (CONFIG.n_slots, CONFIG.v_dim // group_size)
        assert set(result["ignored"]) == {"first.values.weight", "second.values.weight"}
        # Forward: this rank's tokens read the same rows as the unsharded table gives.
        torch.testing.assert_close(result["out"], result["reference_out"], **TIGHT)
        # Backward (DDP over the rest, the shard synced): every gradient is the unsharded one of the mean loss.
        assert_dicts_close(result["grads"], result["reference_grads"], f"{what} grads", **TIGHT)
        assert result["grads"]["first.values.weight"].abs().sum() > 0
        torch.testing.assert_close(result["norm"], result["reference_norm"], **TIGHT)
        assert result["reference_norm"] > 0.05  # so the clip really scaled the gradients
        assert_dicts_close(result["clipped_grads"], result["reference_clipped_grads"], f"{what} clipped", **TIGHT)
        # One AdamW step; the gathered weights and optimizer moments are the unsharded ones.
        assert_dicts_close(result["state_dict"], result["reference_state_dict"], f"{what} stepped", **TIGHT)
        for mine, theirs in zip(result["optimizer_state"], result["reference_optimizer_state"]):
            assert_dicts_close(mine, theirs, f"{what} optimizer", **TIGHT)
        # Checkpoint round trips (full -> sharded, full -> unsharded) are exact.
        assert_dicts_close(result["fresh_state_dict"], result["state_dict"], f"{what} reload", rtol=0, atol=0)
        assert_dicts_close(result["unsharded_state_dict"], result["state_dict"], f"{what} unsharded", rtol=0, atol=0)
        assert result["fresh_moments_match"]
        if group_size > 1:
            assert "loads the full (64, 24) table" in result["shard_load_error"]
        assert f"values_parallel_group_size={3 * world} must divide the world size {world}" in result["world_error"]
    for result in results[1:]:  # every rank gathers the same tables
        assert_dicts_close(result["state_dict"], results[0]["state_dict"], "ranks", rtol=0, atol=0)


@pytest.mark.distributed
@pytest.mark.parametrize("group_size", [2, 1], ids=["one-group-of-2", "two-replicas-of-1"])
def test_two_ranks_match_the_unsharded_layer(two_ranks, group_size):
    check_against_unsharded(two_ranks[group_size], 2, group_size)


@pytest.mark.distributed
def test_a_rank_without_tokens_and_autocast_match_the_unsharded_layer(two_ranks):
    for rank, result in enumerate(two_ranks[2]):
        assert result["empty_out_shape"] == ((0, 32) if rank == 0 else (8, 32))
        assert result["empty_x_grad_shape"] == result["empty_out_shape"]
        torch.testing.assert_close(result["empty_out"], result["empty_reference_out"], **TIGHT)
        torch.testing.assert_close(result["empty_grad"], result["empty_reference_grad"], **TIGHT)
        assert result["amp_dtypes"] == (torch.bfloat16, torch.bfloat16), "the shards exchange the bf16 read-out"
        torch.testing.assert_close(result["amp_out"], result["amp_reference_out"], atol=2e-2, rtol=2e-2)


@pytest.mark.distributed
def test_the_group_runs_the_bag_path_its_first_rank_chose(two_ranks):
    """Rank 0 would take the dense path and rank 1 the torch one: both run rank 0's choice (agreed once per shape:
    the forward, the backward and a second forward all reuse it), so the exchanges match."""
    for result in two_ranks[2]:
        assert result["paths_used"] and set(result["paths_used"]) == {"dense"}, result["paths_used"]
        torch.testing.assert_close(result["agreed_out"], result["agreed_reference_out"], **TIGHT)


def test_token_counts_travel_between_hosts_over_the_cpu_group(monkeypatch):
    """The counts are shapes the host knows: they go over the host-side (gloo) group as CPU tensors, so reading
    them never waits for the GPU (a .tolist() of a CUDA all-gather did, once per layer and call)."""
    from memory_layers import values_parallel

    calls = []

    def fake_all_gather(outputs, tensor, group=None):
        calls.append((tensor.device.type, group))
        for rank, out in enumerate(outputs):
            out.fill_(5 + rank)

    monkeypatch.setattr(values_parallel.dist, "all_gather", fake_all_gather)
    groups = ValuesParallelGroups(group_size=2, world_size=2, rank_in_group=0, group="device group",
                                  replicas=None, counts_group="host group")
    assert values_parallel._token_counts(5, groups) == [5, 6]
    assert calls == [("cpu", "host group")]


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("group_size", [4, 2], ids=["one-group-of-4", "two-groups-of-2"])
def test_four_ranks_match_the_unsharded_layer(four_ranks, group_size):
    check_against_unsharded(four_ranks[group_size], 4, group_size)


@pytest.mark.parametrize("size", [0, -2, True, 2.0])
def test_bad_group_size_is_refused(size):
    with pytest.raises(ValueError, match="must be a positive integer"):
        shard_value_tables(TwoMemories(seed=0), size)


def test_group_size_must_divide_v_dim():
    with pytest.raises(ValueError, match="does not divide the value table's v_dim=24"):
        shard_value_tables(TwoMemories(seed=0), 5)


def test_sharding_needs_torch_distributed():
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="needs torch.distributed to be initialised"):
        shard_value_tables(TwoMemories(seed=0), 2)


def test_a_shard_of_the_wrong_width_is_refused():
    groups = ValuesParallelGroups(group_size=2, world_size=2, rank_in_group=0, group=None, replicas=None)
    with pytest.raises(ValueError, match=r"must be \(n_slots, 12\), got \(64, 24\)"):
        ShardedValueTable(torch.zeros(64, 24), 24, groups)
    with pytest.raises(ValueError, match="v_dim=25 is not divisible"):
        ShardedValueTable(torch.zeros(64, 12), 25, groups)


def test_a_single_process_group_shards_to_itself(tmp_path, monkeypatch):
    """World of one, group of one: the shard is the whole table and the layer is unchanged."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1,
                            timeout=timedelta(seconds=60))
    try:
        with pytest.raises(ValueError, match="values_parallel_group_size=2 must divide the world size 1"):
            shard_value_tables(TwoMemories(seed=0), 2)
        reference = TwoMemories(seed=0)
        model = TwoMemories(seed=0)
        assert shard_value_tables(model, 1) == 1
        x = torch.randn(7, 32)
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
        groups = [group["name"] for group in param_groups(model, lr=1e-3, weight_decay=0.1)]
        assert groups[0] == "values" and isinstance(model.first.values, ValueTable)
        # sharded_clip_grad_norm_ on a torch without nn.utils.get_total_norm / clip_grads_with_norm_ (before 2.6)
        for name in ("get_total_norm", "clip_grads_with_norm_"):
            monkeypatch.delattr(torch.nn.utils, name, raising=False)
        model(x).square().sum().backward()
        reference(x).square().sum().backward()
        norm = sharded_clip_grad_norm_(model.parameters(), 0.01, model)
        want = torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.01)
        torch.testing.assert_close(norm, want)
        for got, expected in zip(model.parameters(), reference.parameters()):
            torch.testing.assert_close(got.grad, expected.grad)
    finally:
        dist.destroy_process_group()


def test_a_single_process_run_stays_unsharded(caplog):
    model = memclip.create_model("Test-Micro-mem", memory={"values_parallel_group_size": 2})
    with caplog.at_level(logging.WARNING, logger="memclip_train"):
        assert setup_values_parallel(model, DistributedEnv()) == 0
    assert "values_parallel_group_size=2 needs a distributed run" in caplog.text
    assert not value_shards(model)


def test_a_table_with_sparse_gradients_is_not_sharded():
    groups = ValuesParallelGroups(group_size=2, world_size=2, rank_in_group=0, group=None, replicas=None)
    with pytest.raises(ValueError, match="sparse_grad=True cannot be sharded"):
        ShardedValueTable.from_full(ValueTable(8, 4, sparse_grad=True), groups)
