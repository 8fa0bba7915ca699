"""The command line: the synthetic-world comparison, blind pairs, heat maps and errors."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

import memclip
from memclip import pretrained
from memclip.pretrained import shipped_record
from memclip_train.eval import runner
from memclip_train.eval.pairs import evaluate_pairs
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


def refused_argv(tmp_path):
    """(argv, the flag the error names) for values that can only be mistakes; the data roots do not exist, so only a
    refusal when parsing raises SystemExit (a later refusal returns 2)."""
    out = ["--out", str(tmp_path / "out"), "--no-progress"]
    retrieval = ["retrieval", "--model", "Test-Micro", "--dataset", "urban1k", "--data-root", str(tmp_path / "no")]
    segmentation = ["segmentation", "--model", "Test-Micro", "--dataset", "synth", "--data-root", str(tmp_path / "no")]
    markings = ["markings", "--model", "Test-Micro", "--world", str(tmp_path / "no")]
    return {
        "logit scale nan": (segmentation + out + ["--logit-scale", "nan"], "--logit-scale"),
        "logit scale inf": (segmentation + out + ["--logit-scale", "inf"], "--logit-scale"),
        "logit scale 0": (segmentation + out + ["--logit-scale", "0"], "--logit-scale"),
        "stride 0": (segmentation + out + ["--stride", "0"], "--stride"),
        "window 0": (segmentation + out + ["--window", "0"], "--window"),
        "short side -3": (segmentation + out + ["--short-side", "-3"], "--short-side"),
        "limit 0": (segmentation + out + ["--limit", "0"], "--limit"),
        "overlays -1": (segmentation + out + ["--num-overlays", "-1"], "--num-overlays"),
        "method twice": (segmentation + out + ["--method", "sclip", "--method", "sclip"], "--method"),
        "batch size 0": (retrieval + out + ["--batch-size", "0"], "--batch-size"),
        "workers -1": (retrieval + out + ["--workers", "-1"], "--workers"),
        "context 0": (retrieval + out + ["--text-context-length", "0"], "--text-context-length"),
        "stretch alone": (retrieval + out + ["--text-pos-stretch", "longclip"], "--text-pos-stretch"),
        "one row for two models": (retrieval + ["--model", "Test-Micro"] + out, "--label"),
        "dataset twice": (retrieval + ["--dataset", "urban1k"] + out, "--dataset"),
        "variant of a set without any": (["retrieval", "--model", "Test-Micro", "--dataset",
                                          "synth-short@../../../escape", "--data-root", str(tmp_path / "no")] + out,
                                         "--dataset"),
        "candidates 1": (markings + out + ["--candidates", "1"], "--candidates"),
        "empty heat map text": (["heatmap", "--model", "Test-Micro", "--image", str(tmp_path / "no.jpg"), "--text",
                                 " ", "--out", str(tmp_path / "h.png")], "--text"),
    }


@pytest.mark.parametrize("case", list(refused_argv(Path("/tmp"))))
def test_values_that_can_only_be_mistakes_are_refused_when_parsed(case, tmp_path, capsys, micro_configs):
    """Before, each was accepted, and the run failed later, or evaluated with it (a NaN logit scale, a result
    written outside the results folder, one model's row replaced by another's)."""
    argv, flag = refused_argv(tmp_path)[case]
    with pytest.raises(SystemExit) as parsed:
        main(argv)
    err = capsys.readouterr().err
    assert parsed.value.code == 2 and flag in err.splitlines()[-1], err
    assert not list(tmp_path.rglob("*.json")), "nothing was evaluated"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_device_this_machine_lacks_is_refused_when_parsed(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["retrieval", "--model", "Test-Micro", "--dataset", "urban1k", "--data-root", str(tmp_path), "--out",
              str(tmp_path / "out"), "--device", "cuda"])
    assert "argument --device: cuda: this machine has no CUDA device" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["an existing file", "a read-only file system"])
def test_an_out_that_cannot_be_written_is_refused_before_evaluating(where, urban_root, tmp_path, capsys,
                                                                   monkeypatch, micro_configs):
    """An unwritable --out used to be found only after every model had been evaluated."""
    if where == "an existing file":
        out = tmp_path / "results"
        out.write_text("not a folder")
    else:
        out = Path("/sys/kernel/memclip-results")
        if not Path("/sys/kernel").is_dir():
            pytest.skip("no sysfs: no read-only file system to write to")
    evaluated = []
    monkeypatch.setattr(runner, "evaluate_retrieval", lambda *args, **kwargs: evaluated.append(args))
    with pytest.raises(SystemExit):
        main(["retrieval", "--model", "Test-Micro", "--dataset", "urban1k", "--data-root", str(urban_root),
              "--out", str(out), "--no-progress"])
    assert "argument --out" in capsys.readouterr().err and not evaluated


def test_tampered_shipped_weights_are_a_one_line_error_naming_the_file(tmp_path, capsys, monkeypatch):
    """A tampered shipped weights file used to end in a RuntimeError traceback."""
    record = dict(shipped_record("ViT-Tiny-8", "synth"))
    weights = tmp_path / "ViT-Tiny-8-synth.safetensors"
    data = bytearray((Path(record["record_path"]).parent / record["weights"]).read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    fake = tmp_path / "ViT-Tiny-8-synth.json"
    fake.write_text(json.dumps({k: v for k, v in record.items() if k != "record_path"}))
    monkeypatch.setattr(pretrained, "_records", lambda: {("ViT-Tiny-8", "synth"): dict(record,
                                                                                       record_path=str(fake))})
    image = tmp_path / "i.png"
    Image.new("RGB", (64, 64)).save(image)
    argv = ["heatmap", "--model", "ViT-Tiny-8", "--pretrained", "synth", "--image", str(image), "--text", "a",
            "--out", str(tmp_path / "h.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(weights) in err and "corrupt" in err and "Traceback" not in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("layout", ["plain state dict", "saved folder"])
def test_a_reshaped_tensor_is_a_one_line_error_naming_the_file_and_tensor(layout, tmp_path, capsys, micro_configs):
    """A reshaped tensor used to end in load_state_dict's size-mismatch traceback."""
    model = memclip.create_model("Test-Micro")
    with torch.no_grad():
        model.visual.proj = torch.nn.Parameter(model.visual.proj.reshape(16, 64))
    if layout == "plain state dict":
        source = tmp_path / "reshaped.pt"
        torch.save(model.state_dict(), source)
    else:
        source = memclip.save_pretrained(model, tmp_path / "reshaped", memclip.get_model_spec("Test-Micro"))
    image = tmp_path / "i.png"
    Image.new("RGB", (32, 32)).save(image)
    assert main(["heatmap", "--model", "Test-Micro", "--pretrained", str(source), "--image", str(image), "--text",
                 "a", "--out", str(tmp_path / "h.png")]) == 2
    err = capsys.readouterr().err
    assert str(source) in err and "visual.proj" in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_bad_pair_rows_are_named_or_counted(tiny_world, tmp_path, capsys, micro_configs):
    """A row with a null caption used to reach the tokenizer; a repeated pair id was counted twice."""
    world = tmp_path / "world"
    shutil.copytree(tiny_world / "pairs", world / "pairs")
    path = world / "pairs" / "pairs.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[3]["b"]["caption"] = None
    rows.append(dict(rows[0]))
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    argv = ["pairs", "--model", "Test-Micro", "--data-root", str(world), "--out", str(tmp_path / "out"),
            "--no-progress"]
    assert main(argv) == 2
    assert "pairs.jsonl, line 4: side 'b' 'caption' is null" in capsys.readouterr().err
    assert main(argv + ["--skip-bad"]) == 0
    assert "| skipped |" in capsys.readouterr().out
    [stored] = (tmp_path / "out" / "pairs").glob("*.json")
    result = json.loads(stored.read_text())
    assert result["pairs"] == 13 and result["skipped"]["bad_items"] == 2
