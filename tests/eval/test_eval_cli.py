"""The command line: the synthetic-world comparison, blind pairs, heat maps and errors."""
import json

import pytest
import torch

from memclip_train.eval import evaluate_pairs
from memclip_train.eval.__main__ import main


def test_synth_command_prints_every_table(tiny_world, tmp_path, capsys, micro_configs):
    code = main(["synth", "--world", str(tiny_world), "--model", "Test-Micro", "--model", "Test-Micro-mem",
                 "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "synth-short T2I R@1" in printed and "synth-long T2I R@1" in printed and "synth mIoU" in printed
    assert printed.count("Test-Micro-mem (random)") >= 3
    assert (tmp_path / "out" / "synth_tables.md").exists()
    results = json.loads((tmp_path / "out" / "synth_results.json").read_text())
    long = results["retrieval"]["Test-Micro (random)"]["synth-long"]
    assert long["context_length"] == 77 and long["captions_cut"] > 0
    assert list((tmp_path / "out" / "segmentation" / "synth" / "sclip").glob("*_overlays/*.png"))
    assert "synth-shapes alone" in printed and "Most frequent zero-shot mistakes" in printed
    breakdown = results["zeroshot_breakdown"]["Test-Micro (random)"]["synth-colours"]
    images = sum(group["images"] for group in breakdown["by_salience"].values())
    assert images == len(results["zeroshot"]["Test-Micro (random)"]["synth-colours"]["ranks"])


def test_pairs_per_pattern(tiny_world, micro_model):
    cpu = torch.device("cpu")
    result = evaluate_pairs(micro_model, tiny_world, cpu, torch.autocast.__call__ and
                            (lambda: torch.autocast("cpu", enabled=False)), progress=False)
    assert set(result["per_pattern"]) == {"colour", "count", "position", "orientation", "size", "presence", "fill"}
    assert result["pairs"] == 14 and all(v["pairs"] == 2 for v in result["per_pattern"].values())
    assert 0 <= result["i2t"] <= 100 and 0 <= result["i2t_single"] <= 100


def test_heatmap_writes_a_png(tiny_world, tmp_path, micro_configs):
    image = sorted((tiny_world / "retrieval" / "image").glob("*.jpg"))[0]
    out = tmp_path / "heat.png"
    assert main(["heatmap", "--model", "Test-Micro", "--image", str(image), "--text", "a red star",
                 "--text", "a blue ring", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_errors_are_reported(tmp_path, capsys, micro_configs):
    assert main(["retrieval", "--model", "Test-Micro", "--dataset", "urban1k", "--data-root", str(tmp_path),
                 "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "expected layout" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["retrieval", "--model", "Test-Micro", "--pretrained", "a", "--pretrained", "b", "--dataset", "coco",
              "--data-root", str(tmp_path), "--out", str(tmp_path)])
    assert "more --pretrained than --model" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["unknown model", "unknown pretrained tag", "unreadable image", "not an image"])
def test_user_errors_are_one_line_and_exit_2(case, tiny_world, tmp_path, capsys, micro_configs):
    image = sorted((tiny_world / "retrieval" / "image").glob("*.jpg"))[0]
    heatmap = ["heatmap", "--image", str(image), "--text", "a red star", "--out", str(tmp_path / "h.png")]
    if case == "unknown model":
        argv, named = heatmap + ["--model", "ViT-Nope-9"], "ViT-Nope-9"
    elif case == "unknown pretrained tag":
        argv, named = heatmap + ["--model", "Test-Micro", "--pretrained", "no-such-tag"], "no-such-tag"
    elif case == "not an image":
        text = tmp_path / "note.jpg"
        text.write_text("not an image")
        argv, named = ["heatmap", "--image", str(text), "--text", "x", "--out", str(tmp_path / "h.png"), "--model",
                       "Test-Micro"], str(text)
    else:
        root = tmp_path / "urban"
        for folder in ("image", "caption"):
            (root / folder).mkdir(parents=True)
        (root / "image" / "1.jpg").write_bytes(b"broken")
        (root / "caption" / "1.txt").write_text("A caption.\n")
        argv = ["retrieval", "--model", "Test-Micro", "--dataset", "urban1k", "--data-root", str(root), "--out",
                str(tmp_path / "o"), "--no-progress"]
        named = str(root / "image" / "1.jpg")
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in err, err[-2000:]
    assert main(argv + ["--debug"]) == 2 and "Traceback" in capsys.readouterr().err
