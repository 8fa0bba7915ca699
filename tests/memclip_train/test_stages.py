"""memclip_train.stages: a stage is reused only when the command that made it matches; otherwise the pipeline stops
naming the difference, or redoes it under force."""
import json

import pytest

from memclip_train.stages import RECORD_FILE, Stage, StageMismatch, differences, run_stages


def world_stage(out, seed=0, *extra):
    folder = out / "world"
    args = ["--out", str(folder), "--seed", str(seed), "--train", "4", "--val", "0", "--retrieval", "0",
            "--segmentation", "0", "--pairs-per-pattern", "0", "--image-size", "32", "--overwrite", *extra]
    return Stage("world", "memclip_train.synth", args, folder / "world.json", [folder])


def test_differences_name_each_changed_flag():
    assert differences(["m", "--seed", "0", "--quick", "--model", "a", "--model", "b"],
                       ["m", "--seed", "1", "--model", "a", "--model", "c", "--epochs", "4"]) == [
        "--seed 0 (now 1)", "--quick (not given now)", "--model a b (now a c)", "--epochs 4 (not given before)"]
    assert differences(["m", "--seed", "0"], ["m", "--seed", "0"]) == []


def test_a_stage_is_reused_only_with_the_settings_that_made_it(tmp_path):
    timings, lines = tmp_path / "timings.json", []
    run_stages([world_stage(tmp_path)], timings, log=lines.append)
    made = (tmp_path / "world" / "world.json").stat().st_mtime_ns
    record = json.loads((tmp_path / RECORD_FILE).read_text())["world"]
    assert record["finished"] and "--seed" in record["settings"] and record["command"].startswith("python -m")

    lines.clear()
    run_stages([world_stage(tmp_path, 0, "--no-progress")], timings, log=lines.append)  # reporting flags don't count
    assert lines[0].startswith("[skip] world") and (tmp_path / "world" / "world.json").stat().st_mtime_ns == made

    with pytest.raises(StageMismatch, match=r"stage 'world' in .* was made with other settings: --seed 0 \(now 1\)\. "
                                            r"Redo it with --force"):
        run_stages([world_stage(tmp_path, 1)], timings, log=lines.append)
    assert (tmp_path / "world" / "world.json").stat().st_mtime_ns == made, "a refused stage is left as it was"

    run_stages([world_stage(tmp_path, 1)], timings, force=True, log=lines.append)
    assert json.loads((tmp_path / "world" / "world.json").read_text())["seed"] == 1
    lines.clear()
    run_stages([world_stage(tmp_path, 1)], timings, log=lines.append)
    assert lines[0].startswith("[skip] world")


def test_output_that_no_record_describes_is_refused(tmp_path):
    (tmp_path / "world").mkdir()
    (tmp_path / "world" / "world.json").write_text("{}")
    with pytest.raises(StageMismatch, match="world.json exists, but .*stages.json does not say which command made it"):
        run_stages([world_stage(tmp_path)], tmp_path / "timings.json", log=lambda line: None)


def test_every_stage_is_checked_before_any_runs(tmp_path):
    run_stages([world_stage(tmp_path)], tmp_path / "timings.json", log=lambda line: None)
    other = world_stage(tmp_path / "b")
    other.name = "other world"
    with pytest.raises(StageMismatch):
        run_stages([other, world_stage(tmp_path, 2)], tmp_path / "timings.json", log=lambda line: None)
    assert not (tmp_path / "b").exists()
