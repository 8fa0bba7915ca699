"""The memory-layer benchmark: shapes from the model configs, one table with every path, JSON figures."""
import json
import os

import pytest
import torch

import memclip
from memory_layers.tools import bench
from memory_layers.ops import dispatch


def memclip_shape(name):
    """A memclip model's layer shape: memclip's config handed to the library (which knows nothing of memclip)."""
    return bench.shape_from_config(name, memclip.get_model_config(name))


@pytest.fixture
def tiny_config(tmp_path):
    """ViT-Tiny-8-mem's config as a model JSON file, the form ``--config`` takes."""
    path = tmp_path / "ViT-Tiny-8-mem.json"
    path.write_text(json.dumps(memclip.get_model_config("ViT-Tiny-8-mem")))
    return str(path)


def test_shapes_come_from_the_model_configs():
    shape = memclip_shape("ViT-B-16-mem")
    assert (shape.width, shape.mlp_width) == (768, 3072)
    assert (shape.memory.n_keys, shape.memory.knn, shape.memory.heads, shape.memory.k_dim) == (64, 64, 4, 256)
    assert shape.memory.value_dim(shape.width) == 1024
    with pytest.raises(ValueError, match="no such model config file"):
        bench.load_shape("ViT-Nope-mem")


def test_cpu_run_prints_every_path_and_writes_json(tmp_path, capsys, tiny_config):
    out = tmp_path / "bench.json"
    code = bench.main(["--config", tiny_config, "--tokens", "96", "--device", "cpu", "--warmup", "0",
                       "--repeats", "1", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    for variant in bench.VARIANTS:
        assert f"| {variant} |" in printed
    assert "fp32" in printed and "of slots take" in printed and "load " in printed
    data = json.loads(out.read_text())
    results = {r["variant"]: r for r in data["results"]}
    assert data["tokens"] == 96 and data["memory"] == "saved-for-backward" and data["precision"] == "fp32"
    for variant in ("reference", "dense", "auto", "mlp"):
        assert results[variant]["forward_ms"] > 0 and results[variant]["train_ms"] > 0
    # the dense read-out keeps its (tokens x slots) weight matrix for the backward pass
    slots = bench.load_shape(tiny_config).memory.n_slots
    assert results["dense"]["memory_mb"] * 2**20 >= 96 * slots * 4
    fused = results["fused"]
    assert fused["forward_ms"] is None and ("CUDA" in fused["note"] or "triton" in fused["note"])
    # the read-out alone: bytes per token beside the time, against a measured copy bandwidth
    assert "| read-out alone | fwd+bwd ms | MB/token (model) | GB/s | of copy bandwidth | TFLOP/s |" in printed
    assert "memory roofline: a device-to-device copy moves" in printed and data["copy_bandwidth"] > 0
    readout = {r["variant"]: r for r in data["readout"]}
    assert set(readout) == {"reference", "fused", "dense"} and readout["fused"]["train_ms"] is None
    shape = bench.load_shape(tiny_config)
    bag, v_dim = shape.memory.heads * shape.memory.knn, shape.memory.value_dim(shape.width)
    assert readout["reference"]["bytes_per_token"] > 3 * bag * v_dim * 4, "rows read twice, gradient rows once"
    for variant in ("reference", "dense"):
        assert readout[variant]["train_ms"] > 0 and 0 < readout[variant]["roofline_fraction"]
    assert readout["dense"]["tflops"] > 0 and readout["reference"]["tflops"] is None


def test_amp_keeps_an_fp32_table_and_big_tables_skip_the_dense_path(tmp_path, tiny_config):
    out = tmp_path / "bench.json"
    n_keys = 136  # 18,496 slots: above DENSE_MAX_SLOTS
    assert n_keys ** 2 > dispatch.DENSE_MAX_SLOTS
    bench.main(["--config", tiny_config, "--tokens", "32", "--device", "cpu", "--warmup", "0", "--repeats",
                "1", "--precision", "amp_bf16", "--memory", f"n_keys={n_keys}", "--variants", "auto,dense",
                "--json", str(out)])
    data = json.loads(out.read_text())
    results = {r["variant"]: r for r in data["results"]}
    assert data["n_slots"] == n_keys ** 2 and data["precision"] == "amp_bf16"
    assert results["auto"]["train_ms"] > 0
    assert results["dense"]["train_ms"] is None and "at most 16,384" in results["dense"]["note"]
    shape = bench.load_shape(tiny_config)
    memory = bench.build_module("auto", shape, torch.device("cpu"), "amp_bf16")
    assert memory.values.weight.dtype == torch.float32, "amp_bf16 trains an fp32 value table, as the trainer does"
    assert bench.build_module("auto", shape, torch.device("cpu"), "bf16").values.weight.dtype == torch.bfloat16


def test_skew_concentrates_the_reads_on_hot_slots():
    shape = memclip_shape("ViT-Tiny-8-mem")
    shares = []
    for skew in (0.0, 2.0):
        torch.manual_seed(0)
        memory = bench.build_module("auto", shape, torch.device("cpu"), "fp32")
        shares.append(bench.hot_slot_share(memory, bench.skewed_tokens(512, shape.width, skew, torch.device("cpu")),
                                           "fp32"))
    assert shares[1] > 2 * shares[0]


def test_bad_arguments_exit_with_a_message(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--variants", "fused,warp"])
    assert "--variants" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--memory", "n_kees=3"])
    assert "n_kees" in capsys.readouterr().err


def test_the_default_shape_is_the_thesis_layer_and_arguments_change_it():
    thesis = memclip_shape("ViT-B-16-mem")
    default = bench.DEFAULT_SHAPE
    assert (default.width, default.mlp_width) == (thesis.width, thesis.mlp_width)
    assert default.memory == thesis.memory.replace(layers=()), "the library's default drifted from ViT-B-16-mem"
    args = bench.build_parser().parse_args(["--width", "64", "--mlp-width", "256", "--memory", "knn=8"])
    shape = bench.shape_from_arguments(args)
    assert (shape.width, shape.mlp_width, shape.memory.knn, shape.memory.n_keys) == (64, 256, 8, 64)
    with pytest.raises(ValueError, match="must be >= 1"):
        bench.shape_from_arguments(bench.build_parser().parse_args(["--width", "0"]))


def test_each_path_is_passed_its_backend_and_the_environment_is_left_alone(monkeypatch):
    monkeypatch.setenv(dispatch.BACKEND_ENV, "triton")  # would fail on CPU tensors if a layer read it
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    shape = bench.DEFAULT_SHAPE
    memory = bench.build_module("reference", shape, torch.device("cpu"), "fp32")
    assert (memory.backend, memory.bag_path) == ("torch", "auto")
    assert memory(torch.randn(4, shape.width)).shape == (4, shape.width)
    assert bench.build_module("dense", shape, torch.device("cpu"), "fp32").bag_path == "dense"
    assert os.environ[dispatch.BACKEND_ENV] == "triton"
