"""The demo's stage list and its reading of the numbers, without running any training."""
import numpy as np

from memclip_train.demo.pipeline import DemoPipeline
from memclip_train.demo.plan import DemoPlan
from memclip_train.demo.report import COLUMNS, bootstrap, reading


def test_stages_are_ordinary_commands_and_the_parallel_student_skips_stage_one(tmp_path):
    pipeline = DemoPipeline(tmp_path, DemoPlan.quick())
    stages = {stage.name: stage for stage in pipeline.stages()}
    assert list(stages) == ["synthetic world", "teacher", "student-distill", "student-finetune", "control-finetune",
                            "parallel-finetune", "evaluation"]
    teacher = str(tmp_path / "logs" / "teacher" / "final")
    distill, parallel = stages["student-distill"].args, stages["parallel-finetune"].args
    assert "--distill" in distill and distill[distill.index("--pretrained") + 1] == teacher
    assert "--distill" not in parallel and parallel[parallel.index("--pretrained") + 1] == teacher
    assert parallel[parallel.index("--memory") + 1] == "mode=parallel"
    assert parallel[parallel.index("--long-short-alpha") + 1] == "0.8"
    assert list(pipeline.training_runs()) == ["teacher", "student-distill", "student-finetune", "control-finetune",
                                              "parallel-finetune"]
    without = DemoPipeline(tmp_path, DemoPlan.quick(), parallel=False)
    assert "parallel-finetune" not in [stage.name for stage in without.stages()]


def fake_model(long_t2i_hits, rng):
    ranks = {source: {direction: np.where(rng.random(200) < 0.1, 1, 5).tolist() for direction in ("t2i", "i2t")}
             for source in ("synth-short", "synth-long")}
    ranks["synth-long"]["t2i"] = [1 if i < long_t2i_hits else 5 for i in range(200)]
    table = {header: 0.0 for header, _, _ in COLUMNS}
    table["long T2I R@1"] = long_t2i_hits / 2
    return {"table": table, "ranks": ranks}


def test_reading_names_the_parallel_student_only_when_it_ran():
    rng = np.random.default_rng(0)
    collected = {"CLIP teacher": fake_model(10, rng), "student, distilled": fake_model(10, rng),
                 "student, fine-tuned (ours)": fake_model(40, rng), "control: teacher fine-tuned": fake_model(20, rng)}
    lines = reading(collected, bootstrap(collected, seed=0))
    assert not any("Parallel memory" in line for line in lines)
    assert any("the memory helped beyond what fine-tuning alone gives" in line for line in lines)

    collected["parallel student, fine-tuned"] = fake_model(20, rng)
    lines = reading(collected, bootstrap(collected, seed=0))
    parallel = next(line for line in lines if line.startswith("**Parallel memory.**"))
    assert "10.0 against the control's 10.0" in parallel and "exactly the same queries" in parallel
