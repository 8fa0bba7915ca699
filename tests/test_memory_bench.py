"""The memory-layer benchmark: shapes from the model configs, one table with every path, JSON figures."""
import json

import pytest

from memory_layers import bench


def test_shapes_come_from_the_model_configs():
    shape = bench.load_shape("ViT-B-16-mem")
    assert (shape.width, shape.mlp_width) == (768, 3072)
    assert (shape.memory.n_keys, shape.memory.knn, shape.memory.heads, shape.memory.k_dim) == (64, 64, 4, 256)
    assert shape.memory.value_dim(shape.width) == 1024
    with pytest.raises(ValueError, match="no such model config file"):
        bench.load_shape("ViT-Nope-mem")


def test_cpu_run_prints_every_path_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = bench.main(["--config", "ViT-Tiny-8-mem", "--tokens", "96", "--device", "cpu", "--warmup", "0",
                       "--repeats", "1", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    for variant in bench.VARIANTS:
        assert f"| {variant} |" in printed
    data = json.loads(out.read_text())
    results = {r["variant"]: r for r in data["results"]}
    assert data["tokens"] == 96 and data["memory"] == "saved-for-backward"
    for variant in ("reference", "dense", "mlp"):
        assert results[variant]["forward_ms"] > 0 and results[variant]["train_ms"] > 0
    # the dense read-out keeps its (tokens x slots) weight matrix for the backward pass
    slots = bench.load_shape("ViT-Tiny-8-mem").memory.n_slots
    assert results["dense"]["memory_mb"] * 2**20 >= 96 * slots * 4
    fused = results["fused"]
    assert fused["forward_ms"] is None and ("CUDA" in fused["note"] or "triton" in fused["note"])


def test_bad_arguments_exit_with_a_message(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--variants", "fused,warp"])
    assert "--variants" in capsys.readouterr().err
