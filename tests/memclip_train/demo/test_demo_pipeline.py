"""The demo's stage list and its reading of the numbers, without running any training."""
import numpy as np
import pytest
import torch

import memclip
from memclip.parallel import memory_gates
from memclip_train.demo.pipeline import DemoPipeline
from memclip_train.demo.plan import DemoPlan, TextRecipe
from memclip_train.demo.report import COLUMNS, PAIRED_METRICS, bootstrap, gate_sizes, headroom, reading


def test_stages_are_ordinary_commands_and_the_parallel_student_skips_stage_one(tmp_path):
    pipeline = DemoPipeline(tmp_path, DemoPlan.quick())
    stages = {stage.name: stage for stage in pipeline.stages()}
    assert list(stages) == ["synthetic world", "probe world", "student-distill", "student-finetune",
                            "control-finetune", "parallel-finetune", "evaluation"]
    teacher = "synth"                                      # the pretrained tiny CLIP that ships with memclip
    distill, parallel = stages["student-distill"].args, stages["parallel-finetune"].args
    assert "--distill" in distill and distill[distill.index("--pretrained") + 1] == teacher
    assert "--distill" not in parallel and parallel[parallel.index("--pretrained") + 1] == teacher
    assert parallel[parallel.index("--memory") + 1] == "mode=parallel"
    assert parallel[parallel.index("--long-short-alpha") + 1] == "0.8"
    control = stages["control-finetune"].args
    assert control[control.index("--pretrained") + 1] == teacher
    assert list(pipeline.training_runs()) == ["student-distill", "student-finetune", "control-finetune",
                                              "parallel-finetune"]
    elsewhere = DemoPipeline(tmp_path, DemoPlan.quick(), teacher="/w/t.safetensors")
    assert elsewhere.models()[0].weights == "/w/t.safetensors"
    # The probe world holds only segmentation images, from another seed; the evaluation fits the probe on it.
    probe, evaluation = stages["probe world"].args, stages["evaluation"].args
    assert probe[probe.index("--seed") + 1] == "1000" and probe[probe.index("--segmentation") + 1] == "16"
    assert all(probe[probe.index(f"--{split}") + 1] == "0" for split in ("train", "val", "retrieval"))
    assert evaluation[evaluation.index("--probe-world") + 1] == str(pipeline.probe_world)
    with pytest.raises(ValueError, match="probe_images"):
        DemoPlan(probe_images=0)
    without = DemoPipeline(tmp_path, DemoPlan.quick(), parallel=False)
    assert "parallel-finetune" not in [stage.name for stage in without.stages()]


@pytest.mark.parametrize("plan", [DemoPlan(), DemoPlan.quick()], ids=["full", "quick"])
def test_the_demo_world_orders_long_captions_by_salience_and_every_finetune_shares_one_recipe(tmp_path, plan):
    stages = {stage.name: stage for stage in DemoPipeline(tmp_path, plan).stages()}
    world = stages["synthetic world"].args
    assert world[world.index("--long-order") + 1] == "salience"
    for name in ("student-finetune", "control-finetune", "parallel-finetune"):
        args = stages[name].args
        assert args[args.index("--epochs") + 1] == str(plan.finetune.epochs)
        assert args[args.index("--lr") + 1] == str(plan.finetune.lr)


@pytest.mark.parametrize("recipe, context, trainable", [("thesis", None, "visual"),
                                                       ("longclip", "248", "visual,text")])
def test_every_stage_two_model_reads_text_the_same_way(tmp_path, recipe, context, trainable):
    stages = DemoPipeline(tmp_path, DemoPlan.quick(recipe)).stages()
    finetunes = [stage.args for stage in stages if stage.name.endswith("-finetune")]
    assert len(finetunes) == 3
    for args in finetunes:
        assert args[args.index("--trainable") + 1] == trainable and args.count("--trainable") == 1
        if context is None:    # the thesis: CLIP's 77 tokens, no stretched table
            assert "--text-context-length" not in args and "--text-pos-stretch" not in args
        else:                  # a stretched table is only used with a text tower that learns its new positions
            assert args[args.index("--text-context-length") + 1] == context
            assert args[args.index("--text-pos-stretch") + 1] == "longclip"
    distill = next(stage.args for stage in stages if stage.name == "student-distill")
    assert "--trainable" not in distill and "--text-context-length" not in distill


