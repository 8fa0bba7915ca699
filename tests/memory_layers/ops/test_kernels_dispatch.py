"""Backend and bag-path dispatch: environment parsing, errors, auto choices, the measured crossover."""
import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from memory_layers import MemoryConfig, ProductKeyMemory
from memory_layers import ops
from memory_layers.ops import dispatch

CPU = torch.device("cpu")
CUDA = torch.device("cuda")  # a device object only; nothing here touches a GPU


def test_default_backend_is_auto_and_resolves_to_torch_on_cpu():
    assert dispatch.backend_choice() == "auto"
    assert ops.resolve_backend(CPU) == "torch"
    assert ops.resolve_backend("cpu", "auto") == "torch"


def test_auto_resolves_to_triton_on_cuda_only_when_triton_imports(monkeypatch):
    monkeypatch.setattr(dispatch, "triton_available", lambda: True)
    assert ops.resolve_backend(CUDA) == "triton"
    monkeypatch.setattr(dispatch, "triton_available", lambda: False)
    assert ops.resolve_backend(CUDA) == "torch"
    with pytest.raises(RuntimeError, match="not installed"):
        ops.resolve_backend(CUDA, "triton")


@pytest.mark.parametrize("raw, expected", [("torch", "torch"), (" TORCH ", "torch"), ("Auto", "torch"), ("", "torch")])
def test_backend_env_parsing(monkeypatch, raw, expected):
    monkeypatch.setenv(dispatch.BACKEND_ENV, raw)
    assert ops.resolve_backend(CPU) == expected


def test_bad_env_values_raise_naming_the_variable_and_the_choices(monkeypatch):
    monkeypatch.setenv(dispatch.BACKEND_ENV, "cuda")
    with pytest.raises(ValueError, match=r"MEMORY_LAYERS_BACKEND='cuda'.*auto, torch, triton"):
        ops.resolve_backend(CPU)
    with pytest.raises(ValueError, match="MEMORY_LAYERS_BACKEND"):
        ops.product_key_topk(torch.randn(2, 1, 4), torch.randn(1, 2, 4, 2), 2)
    monkeypatch.delenv(dispatch.BACKEND_ENV)
    monkeypatch.setenv(dispatch.BAG_PATH_ENV, "sparse")
    values, indices, weights = torch.randn(8, 3), torch.zeros(2, 2, dtype=torch.long), torch.rand(2, 2)
    with pytest.raises(ValueError, match=r"MEMORY_LAYERS_BAG_PATH='sparse'.*auto, fused, dense"):
        ops.embedding_bag(values, indices, weights)
    with pytest.raises(ValueError, match=r"backend='jax'"):
        ops.resolve_backend(CPU, "jax")
    with pytest.raises(ValueError, match=r"path='csr'"):
        ops.resolve_bag_path(values, indices, weights, backend="torch", path="csr")


def test_argument_overrides_environment(monkeypatch):
    monkeypatch.setenv(dispatch.BACKEND_ENV, "triton")
    monkeypatch.delenv("TRITON_INTERPRET")
    assert ops.resolve_backend(CPU, "torch") == "torch"
    values, indices, weights = torch.randn(8, 3), torch.zeros(2, 2, dtype=torch.long), torch.rand(2, 2)
    monkeypatch.setenv(dispatch.BAG_PATH_ENV, "dense")
    assert ops.resolve_bag_path(values, indices, weights, backend="torch") == "dense"
    assert ops.resolve_bag_path(values, indices, weights, backend="torch", path="auto") == "torch"
    assert ops.resolve_bag_path(values, indices, weights, backend="torch", path="fused") == "torch"


def test_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        ops.resolve_backend(CPU, "triton")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        ops.product_key_topk(torch.randn(2, 1, 4), torch.randn(1, 2, 4, 2), 2, backend="triton")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        ops.product_key_topk_triton(torch.randn(2, 1, 4), torch.randn(1, 2, 4, 2), 2)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(RuntimeError, match="memory_layers triton kernels were imported before"):
        dispatch.check_triton_launch(CPU, kernel=object())  # a kernel decorated in compiler mode


