"""The slot probe (`python -m memclip_train.study capacity`): identities, the cached rebuild, the bits metric, the
arms' costs, the gates, the lr rule, the registered reading and a resumable end-to-end run at toy size."""
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

import memclip
from memclip.names_text import random_names
from memclip_train.study.__main__ import main as study_main
from memclip_train.study.capacity import gates as gate_checks
from memclip_train.study.capacity.analysis import summarise, tables
from memclip_train.study.capacity.features import SlotProbe, cache_features
from memclip_train.study.capacity.identities import all_identities, identity_order, nuisances, render_scenes
from memclip_train.study.capacity.metrics import bits_stored, calibrate_scale, mean_log_likelihood, score_queries
from memclip_train.study.capacity.plan import CapacityPlan
from memclip_train.study.capacity.slots import Arm, arm_costs
from memclip_train.synth.render import RenderConfig
from memclip_train.synth.world import WorldConfig

WORLD = WorldConfig()


def test_identities_are_every_visible_combination_in_a_nested_order():
    assert len(all_identities(WORLD)) == 76_950
    order = identity_order(WORLD, 0)
    assert len(set(order)) == len(order) and order[:5] != all_identities(WORLD)[:5]
    assert identity_order(WORLD, 0)[:100] == order[:100] and identity_order(WORLD, 1)[:100] != order[:100]
    scenes = render_scenes(WORLD, order[:50], 4, seed=0)
    assert len(scenes) == 200 and all(len(scene.objects) == 1 for scene in scenes)
    assert scenes[4].objects[0].shape == order[1].shape


def test_renders_of_an_identity_are_different_images():
    for index in range(300):
        drawn = nuisances(WORLD, 0, index, 4)
        keys = {(t, 0 if t == "plain" else s % 4 if t == "gradient" else s) for t, s in drawn}
        assert len(keys) == 4
    assert nuisances(WORLD, 0, 7, 4) == nuisances(WORLD, 0, 7, 4) != nuisances(WORLD, 1, 7, 4)


def test_names_are_unit_vectors_that_depend_on_the_seed():
    names = random_names(100, 32, seed=3)
    assert torch.allclose(names.norm(dim=1), torch.ones(100))
    assert torch.equal(names, random_names(100, 32, seed=3)) and not torch.equal(names, random_names(100, 32, 4))


@pytest.fixture(scope="module")
def micro_probe(micro_configs):
    model, _, preprocess = memclip.create_model_and_transforms("Test-Micro")
    return SlotProbe(model, preprocess)


def test_the_cached_rebuild_equals_encode_image(micro_probe, tmp_path):
    render = RenderConfig(image_size=32)
    scenes = render_scenes(WORLD, identity_order(WORLD, 0)[:6], 4, seed=0)
    images = micro_probe.images(scenes, WORLD, render)
    assert micro_probe.rebuild_error(images) < 1e-5
    cached = cache_features(micro_probe, scenes, WORLD, render, tmp_path / "cache", chunk=10, batch_size=4)
    assert cached.shape == (24, 32) and len(list((tmp_path / "cache").glob("*.pt"))) == 3
    direct = micro_probe.model.encode_image(images)
    assert torch.allclose(micro_probe.embed(cached), direct, atol=1e-5)
    # the check is sensitive: another render's features do not rebuild this render's embedding
    assert (micro_probe.embed(cached.roll(1, dims=0)) - direct).abs().max() > 1e-2
    # a chunk written earlier is read back, not recomputed
    (tmp_path / "cache" / "00001.pt").write_bytes(b"")
    with pytest.raises(Exception):
        cache_features(micro_probe, scenes, WORLD, render, tmp_path / "cache", chunk=10, batch_size=4)
    torch.save(torch.full((10, 32), 7.0), tmp_path / "cache" / "00001.pt")
    again = cache_features(micro_probe, scenes, WORLD, render, tmp_path / "cache", chunk=10, batch_size=4)
    assert torch.equal(again[10:20], torch.full((10, 32), 7.0)) and torch.equal(again[:10], cached[:10])


