"""A small ablation sweep: points run, results and plot are written, finished points are skipped."""
import csv
import json
import math

import pytest

import memclip
from memclip_train import sweep
from memclip_train.main import main as train_main
from memclip_train.params import parse_args
from memclip_train.recipes import stage_config
from memclip_train.schedule import warmup_steps
from memclip_train.sweep import PRESETS, grid_points, main, placements, thesis_warmup_fraction
from memclip_train.synth import SynthConfig, generate_world
from memclip_train.synth.render import RenderConfig


def test_placements_follow_the_thesis_at_depth_12():
    assert placements(12) == {"early": [0, 1, 2, 3, 4], "mid": [4, 5, 6, 7, 8], "late-sparse": [4, 6, 8, 10, 11],
                              "all": list(range(12))}
    tiny = placements(4)
    assert tiny["late-sparse"] == [2, 3] and tiny["all"] == [0, 1, 2, 3]


def test_grid_points_are_valid_memory_settings():
    for grid in ("nkeys-vdim", "knn", "placement"):
        for point in grid_points(grid, "ViT-Tiny-8-mem", [16, 32], [128, 256], [4, 8, 16, 32]):
            memclip.MemoryConfig.from_dict({**memclip.get_model_spec("ViT-Tiny-8-mem").memory.to_dict(),
                                            **point.memory})


@pytest.mark.slow
def test_small_sweep_writes_results_and_skips_finished_points(tmp_path, capsys):
    world = tmp_path / "world"
    generate_world(SynthConfig(seed=3, train=32, val=16, retrieval=8, segmentation=0, pairs_per_pattern=0,
                               render=RenderConfig(image_size=32, supersample=2)), world, workers=1, progress=False)
    teacher = memclip.save_pretrained(memclip.create_model("Test-Micro"), tmp_path / "teacher")
    args = ["--out", str(tmp_path / "sweep"), "--grid", "knn", "--knn", "2,4", "--model", "Test-Micro-mem",
            "--world", str(world), "--teacher", str(teacher), "--distill-epochs", "1", "--finetune-epochs", "1"]
    assert main(args) == 0
    rows = list(csv.DictReader(open(tmp_path / "sweep" / "sweep_results.csv")))
    assert [r["point"] for r in rows] == ["knn2", "knn4"]
    assert all(0 <= float(r["long_t2i_R@1"]) <= 100 for r in rows)
    assert (tmp_path / "sweep" / "sweep.png").stat().st_size > 1000
    point = json.loads((tmp_path / "sweep" / "points" / "knn__knn2.json").read_text())
    assert point["memory"] == {"knn": 2} and point["memory_parameters"] > 0
    capsys.readouterr()
    assert main(args) == 0
    assert capsys.readouterr().out.count("python -m memclip_train.main") == 0
    # Other settings into the same --out: refused naming the difference, not answered with the old points.
    assert main(with_value(args, "--finetune-epochs", "2")) == 2
    err = capsys.readouterr().err
    assert "point knn__knn2 in" in err and "finetune: --epochs 1 (now 2)" in err and "--force" in err


def with_value(args, flag, value):
    args = list(args)
    args[args.index(flag) + 1] = value
    return args