def test_an_unknown_text_recipe_is_refused():
    with pytest.raises(ValueError, match="known recipes"):
        DemoPlan(stage2_text="longclip-frozen")
    with pytest.raises(ValueError, match="needs a stretch"):
        TextRecipe(context=248, stretch=None, train_text=True)


def fake_model(long_t2i_hits, rng):
    hits = {metric: (rng.random(200) < 0.1).tolist() for metric in PAIRED_METRICS}
    hits["long T2I R@1"] = [i < long_t2i_hits for i in range(200)]
    table = {header: 0.0 for header, _, _ in COLUMNS}
    table["long T2I R@1"] = long_t2i_hits / 2
    return {"table": table, "hits": hits, "gates": {}}


def test_reading_names_the_parallel_student_only_when_it_ran():
    rng = np.random.default_rng(0)
    collected = {"CLIP teacher": fake_model(10, rng), "student, distilled": fake_model(10, rng),
                 "student, fine-tuned (ours)": fake_model(40, rng), "control: teacher fine-tuned": fake_model(20, rng)}
    lines = reading(collected, bootstrap(collected, seed=0))
    assert not any("Parallel memory" in line for line in lines)
    assert any("the memory helped beyond what fine-tuning alone gives" in line for line in lines)
    memory = next(line for line in lines if line.startswith("**Memory or fine-tuning?**"))
    long = next(line for line in lines if line.startswith("**Long captions.**"))
    assert "land at 10.0-20.0, partly outside the 20-80 window" in long
    assert "+10.0 points" in memory and "would be found 80% of the time" in memory
    detectable = bootstrap(collected, seed=0)["differences"][0]
    assert detectable["detectable"] == pytest.approx(1.43 * detectable["half_width"], rel=0.01)
    assert f"a true difference of {detectable['detectable']:.1f} points" in memory

    collected["parallel student, fine-tuned"] = dict(fake_model(20, rng), gates={"2": {"mean": 0.001, "max": 0.004}})
    lines = reading(collected, bootstrap(collected, seed=0))
    parallel = next(line for line in lines if line.startswith("**Parallel memory.**"))
    assert "10.0 against the control's 10.0" in parallel and "exactly the same queries" in parallel
    assert "mean |gate| of 0.001 (largest 0.004)" in parallel and "barely switched on" in parallel
    collected["parallel student, fine-tuned"]["gates"] = {"2": {"mean": 0.2, "max": 0.6}}
    parallel = next(line for line in reading(collected, bootstrap(collected, seed=0))
                    if line.startswith("**Parallel memory.**"))
    assert "mean |gate| of 0.200 (largest 0.600)" in parallel and "takes part in every memory block" in parallel


@pytest.mark.parametrize("values, where", [([24.0, 24.7, 25.9], "land at 24.0-25.9, inside"),
                                           ([9.2, 11.1], "land at 9.2-11.1, below"),
                                           ([85.0], "land at 85.0, above"), ([15.0, 30.0], "partly outside")])
def test_headroom_says_where_the_fine_tuned_models_land_against_the_window(values, where):
    assert where in headroom(values) and "20-80 window" in headroom(values)


def test_gate_sizes_reads_the_parallel_gates_of_a_saved_model(tmp_path):
    parallel = memclip.create_model("Test-Micro-mem", memory={"mode": "parallel"})
    gates = memory_gates(parallel)
    with torch.no_grad():
        gates[0].fill_(-0.02)
        gates[1][0] = 0.5
    memclip.save_pretrained(parallel, tmp_path / "parallel")
    memclip.save_pretrained(memclip.create_model("Test-Micro-mem"), tmp_path / "replace")
    sizes = gate_sizes(tmp_path / "parallel")
    assert sizes["1"] == pytest.approx({"mean": 0.02, "max": 0.02})
    assert sizes["2"]["max"] == pytest.approx(0.5) and sizes["2"]["mean"] == pytest.approx(0.5 / gates[1].numel())
    assert gate_sizes(tmp_path / "replace") == {}