def test_bits_on_known_inputs():
    names = torch.eye(4)
    targets = torch.arange(4)
    scale = 5.0
    perfect = score_queries(names.clone(), targets, names, scale)
    ce = math.log(1 + 3 * math.exp(-scale)) / math.log(2)
    assert torch.allclose(perfect["ce_bits"], torch.full((4,), ce), atol=1e-5)
    assert torch.allclose(perfect["bits"], torch.full((4,), 2 - ce), atol=1e-5) and perfect["hit"].all()
    blind = score_queries(torch.ones(4, 4), targets, names, scale)    # equal cosines: uniform, and a tie misses
    assert torch.allclose(blind["ce_bits"], torch.full((4,), 2.0)) and not blind["hit"].any()
    assert torch.allclose(blind["bits"], torch.zeros(4), atol=1e-5)
    wrong = score_queries(names.roll(1, dims=0), targets, names, scale)   # sure and wrong: CE > log2 K, clamped
    assert (wrong["ce_bits"] > 2).all() and torch.equal(wrong["bits"], torch.zeros(4)) and not wrong["hit"].any()
    assert bits_stored(torch.tensor([0.0, 1.0, 9.0]), 8).tolist() == [3.0, 2.0, 0.0]


def test_the_calibrated_scale_maximises_the_likelihood():
    generator = torch.Generator().manual_seed(0)
    names = random_names(64, 16, seed=0)
    embeddings = names + 0.8 * torch.randn(64, 16, generator=generator)
    targets = torch.arange(64)
    best = calibrate_scale(embeddings, targets, names)
    cos = torch.nn.functional.normalize(embeddings, dim=-1) @ names.T
    true = cos.gather(1, targets[:, None])[:, 0]
    grid = np.exp(np.linspace(0, math.log(1000), 400))
    brute = grid[np.argmax([mean_log_likelihood(cos, true, s) for s in grid])]
    assert abs(math.log(best) - math.log(brute)) < 0.02


def test_arm_costs_put_the_memory_at_the_mlps_flops_and_the_wide_mlp_at_its_parameters():
    base = memclip.MemoryConfig(n_keys=32, heads=4, knn=16, k_dim=64, v_dim=256)
    arms = [Arm("mlp", "mlp"), Arm("memory", "memory", n_keys=32), Arm("wide", "wide", matches="memory"),
            Arm("memory-16k", "memory", n_keys=128)]
    teacher_mlp = memclip.create_model("ViT-Tiny-8").visual.transformer.resblocks[-1].mlp
    costs = arm_costs(arms, teacher_mlp, base, 128)
    assert costs["mlp"]["parameters"] == 131_712 and costs["memory"]["parameters"] == 369_280
    assert abs(costs["wide"]["parameters"] - costs["memory"]["parameters"]) <= 257
    assert costs["memory-16k"]["parameters"] > 10 * costs["memory"]["parameters"]
    assert 0.8 < costs["memory"]["flops"] / costs["mlp"]["flops"] < 1.2
    assert costs["memory-16k"]["flops"] < 1.3 * costs["mlp"]["flops"] < costs["wide"]["flops"]


def test_gates_pass_and_fail_on_their_side_of_the_threshold():
    assert gate_checks.visible(0.96, 100, 0.95).passed and not gate_checks.visible(0.94, 100, 0.95).passed
    assert gate_checks.binding(0.30, 100, 0.5).passed and not gate_checks.binding(0.5, 100, 0.5).passed
    gate_checks.check([gate_checks.learnable(0.99, 10, 0.95)])
    with pytest.raises(gate_checks.GateFailed, match="G2"):
        gate_checks.check([gate_checks.learnable(0.90, 10, 0.95), gate_checks.binding(0.1, 100, 0.5)])
    features = torch.randn(50, 4, 8)
    features[:, 3] = features[:, :3].mean(dim=1) + 0.01
    assert gate_checks.nearest_centroid_accuracy(features, 3) == 1.0
    assert gate_checks.nearest_centroid_accuracy(torch.randn(200, 4, 8), 3) < 0.2


