"""clip_benchmark both ways: memclip's result JSONs carry clip_benchmark's keys (checked against clip_benchmark's own
metric code), and `clip_benchmark build` puts a memclip result and a clip_benchmark result of the same model and set
(clip_benchmark run through `python -m memclip.clip_benchmark`) in the same columns with the same numbers."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from clip_benchmark.metrics import zeroshot_retrieval
from PIL import Image
from sklearn.metrics import balanced_accuracy_score

import repo_paths

import memclip
from memclip_train.eval.__main__ import main as eval_main
from memclip_train.eval.retrieval import read_result
from memclip_train.zeroshot.accuracy import clip_benchmark_accuracy
from memclip_train.retrieval_metrics import clip_benchmark_retrieval_metrics, query_ranks

SRC = str(repo_paths.SRC)


def test_retrieval_keys_match_clip_benchmarks_own_code():
    torch.manual_seed(0)
    images, texts = torch.randn(12, 16), torch.randn(30, 16)
    text_to_image = torch.arange(30) % 12
    ours = clip_benchmark_retrieval_metrics(query_ranks(images, texts, text_to_image), ks=(1, 5, 10))
    scores = texts @ images.T
    positives = torch.zeros_like(scores, dtype=torch.bool)
    positives[torch.arange(30), text_to_image] = True
    for k in (1, 5, 10):
        theirs_image = (zeroshot_retrieval.batchify(zeroshot_retrieval.recall_at_k, scores, positives, 8, "cpu", k=k)
                        > 0).float().mean().item()
        theirs_text = (zeroshot_retrieval.batchify(zeroshot_retrieval.recall_at_k, scores.T, positives.T, 8, "cpu",
                                                   k=k) > 0).float().mean().item()
        assert ours[f"image_retrieval_recall@{k}"] == pytest.approx(theirs_image, abs=1e-7)
        assert ours[f"text_retrieval_recall@{k}"] == pytest.approx(theirs_text, abs=1e-7)
    assert ours["image_retrieval_recall@1"] != ours["text_retrieval_recall@1"]  # the directions can be told apart


@pytest.mark.parametrize("classes", [3, 7])
def test_classification_keys_match_clip_benchmarks_definitions(classes):
    """clip_benchmark's acc1/acc5 (its ``accuracy``: top-k hits; acc5 NaN under 5 classes) and mean_per_class_recall
    (sklearn's balanced accuracy of the top-1 predictions, which it calls). Its ``accuracy`` itself cannot run under
    numpy >= 2.4 (``float()`` of a one-element array), so the top-k hits are counted here."""
    torch.manual_seed(classes)
    logits, labels = torch.randn(40, classes), torch.randint(0, classes, (40,))
    ours = clip_benchmark_accuracy(logits, labels, classes)
    top = logits.topk(min(5, classes), dim=1).indices
    assert ours["acc1"] == pytest.approx((top[:, 0] == labels).float().mean().item())
    if classes >= 5:
        assert ours["acc5"] == pytest.approx((top == labels[:, None]).any(dim=1).float().mean().item())
    else:
        assert np.isnan(ours["acc5"])
    assert ours["mean_per_class_recall"] == pytest.approx(balanced_accuracy_score(labels, logits.argmax(dim=1)))


@pytest.fixture
def coco_captions(tmp_path):
    """12 noise images with two captions each, in COCO's captions layout: annotations/captions_val2017.json with
    val2017/ (memclip's coco@val2017) and val2014/ (where clip_benchmark's mscoco_captions looks)."""
    root = tmp_path / "coco"
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    rng = np.random.default_rng(0)
    images, captions = [], []
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(root / "val2017" / f"{i:012d}.jpg")
        images.append({"id": i, "file_name": f"{i:012d}.jpg"})
        captions += [{"id": 10 * i + j, "image_id": i, "caption": f"a picture of thing {i} seen from the {side}"}
                     for j, side in enumerate(("left", "right"))]
    (root / "annotations" / "captions_val2017.json").write_text(json.dumps({"images": images,
                                                                           "annotations": captions}))
    os.symlink("val2017", root / "val2014")
    return root


@pytest.mark.slow
def test_clip_benchmark_build_lines_up_both_results(coco_captions, tmp_path, micro_configs):
    torch.manual_seed(5)
    weights = str(memclip.save_pretrained(memclip.create_model("Test-Micro-mem"), tmp_path / "model")
                  / "open_clip_model.safetensors")
    (tmp_path / "theirs").mkdir()
    environment = dict(os.environ, PYTHONPATH=SRC, MEMCLIP_MODEL_CONFIGS=str(micro_configs))
    done = subprocess.run(
        [sys.executable, "-m", "memclip.clip_benchmark", "eval", "--model", "Test-Micro-mem", "--pretrained", weights,
         "--dataset", "mscoco_captions", "--dataset_root", str(coco_captions), "--annotation_file",
         str(coco_captions / "annotations" / "captions_val2017.json"), "--task", "zeroshot_retrieval",
         "--recall_k", "1", "5", "10", "--no_amp", "--num_workers", "0", "--batch_size", "64",
         "--output", str(tmp_path / "theirs" / "{dataset}_{model}_{task}.json")],
        env=environment, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = tmp_path / "theirs" / "mscoco_captions_Test-Micro-mem_zeroshot_retrieval.json"
    assert eval_main(["retrieval", "--model", "Test-Micro-mem", "--pretrained", weights, "--dataset", "coco@val2017",
                      "--data-root", str(coco_captions), "--out", str(tmp_path / "ours"), "--no-progress"]) == 0
    (ours,) = (tmp_path / "ours" / "retrieval" / "coco__val2017").glob("*.json")
    assert read_result(ours)["ranks"]["t2i"] and not list((tmp_path / "ours").rglob("*.per_query.json"))
    table = tmp_path / "benchmark.csv"
    build = Path(sys.executable).parent / "clip_benchmark"  # clip_benchmark's own console script
    done = subprocess.run([str(build), "build", str(theirs), str(ours), "--output", str(table)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(table) as file:
        rows = {row["dataset"]: row for row in csv.DictReader(file)}
    row_theirs, row_ours = rows["mscoco_captions"], rows["coco"]
    assert "ranks" not in row_ours and "per_query" in row_ours  # per-query ranks stay out of the table
    for key in ("task", "language", "model", "pretrained"):
        assert row_ours[key] == row_theirs[key], key
    numbers = [f"{kind}_retrieval_recall@{k}" for kind in ("image", "text") for k in (1, 5, 10)]
    for key in numbers:
        assert float(row_ours[key]) == pytest.approx(float(row_theirs[key]), abs=1e-6), key
    assert len({row_ours[key] for key in numbers}) > 2  # not all 0 or all 1: the test can tell them apart