def test_torch_backend_bag_defaults_to_embedding_bag_and_matches_naive():
    values = torch.randn(64, 10)
    indices = torch.randint(0, 64, (5, 6))
    weights = torch.rand(5, 6)
    assert ops.resolve_bag_path(values, indices, weights) == "torch"
    torch.testing.assert_close(ops.embedding_bag(values, indices, weights), ops.embedding_bag_naive(values, indices,
                                                                                                    weights))
    assert ops.bag_path_cache() == {}, "the torch backend never measures"


def test_auto_topk_falls_back_to_torch_for_float64(monkeypatch):
    monkeypatch.setattr(dispatch, "resolve_backend", lambda device, backend=None: "triton")
    query = torch.randn(2, 1, 4, dtype=torch.float64)
    keys = torch.randn(1, 2, 4, 2, dtype=torch.float64)
    scores, indices = ops.product_key_topk(query, keys, 2)
    expected = ops.product_key_topk_torch(query, keys, 2)
    assert scores.dtype == torch.float64 and torch.equal(indices, expected[1])


def test_large_tables_always_take_the_fused_path(triton_interpreter, monkeypatch):
    monkeypatch.setattr(dispatch, "_time_bag", lambda *a, **k: pytest.fail("must not measure"))
    values = torch.randn(dispatch.DENSE_MAX_SLOTS + 1, 1)
    indices = torch.randint(0, values.shape[0], (2, 3))
    weights = torch.rand(2, 3)
    assert ops.resolve_bag_path(values, indices, weights, backend="triton") == "triton"
    assert ops.resolve_bag_path(values, indices, weights, backend="triton", path="dense") == "dense"
    assert ops.bag_path_cache() == {}


def test_small_tables_measure_once_per_key_cache_and_log_the_winner(triton_interpreter, monkeypatch, caplog):
    calls = []

    def fake_time(fn, values, indices, weights, grad, read_values=None):
        calls.append((fn.__name__, grad))
        return {"embedding_bag_triton": 2.0, "embedding_bag_dense": 1.0}[fn.__name__]

    monkeypatch.setattr(dispatch, "_time_bag", fake_time)
    values = torch.randn(64, 10, requires_grad=True)
    weights = torch.rand(5, 6)
    indices = torch.randint(0, 64, (5, 6))
    with caplog.at_level(logging.INFO, logger=dispatch.__name__):
        assert ops.resolve_bag_path(values, indices, weights, backend="triton") == "dense"
        # 7 tokens fall in the same bucket (8) as 5: cached, not measured or logged again
        assert ops.resolve_bag_path(values, torch.randint(0, 64, (7, 6)), torch.rand(7, 6), backend="triton") == "dense"
    assert calls == [("embedding_bag_triton", True), ("embedding_bag_dense", True)]
    assert len([r for r in caplog.records if "dense path" in r.getMessage()]) == 1
    (key,) = ops.bag_path_cache()
    assert key == ("cpu", 64, 10, 6, torch.float32, torch.float32, 8, True)
    # no grad -> a different key; 9 tokens -> another bucket
    with torch.no_grad():
        ops.resolve_bag_path(values, indices, weights, backend="triton")
    ops.resolve_bag_path(values, torch.randint(0, 64, (9, 6)), torch.rand(9, 6), backend="triton")
    assert len(ops.bag_path_cache()) == 3 and len(calls) == 6
    ops.clear_path_caches()
    assert ops.bag_path_cache() == {}
    monkeypatch.setattr(dispatch, "_time_bag",
                        lambda fn, *a, **k: 1.0 if fn.__name__ == "embedding_bag_triton" else 5.0)
    assert ops.resolve_bag_path(values, indices, weights, backend="triton") == "triton"