def test_thesis_preset_holds_the_thesis_values():
    preset = PRESETS["thesis"]
    assert preset.model == "ViT-B-16-mem" and preset.teacher == "openai"
    assert 64 in preset.n_keys and 1024 in preset.v_dims and 64 in preset.knns
    base = parse_args(["--train-data", "x.tar", "--model", preset.model, "--pretrained", preset.teacher])
    distill = " ".join(stage_config(base, preset.distill, preset.distill_task).to_argv())
    finetune = " ".join(stage_config(base, preset.finetune, preset.stage2).to_argv())
    for flag in ("--epochs 10", "--lr 0.0005", "--batch-size 20", "--warmup-fraction 0.00675977", "--wd 0.1",
                 "--accum-freq 4"):
        assert flag in distill, flag
    for flag in ("--epochs 10", "--lr 1e-05", "--batch-size 32", "--warmup-fraction 0.0051369",
                 "--trainable memory,visual"):
        assert flag in finetune, flag
    # a point (one 10k-sample shard, 10 epochs, 4 GPUs) warms up over the thesis's share of its steps, never longer
    # than the point itself (the thesis code's 1000 steps would outlast its 310 and 780 steps)
    point_steps = {"distill": 10 * (math.ceil(10_000 / 80) // 4), "finetune": 10 * math.ceil(10_000 / 128)}
    assert point_steps == {"distill": 310, "finetune": 790}
    assert warmup_steps(10000, preset.distill.warmup_fraction, point_steps["distill"]) == 2
    assert warmup_steps(10000, preset.finetune.warmup_fraction, point_steps["finetune"]) == 4
    assert thesis_warmup_fraction(38, 80, 4) * 38 * (math.ceil(1_245_902 / 80) // 4) == pytest.approx(1000)
    assert preset.finetune_text is None and "amp_bf16" in preset.flags  # 77 tokens, text frozen; bf16
    assert "--long-short-alpha 0.8" in finetune and "--distill" in distill
    points = {p.label: p.memory for p in grid_points("nkeys-vdim", "ViT-B-16-mem", preset.n_keys, preset.v_dims,
                                                     preset.knns)}
    assert points["n64-v1024"] == {"n_keys": 64, "v_dim": 1024, "knn": 64}
    placement = {p.label: p.memory["layers"] for p in grid_points("placement", "ViT-B-16-mem", (), (), ())}
    assert placement["late-sparse"] == [4, 6, 8, 10, 11]


@pytest.mark.slow
def test_sweep_on_shards_with_training_flags_and_any_eval_dataset(tmp_path, monkeypatch, capsys):
    world = tmp_path / "world"
    generate_world(SynthConfig(seed=4, train=32, val=16, retrieval=8, segmentation=0, pairs_per_pattern=0,
                               render=RenderConfig(image_size=32, supersample=2)), world, workers=1, progress=False)
    teacher = memclip.save_pretrained(memclip.create_model("Test-Micro"), tmp_path / "teacher")
    launched = []

    def launch(command, check):  # the launcher's command, run here in-process
        launched.append(command)
        assert command[:3] == ["python3", "-m", "memclip_train.main"] and check
        assert train_main(command[3:]) == 0

    monkeypatch.setattr(sweep.subprocess, "run", launch)
    args = ["--out", str(tmp_path / "sweep"), "--grid", "knn", "--knn", "2", "--model", "Test-Micro-mem",
            "--train-data", str(world / "train"), "--val-data", str(world / "val"), "--teacher", str(teacher),
            "--eval", "urban1k", "--eval-root", str(world / "retrieval"), "--distill-epochs", "1",
            "--finetune-epochs", "1", "--distill-args", "--distill-loss mse", "--launcher", "python3",
            "--", "--batch-size", "8", "--precision", "fp32", "--workers", "0"]
    assert sweep.main(args) == 0
    assert len(launched) == 2
    distill = (tmp_path / "sweep" / "runs" / "knn__knn2" / "distill" / "params.txt").read_text()
    finetune = (tmp_path / "sweep" / "runs" / "knn__knn2" / "finetune" / "params.txt").read_text()
    assert "optim.batch_size: 8" in distill and "task.distill_loss: mse" in distill
    assert "optim.batch_size: 8" in finetune and "task.distill_loss: cosine" in finetune
    assert "model.text_context_length: 248" in finetune  # the synthetic preset's stage 2
    row = next(csv.DictReader(open(tmp_path / "sweep" / "sweep_results.csv")))
    assert 0 <= float(row["urban1k_t2i_R@1"]) <= 100 and row["distill_val_cosine"]
    assert "urban1k T2I R@1" in capsys.readouterr().out
    for bad, message in ((["--eval", "nope"], "not a retrieval dataset"), ([], "name the retrieval datasets"),
                         (["--eval", "urban1k", "--", "--no-such-flag"], "unrecognized arguments")):
        with pytest.raises(SystemExit):
            sweep.main(["--train-data", "x", "--teacher", "t", *bad])
        assert message in capsys.readouterr().err
@pytest.mark.parametrize("flags,named", [(["--world", "no/such/world"], "--world no/such/world"),
                                         (["--model", "ViT-Tiny-8", "--grid", "knn"], "ViT-Tiny-8 has no memory"),
                                         (["--model", "ViT-Nope-9", "--grid", "knn"], "ViT-Nope-9")])
def test_bad_input_is_one_line_before_any_work(tmp_path, capsys, flags, named):
    assert main(["--out", str(tmp_path / "sweep"), *flags]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in err
    assert not (tmp_path / "sweep").exists()