def test_plans_are_checked():
    with pytest.raises(ValueError, match="primary arms"):
        CapacityPlan(arms=("mlp", "wide"))
    with pytest.raises(ValueError, match="matches"):
        CapacityPlan(arms=("mlp", "memory", "wide-16k"))
    with pytest.raises(ValueError, match="ascending"):
        CapacityPlan(ks=(4096, 1024))
    with pytest.raises(ValueError, match="lr seed"):
        CapacityPlan(seeds=(0, 100))
    plan = CapacityPlan()
    assert plan.primary_ks == (16384, 32768) and len(plan.seeds + plan.primary_seeds) >= 3


def _fake(arm, k, seed, rate, exposures=100):
    return {"key": f"{arm}-{k}-{seed}-{exposures}", "arm": arm, "k": k, "seed": seed, "exposures": exposures,
            "lr": 0.01, "value_lr": None, "rate": rate}


def _arrays(record):
    rng = np.random.default_rng(record["seed"] * 1000 + record["k"])
    hit = (rng.random(record["k"]) < record["rate"]).astype(np.float64)
    bits = hit * math.log2(record["k"])
    return {"heldout_hit": hit, "heldout_bits": bits, "train_hit": hit, "train_bits": bits}


@pytest.mark.parametrize("memory, outcome", [(0.6, "the memory stores more"), (0.2, "the memory stores less"),
                                             (0.4, "no difference detected")])
def test_the_registered_reading(memory, outcome):
    plan = CapacityPlan(ks=(1024, 2048, 4096), check_k=2048, arms=("mlp", "memory"))
    points = [_fake(arm, k, seed, rate) for k in plan.ks for seed in (0, 1, 2)
              for arm, rate in (("mlp", 0.4), ("memory", memory))]
    costs = {arm: {"label": arm, "parameters": 100, "flops": 10} for arm in ("mlp", "memory")}
    summary = summarise(plan, points, _arrays, costs)
    assert summary["verdict"]["outcome"] == outcome
    primary = summary["primary"]
    assert [test["k"] for test in primary] == [2048, 4096] and all(len(t["seeds"]) == 3 for t in primary)
    assert all("p_holm" in test for test in primary)
    cell = summary["cells"]["100"]["memory"]["4096"]
    assert cell["bits"]["value"] == pytest.approx(np.mean([_arrays(_fake("memory", 4096, s, memory))[
        "heldout_bits"].sum() for s in (0, 1, 2)]))
    text = tables(summary)
    assert "| primary | memory - mlp | 4,096 | 3 |" in text and outcome in text


@pytest.mark.slow
def test_a_quick_run_passes_its_gates_and_a_rerun_skips_finished_points(micro_configs, tmp_path, capsys):
    teacher = tmp_path / "teacher"
    memclip.save_pretrained(memclip.create_model("Test-Micro"), teacher)
    out = tmp_path / "capacity"
    args = ["capacity", "--out", str(out), "--quick", "--teacher", str(teacher), "--threads", "1"]
    assert study_main(args) == 0
    first = capsys.readouterr().out
    assert "[gate] G1" in first and "[gate] G3" in first and "[lr] memory" in first
    results = json.loads((out / "capacity_results.json").read_text())
    assert results["summary"]["gates"]["passed"] and results["summary"]["primary"]
    assert {p["arm"] for p in results["points"]} == {"mlp", "memory", "wide"}
    assert (out / "capacity_k.png").stat().st_size > 10_000 and (out / "capacity_tradeoff.png").is_file()
    checks = json.loads((out / "checks.json").read_text())
    assert checks["rebuild_max_abs_error"] < 1e-5
    finished = {p.name: p.stat().st_mtime_ns for p in (out / "points").glob("*.json")}

    assert study_main(args) == 0
    again = capsys.readouterr().out
    assert "[run]" not in again and "Pre-registered reading" in again
    assert {p.name: p.stat().st_mtime_ns for p in (out / "points").glob("*.json")} == finished

    # A worker that runs one arm still reports every arm's lr, read from the lr points on disk.
    assert study_main(args + ["--arms-to-run", "mlp"]) == 0
    assert "[run]" not in capsys.readouterr().out
    again = json.loads((out / "capacity_results.json").read_text())["summary"]["lr"]
    assert again == results["summary"]["lr"] and set(again) == {"mlp", "memory", "wide"}


