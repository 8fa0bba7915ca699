"""`python -m memclip_train.study`: the pooled analysis and its pre-registered reading, the figure, the plan's
checks, and resuming a study point by point."""
import json
from pathlib import Path

import numpy as np
import pytest

import memclip
from memclip_train.study.__main__ import check_teacher, main
from memclip_train.study.analysis import summarise, tables
from memclip_train.study.figure import plot
from memclip_train.study.pipeline import StudyPipeline
from memclip_train.study.plan import StudyPlan

QUERIES = 400


def fake_results(hits_by_model, markings=(8, 32), seeds=(0, 1, 2), candidates=8):
    """Point results whose marking ranks hit (rank 1) with the given probability per model and K. A query's
    difficulty (one uniform draw per K, seed and query) is shared by the models, so equal rates give equal hits."""
    rng = np.random.default_rng(0)
    difficulty = {(k, seed): rng.random(QUERIES) for k in markings for seed in (None, *seeds)}
    misses = rng.integers(2, candidates + 1, QUERIES)
    results = []
    for k in markings:
        for model, rate in hits_by_model.items():
            for seed in ([None] if model == "teacher" else seeds):
                ranks = np.where(difficulty[k, seed] < rate(k), 1, misses)
                results.append({"markings": k, "model": model, "seed": seed, "candidates": candidates,
                                "ranks": {"marking": ranks.tolist(), "long_t2i": ranks.tolist()}})
    return results


COSTS = {key: {"vision_parameters": 1000, "memory_parameters": 0, "vision_flops": 10 ** 8}
         for key in ("teacher", "memory", "parallel", "control", "dense")}


def test_a_memory_that_keeps_learning_as_k_grows_is_read_as_helping(tmp_path):
    results = fake_results({"memory": lambda k: 0.6, "control": lambda k: 0.6 if k == 8 else 0.3,
                            "dense": lambda k: 0.45, "teacher": lambda k: 0.125})
    summary = summarise(results, COSTS)
    assert summary["markings"] == [8, 32] and summary["models"] == ["memory", "control", "dense", "teacher"]
    cell = summary["recall"]["marking"][32]["memory"]
    assert len(cell["seeds"]) == 3 and cell["value"] == pytest.approx(np.mean(cell["seeds"]))
    assert cell["low"] < cell["value"] < cell["high"]
    primary = summary["differences"][32]["memory-control"]
    assert primary["difference"] > 20 and primary["low"] > 0
    assert summary["differences"][8]["memory-control"]["identical"]
    across = summary["across_k"]["memory-control"]
    assert across["mean"]["difference"] == pytest.approx(primary["difference"] / 2)
    assert across["growth"]["difference"] == pytest.approx(primary["difference"]) and across["growth"]["low"] > 0
    assert summary["verdict"]["outcome"] == "the memory helps" and "the difference grows" in summary["verdict"][
        "sentence"]
    text = tables(summary)
    assert "| memory - control |" in text and "the memory helps" in text and "K = 32" in text
    assert "parallel - control" in text   # listed, not measured: '-'
    path = plot(summary, tmp_path / "study.png")
    assert path.stat().st_size > 10_000


@pytest.mark.parametrize("memory, control, outcome", [
    (0.3, 0.5, "the memory hurts"),
    (0.4, 0.4, "no difference detected"),
])
def test_the_reading_follows_the_interval_at_the_largest_k(memory, control, outcome):
    results = fake_results({"memory": lambda k: memory, "control": lambda k: control})
    assert summarise(results, COSTS)["verdict"]["outcome"] == outcome


def test_a_task_nobody_learned_is_called_so():
    results = fake_results({"memory": lambda k: 0.0, "control": lambda k: 0.0})
    assert "not learned" in summarise(results, COSTS)["verdict"]["sentence"]


def test_learning_is_read_against_the_untrained_teacher_not_chance():
    # The teacher scores 30% without ever seeing a name: models at 30% are above chance but learned nothing.
    results = fake_results({"memory": lambda k: 0.3, "control": lambda k: 0.3, "teacher": lambda k: 0.3})
    summary = summarise(results, COSTS)
    assert "not learned" not in summary["verdict"]["sentence"]    # the registered rule, against 1/C, does not fire
    assert summary["learning"]["learned"] == {"memory": [], "control": []}
    assert "not learned" in summary["learning"]["sentence"]
    assert "| memory student (replace) |" in tables(summary).split("untrained teacher**")[1]
    # A model that beats the teacher at K = 32 only is named with that K.
    results = fake_results({"memory": lambda k: 0.3 if k == 8 else 0.6, "control": lambda k: 0.3,
                            "teacher": lambda k: 0.3})
    summary = summarise(results, COSTS)
    assert summary["learning"]["learned"] == {"memory": [32], "control": []}
    assert summary["over_teacher"][32]["memory"]["low"] > 0
    assert "memory student (replace) at K = 32" in summary["learning"]["sentence"]


