"""The teacher's pretraining program: stream -> training -> fp16 export with its record -> competence -> install."""
import json

import pytest
import torch

import memclip
from memclip.pretrained import file_sha256
from memclip_train import pretrain


def test_throughput_counts_only_the_intervals_that_trained(tmp_path):
    rows = [{"kind": "train", "step": 50, "samples_per_second": 100.0},
            {"kind": "val", "step": 50, "t2i_R@1": 1.0},
            {"kind": "train", "step": 100, "samples_per_second": 50.0}]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(row) + "\n" for row in rows))
    figures = pretrain.training_throughput(metrics, batch_size=10)
    assert figures == {"training_seconds": round(50 * 10 / 100 + 50 * 10 / 50), "median_samples_per_second": 75.0}
    metrics.write_text("")
    assert pretrain.training_throughput(metrics, batch_size=10) == {}


def test_competence_curve_reads_the_zero_shot_rows_in_percent(tmp_path):
    rows = [{"kind": "train", "epoch": 1, "step": 50, "samples_per_second": 100.0},
            {"kind": "zeroshot", "epoch": 1, "synth-shapes-zeroshot-top1": 0.177, "synth-shapes-zeroshot-top5": 0.6,
             "synth-shapes-zeroshot-skipped": 0, "synth-colours-zeroshot-top1": 0.664},
            {"kind": "zeroshot", "epoch": 2, "synth-shapes-zeroshot-top1": 0.41, "synth-colours-zeroshot-top1": 0.717}]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert pretrain.competence_curve(metrics, samples_per_epoch=1000) == [
        {"epoch": 1, "samples": 1000, "synth-shapes": 17.7, "synth-colours": 66.4},
        {"epoch": 2, "samples": 2000, "synth-shapes": 41.0, "synth-colours": 71.7}]


@pytest.mark.slow
def test_quick_pretraining_exports_records_and_installs(tmp_path, monkeypatch, capsys):
    installed = tmp_path / "package"
    monkeypatch.setattr(pretrain, "PRETRAINED_DIR", installed)
    out = tmp_path / "pretrain"
    assert pretrain.main(["--out", str(out), "--quick", "--no-progress", "--install"]) == 0
    weights = out / "export" / "ViT-Tiny-8-synth.safetensors"
    record = json.loads(weights.with_suffix(".json").read_text())
    assert record["sha256"] == file_sha256(weights)
    assert record["seed"] == 0 and "--quick" in record["command"] and "synth-stream" in record["training_command"]
    assert record["training_seconds"] > 0 and record["median_samples_per_second"] > 0
    for key in ("synth-shapes_top1", "synth-colours_top1", "synth-sizes_top1", "segmentation_mIoU", "pairs_strict",
                "synth-short_t2i_R@1", "semantic_t2i_R@1"):
        assert 0 <= record["metrics"][key] <= 100, key
    assert sorted(p.name for p in installed.iterdir()) == ["ViT-Tiny-8-synth.json", "ViT-Tiny-8-synth.safetensors"]
    # The zero-shot attributes were watched after the (one) epoch, on the same held-out world as the final metrics.
    [point] = record["competence_curve"]
    assert point["epoch"] == 1 and point["samples"] == 128
    assert set(point) == {"epoch", "samples", "synth-shapes", "synth-colours", "synth-sizes"}
    assert (out / "competence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The exported fp16 weights are the trained model, to fp16 rounding.
    trained = memclip.create_model(str(out / "logs" / "teacher" / "final"))
    exported = memclip.create_model("ViT-Tiny-8", pretrained=str(weights))
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        a, b = trained.encode_image(image), exported.encode_image(image)
    assert torch.allclose(a, b, atol=2e-2, rtol=2e-2)

    # Run again: every stage is done, nothing is retrained, and the record stays.
    capsys.readouterr()
    assert pretrain.main(["--out", str(out), "--quick", "--no-progress"]) == 0
    assert "skip" in capsys.readouterr().out.lower()
    assert json.loads(weights.with_suffix(".json").read_text())["sha256"] == record["sha256"]
    # Another seed into the same --out: refused, naming it, instead of reporting the seed-0 teacher.
    assert pretrain.main(["--out", str(out), "--quick", "--no-progress", "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "stage 'teacher' in" in err and "--seed 0 (now 1)" in err