@pytest.mark.slow
def test_a_failing_gate_stops_the_grid(micro_configs, tmp_path, monkeypatch, capsys):
    teacher = tmp_path / "teacher"
    memclip.save_pretrained(memclip.create_model("Test-Micro"), teacher)
    quick = CapacityPlan.quick
    monkeypatch.setattr(CapacityPlan, "quick", classmethod(lambda cls: dataclasses.replace(quick(),
                                                                                           gate_learnable=1.01)))
    out = tmp_path / "capacity"
    assert study_main(["capacity", "--out", str(out), "--quick", "--teacher", str(teacher)]) == 3
    printed = capsys.readouterr().out
    assert "gate failed" in printed and "G2" in printed
    gates = json.loads((out / "gates.json").read_text())
    assert not gates["passed"] and [g["passed"] for g in gates["gates"]] == [True, False, True]
    # only the MLP ran: its lr selection and the two gate points; no other arm, no other grid point
    assert {p.name.split("-")[1] for p in (out / "points").glob("*.json")} == {"mlp"}
    assert len(list((out / "points").glob("*.json"))) == 2
    assert not list((out / "lr").glob("lr-memory*"))


@pytest.mark.slow
def test_stage_b_runs_the_real_trainer_on_named_identities(micro_configs, tmp_path, capsys):
    teacher = tmp_path / "teacher"
    memclip.save_pretrained(memclip.create_model("Test-Micro"), teacher)
    out = tmp_path / "e2e"
    args = ["capacity-e2e", "--out", str(out), "--quick", "--teacher", str(teacher), "--model", "Test-Micro",
            "--threads", "1"]
    assert study_main(args) == 0
    printed = capsys.readouterr().out
    assert printed.count("python -m memclip_train.main") == 3 and "--text-tower names --text-names 32" in printed
    assert "--distill" in printed and "--memory layers=2" in printed
    results = json.loads((out / "e2e_results.json").read_text())
    for name in ("memory-student", "control"):
        scored = results["models"][name]
        assert len(scored["heldout_bits_per_identity"]) == 32 and 0 <= scored["heldout_r1"] <= 100
    student = memclip.create_model(str(out / "logs" / "memory-student" / "final"))
    assert list(memclip.memory_layers_of(student)) == [2]
    assert torch.equal(student.name_table, random_names(32, 32, 0))   # the slot probe's names, seed 0
    assert "memory student - control" in (out / "e2e_table.md").read_text()
    assert study_main(args) == 0 and "python -m memclip_train.main" not in capsys.readouterr().out


def test_a_point_claimed_by_a_live_worker_is_left_to_it(tmp_path):
    import os
    import subprocess
    import sys
    from memclip_train.study.capacity.pipeline import claim_point
    claim = tmp_path / "points" / "grid-mlp.claim"
    assert claim_point(claim) == claim and claim.read_text() == str(os.getpid())
    claim.write_text(str(os.getppid()))            # a live process holds it
    assert claim_point(claim) is None
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    claim.write_text(str(dead.pid))                # its holder died: taken over
    assert claim_point(claim) == claim and claim.read_text() == str(os.getpid())