def test_real_measurement_runs_both_paths_and_gives_the_reference_result(triton_interpreter, monkeypatch):
    monkeypatch.setattr(dispatch, "MEASURE_ITERATIONS", 1)
    values = torch.randn(32, 6, requires_grad=True)
    indices = torch.randint(0, 32, (3, 4))
    weights = torch.rand(3, 4, requires_grad=True)
    out = ops.embedding_bag(values, indices, weights, backend="triton")
    (choice,) = ops.bag_path_cache().values()
    assert choice in ("triton", "dense")
    assert values.grad is None, "measuring must not accumulate gradients into the inputs"
    ref = ops.embedding_bag_naive(values, indices, weights)
    torch.testing.assert_close(out, ref)
    grads = torch.autograd.grad(out.sum(), (values, weights))
    for got, want in zip(grads, torch.autograd.grad(ref.sum(), (values, weights))):
        torch.testing.assert_close(got, want)


def _memory_grads(memory, x):
    memory.zero_grad()
    out = memory(x)
    out.square().sum().backward()
    return out.detach(), {name: p.grad.clone() for name, p in memory.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("bag_path", ["fused", "dense"])
def test_memory_layer_on_triton_backend_equals_torch_backend(triton_interpreter, monkeypatch, bag_path):
    config = MemoryConfig(n_keys=8, heads=2, knn=4, k_dim=16, v_dim=24, swilu=True, gated=True)
    memory = ProductKeyMemory(32, 32, config)
    x = torch.randn(3, 32)
    monkeypatch.setenv(dispatch.BACKEND_ENV, "torch")
    ref_out, ref_grads = _memory_grads(memory, x)
    monkeypatch.setenv(dispatch.BACKEND_ENV, "triton")
    monkeypatch.setenv(dispatch.BAG_PATH_ENV, bag_path)
    out, grads = _memory_grads(memory, x)
    torch.testing.assert_close(out, ref_out)
    assert grads.keys() == ref_grads.keys() and {"keys", "values.weight", "query_proj.weight"} <= grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], msg=name)


@pytest.mark.slow
def test_import_and_cpu_forward_work_without_triton():
    """A fresh interpreter where `import triton` fails: memory_layers imports, auto picks torch, triton errors."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["triton"] = None  # makes `import triton` raise ImportError
        import torch
        from memory_layers import MemoryConfig, ProductKeyMemory, ops
        assert not ops.triton_available()
        assert ops.resolve_backend("cuda") == "torch" and ops.resolve_backend("cpu") == "torch"
        try:
            ops.resolve_backend("cpu", "triton")
        except RuntimeError as error:
            assert "not installed" in str(error)
        else:
            raise AssertionError("triton backend without triton must raise")
        memory = ProductKeyMemory(16, 16, MemoryConfig(n_keys=8, heads=2, knn=4, k_dim=8, v_dim=16))
        memory(torch.randn(3, 16)).sum().backward()
        assert memory.keys.grad is not None
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in (dispatch.BACKEND_ENV, dispatch.BAG_PATH_ENV)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize("backend, bag_path", [("torch", "auto"), ("torch", "dense"), ("triton", "fused"),
                                               ("triton", "dense"), ("triton", "auto")])
@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "amp_bf16"])
def test_an_empty_input_gives_an_empty_output_forward_and_backward(triton_interpreter, backend, bag_path, amp):
    """0 tokens (a shape a ViT never makes, a library is called with): the right empty shape, zero gradients."""
    config = MemoryConfig(n_keys=8, heads=2, knn=4, k_dim=16, v_dim=24, gated=True)
    memory = ProductKeyMemory(32, 32, config, backend=backend, bag_path=bag_path)
    for shape in [(0, 32), (2, 0, 32)]:
        memory.zero_grad(set_to_none=True)
        x = torch.randn(*shape, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = memory(x)
        assert out.shape == (*shape[:-1], 32)
        out.float().sum().backward()
        assert x.grad.shape == x.shape
        for name, param in memory.named_parameters():
            assert param.grad is not None and not param.grad.any(), name
    assert ops.bag_path_cache() == {}, "nothing to time on 0 tokens"
