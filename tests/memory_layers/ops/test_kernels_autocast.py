"""Under bf16 autocast every backend scores slots in fp32, so torch and triton pick the slots fp32 picks."""
import pytest
import torch

from memory_layers import MemoryConfig, ProductKeyMemory
from memory_layers.ops import product_key_topk

pytest.importorskip("triton")
pytestmark = pytest.mark.usefixtures("triton_interpreter")


def near_tie_inputs():
    """Two slots 0.003 apart in fp32 that bf16 scoring (spacing 0.0078 at 1.0) would tie: fp32 picks slot 1."""
    query = torch.tensor([[[1.0, 0.0, 1.0, 0.0]]]).bfloat16()
    keys = torch.zeros(1, 2, 4, 2)
    keys[0, 0, 0, 0] = 1.0
    keys[0, 1, 0, 0], keys[0, 1, 1, 0] = 1.0, 1.003
    return query, keys


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_topk_under_bf16_autocast_picks_the_fp32_slots(backend):
    query, keys = near_tie_inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores, slots = product_key_topk(query, keys, 2, backend=backend)
    assert scores.dtype == torch.float32
    assert slots.tolist() == [[[1, 0]]], "fp32 ranks slot 1 (score 2.003) above slot 0 (score 2.0)"
    torch.testing.assert_close(scores, torch.tensor([[[2.003, 2.0]]]))


def test_topk_under_bf16_autocast_equals_fp32_on_random_queries():
    query = torch.randn(512, 4, 64).bfloat16()
    keys = torch.randn(4, 2, 32, 32)
    want = product_key_topk(query.float(), keys, 8, backend="torch")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = product_key_topk(query, keys, 8, backend="torch")
        tiny = product_key_topk(query[:6], keys, 8, backend="triton")
    assert torch.equal(got[1], want[1]) and torch.equal(got[0], want[0])
    assert torch.equal(tiny[1], want[1][:6]) and torch.equal(tiny[0], want[0][:6])


@pytest.mark.parametrize("bag_path", ["fused", "dense"])
def test_memory_layer_under_bf16_autocast_reads_the_same_slots_on_both_backends(monkeypatch, bag_path):
    torch.manual_seed(0)
    memory = ProductKeyMemory(32, 32, MemoryConfig(n_keys=16, heads=2, knn=8, k_dim=32, v_dim=24))
    x = torch.randn(12, 32)
    lookups, outputs = {}, {}
    for backend in ("torch", "triton"):
        monkeypatch.setenv("MEMORY_LAYERS_BACKEND", backend)
        monkeypatch.setenv("MEMORY_LAYERS_BAG_PATH", bag_path)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lookups[backend] = memory.lookup(x)
            outputs[backend] = memory(x)
    assert torch.equal(lookups["torch"][0], lookups["triton"][0])
    assert torch.equal(lookups["torch"][1], lookups["triton"][1])
    torch.testing.assert_close(outputs["torch"].float(), outputs["triton"].float(), atol=2e-2, rtol=2e-2)
