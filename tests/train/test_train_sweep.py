"""A small ablation sweep: points run, results and plot are written, finished points are skipped."""
import csv
import json

import pytest

import memclip
from memclip_train.sweep import grid_points, main, placements
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


@pytest.mark.parametrize("flags,named", [(["--world", "no/such/world"], "--world no/such/world"),
                                         (["--model", "ViT-Tiny-8", "--grid", "knn"], "ViT-Tiny-8 has no memory"),
                                         (["--model", "ViT-Nope-9", "--grid", "knn"], "ViT-Nope-9")])
def test_bad_input_is_one_line_before_any_work(tmp_path, capsys, flags, named):
    assert main(["--out", str(tmp_path / "sweep"), *flags]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in err
    assert not (tmp_path / "sweep").exists()