def test_without_a_teacher_point_there_is_no_learning_table():
    summary = summarise(fake_results({"memory": lambda k: 0.3, "control": lambda k: 0.3}), COSTS)
    assert summary["over_teacher"] == {} and "untrained teacher" not in tables(summary)


def test_plans_are_checked():
    with pytest.raises(ValueError, match="unknown"):
        StudyPlan(models=("memory", "moe"))
    with pytest.raises(ValueError, match="family size"):
        StudyPlan(markings=(2, 8))
    assert len(StudyPlan().seeds) >= 3


def test_a_missing_teacher_is_named(monkeypatch, tmp_path):
    monkeypatch.setattr("memclip_train.study.__main__.list_shipped_tags", lambda model: [])
    with pytest.raises(ValueError, match="'synth' teacher is not installed yet"):
        check_teacher("synth")
    with pytest.raises(ValueError, match="no such file or folder"):
        check_teacher(str(tmp_path / "missing"))
    check_teacher(str(tmp_path))


@pytest.mark.slow
def test_a_rerun_skips_finished_points(tmp_path, capsys):
    teacher = tmp_path / "teacher"
    memclip.save_pretrained(memclip.create_model("ViT-Tiny-8"), teacher)
    out = tmp_path / "study"
    common = ["--out", str(out), "--quick", "--teacher", str(teacher), "--markings", "8", "--seeds", "0"]
    assert main(common + ["--models", "control"]) == 0
    first = capsys.readouterr().out
    assert "python -m memclip_train.synth" in first and "--markings 8" in first
    assert "--shuffle-buffer 1" in first and "python -m memclip_train.eval markings" in first
    finished = {p.name: p.stat().st_mtime_ns for p in (out / "points").glob("*.json")}
    assert set(finished) == {"K8-teacher.json", "K8-control-s0.json"}

    assert main(common + ["--models", "control,dense"]) == 0
    again = capsys.readouterr().out
    assert "[skip] point K8-teacher" in again and "[skip] point K8-control-s0" in again
    assert again.count("python -m memclip_train.main") == 1 and "--model ViT-Tiny-8-dense" in again
    for name, mtime in finished.items():
        assert (out / "points" / name).stat().st_mtime_ns == mtime
    dense = json.loads((out / "points" / "K8-dense-s0.json").read_text())
    assert len(dense["ranks"]["marking"]) == StudyPlan.quick().world["retrieval"]
    table = (out / "study_table.md").read_text()
    assert "dense control (same parameters)" in table and "control: teacher fine-tuned" in table
    assert (out / "study.png").stat().st_size > 10_000
    costs = json.loads((out / "costs.json").read_text())
    assert costs["dense"]["vision_flops"] > costs["control"]["vision_flops"]

    # Another teacher into the same --out: its points are refused, naming the difference, not reused.
    other = tmp_path / "other-teacher"
    memclip.save_pretrained(memclip.create_model("ViT-Tiny-8"), other)
    assert main(["--out", str(out), "--quick", "--teacher", str(other), "--markings", "8", "--seeds", "0",
                 "--models", "control"]) == 2
    err = capsys.readouterr().err
    assert "point K8-teacher in" in err and f'--teacher "{teacher}" (now "{other}")' in err and "--force" in err


def test_a_point_recorded_before_the_recipes_were_typed_keeps_its_settings():
    from memclip_train.stages import differences
    from memclip_train.study.pipeline import _flat, _typed_recipes

    plan = StudyPlan.quick()
    pipeline = StudyPipeline(Path("/nowhere"), plan, "synth")
    point = pipeline.points()[0]
    now = pipeline.point_settings(point)
    old = json.loads(json.dumps(now))   # as a point file of the older memclip recorded the two stage recipes
    for stage, extra in (("distill", ["--value-lr", "5e-3"]), ("finetune", [])):
        recipe = old["plan"][stage]
        recipe["extra"] = extra
        for name in ("value_lr", "accum_freq", "grad_checkpointing", "trainable"):
            del recipe[name]
    assert differences(_flat(old), _flat(now))                       # spelled differently ...
    assert differences(_flat(_typed_recipes(old)), _flat(now)) == []  # ... the same recipe
    old["plan"]["distill"]["extra"] = ["--value-lr", "1e-2"]
    assert differences(_flat(_typed_recipes(old)), _flat(now)) == ["--plan.distill.value_lr 0.01 (now 0.005)"]
