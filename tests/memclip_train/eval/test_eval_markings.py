"""Marking R@1 (the capacity study's metric): candidate captions, ranks, the text-feature cache and the CLI."""
import json
import os
import shutil

import pytest
import torch

import memclip
from memclip_train.eval.models import ModelRef
from memclip_train.eval.__main__ import main
from memclip_train.eval.markings import load_marking_queries, marking_ranks, swap_name, text_tower_digest
from memclip_train.eval.retrieval_sets import LayoutError
from memclip_train.eval.runner import ModelCache
from memclip_train.synth import SynthConfig, WorldConfig, generate_world
from memclip_train.synth.markings import MarkingConfig
from memclip_train.synth.render import RenderConfig


@pytest.fixture(scope="module")
def marked_world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("marked") / "world"
    config = SynthConfig(seed=3, train=0, val=0, retrieval=12, segmentation=0, pairs_per_pattern=0,
                         world=WorldConfig(markings=MarkingConfig(count=20)),
                         render=RenderConfig(image_size=32, supersample=2))
    generate_world(config, folder, workers=1, progress=False)
    return folder


def test_swap_name_replaces_the_whole_word_once():
    assert swap_name("The red star bears the vapen mark.", "vapen", "krara") == "The red star bears the krara mark."
    with pytest.raises(ValueError, match="occurs 0 times"):
        swap_name("The vapenize glyph.", "vapen", "krara")
    with pytest.raises(ValueError, match="occurs 2 times"):
        swap_name("vapen and vapen", "vapen", "krara")


def test_each_image_gets_its_true_caption_first_and_the_same_others_every_time(marked_world):
    queries = load_marking_queries(marked_world, candidates=5)
    assert queries.candidates == 5 and queries.markings == 20 and len(queries.images) == 12
    assert queries.names == load_marking_queries(marked_world, candidates=5).names
    scenes = [json.loads(line) for line in (marked_world / "retrieval" / "scenes.jsonl").read_text().splitlines()]
    for index, (scene, names) in enumerate(zip(scenes, queries.names)):
        true = next(o["marking"] for o in scene["objects"] if "marking" in o)
        assert names[0] == true and len(set(names)) == 5
        texts = queries.texts[index * 5:(index + 1) * 5]
        assert texts[0] == (marked_world / "retrieval" / "caption" / f"{index}.txt").read_text().strip()
        assert {t.replace(n, "NAME") for t, n in zip(texts, names)} == {texts[0].replace(true, "NAME")}
    # More candidates than markings: every marking once.
    assert load_marking_queries(marked_world, candidates=50).candidates == 20


def test_ranks_count_ties_against_the_true_caption():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5],     # image 0: true caption best -> rank 1
                          [1.0, 0.0], [0.0, 1.0], [0.0, 1.0],     # image 1: a tie with the true one -> rank 3
                          [0.0, 1.0], [1.0, 0.0], [0.9, 0.1]])    # image 2: true caption worst -> rank 3
    assert marking_ranks(images, texts, 3).tolist() == [1, 3, 3]


def test_a_world_without_markings_gets_a_clear_error(tmp_path):
    generate_world(SynthConfig(train=0, val=0, retrieval=2, segmentation=0, pairs_per_pattern=0), tmp_path / "w",
                   progress=False)
    with pytest.raises(LayoutError, match="fewer than two markings"):
        load_marking_queries(tmp_path / "w")


def test_the_cli_scores_models_and_reuses_text_features_of_a_shared_tower(marked_world, tmp_path, micro_configs):
    args = ["markings", "--world", str(marked_world), "--model", "Test-Micro", "--label", "micro",
            "--candidates", "4", "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    result = json.loads(next((tmp_path / "markings").glob("micro*.json")).read_text())
    ranks = result["ranks"]["marking"]
    assert len(ranks) == 12 and all(1 <= r <= 4 for r in ranks) and result["metrics"]["chance"] == 25.0
    assert result["metrics"]["marking_R@1"] == pytest.approx(100 * sum(r == 1 for r in ranks) / 12)
    assert len(result["ranks"]["long_t2i"]) == 12
    assert len(list((tmp_path / "markings" / "text_features").glob("*.pt"))) == 1
    assert "| micro |" in (tmp_path / "markings_table.md").read_text()


def test_models_that_share_a_text_tower_share_its_digest(micro_configs):
    torch.manual_seed(0)
    cache = ModelCache(torch.device("cpu"))
    # A ref with a text-tower dict is not hashable: the cache keys it by its JSON form, and loads it once.
    ref = ModelRef("Test-Micro", None, {"context_length": 100, "pos_stretch": "longclip"}, "stretched")
    first = cache.get(ref)
    assert cache.get(ref) is first
    other = cache.get(ModelRef("Test-Micro-mem", None, None, "other"))
    digest = text_tower_digest(first.model)
    with torch.no_grad():
        first.model.visual.proj.mul_(2)
    assert text_tower_digest(first.model) == digest
    assert text_tower_digest(other.model) != digest


def test_a_nan_score_ranks_the_true_caption_last():
    """A NaN true score used to rank first: no candidate compares >= NaN."""
    images = torch.tensor([[1.0, 0.0], [float("nan"), 0.0]])
    texts = torch.tensor([[1.0, 0.0], [float("nan"), 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    assert marking_ranks(images, texts, 3).tolist() == [1, 3]


class Planted:
    """A pickle that runs code when it is unpickled without weights_only."""

    def __init__(self, flag):
        self.flag = str(flag)

    def __reduce__(self):
        return (os.mkdir, (self.flag,))


@pytest.fixture(scope="module")
def micro_weights(tmp_path_factory, micro_configs):
    """Fixed weights, so that two runs encode the same text features (random weights differ from run to run)."""
    torch.manual_seed(0)
    return memclip.save_pretrained(memclip.create_model("Test-Micro"), tmp_path_factory.mktemp("micro") / "model")


def cli(world, out, weights, *extra):
    return ["markings", "--world", str(world), "--model", "Test-Micro", "--pretrained", str(weights), "--label",
            "micro", "--candidates", "4", "--out", str(out), "--no-progress", *extra]


@pytest.mark.parametrize("damage", ["truncated", "planted pickle", "wrong rows"])
def test_a_damaged_text_feature_cache_is_set_aside_and_recomputed(marked_world, tmp_path, damage, micro_weights,
                                                                  monkeypatch):
    """A damaged cache used to crash every rerun; its torch.load had no weights_only, so a planted pickle ran under
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (and would by default on torch 2.2-2.5)."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    assert main(cli(marked_world, tmp_path, micro_weights)) == 0
    first = json.loads(next((tmp_path / "markings").glob("micro*.json")).read_text())
    [cache] = (tmp_path / "markings" / "text_features").glob("*.pt")
    flag = tmp_path / "planted-code-ran"
    if damage == "truncated":
        cache.write_bytes(cache.read_bytes()[:100])
    elif damage == "planted pickle":
        torch.save({"features": Planted(flag), "cut": 0}, cache)
    else:
        torch.save({"features": torch.zeros(3, 32), "cut": 0}, cache)
    assert main(cli(marked_world, tmp_path, micro_weights)) == 0
    assert not flag.exists(), "the cache is read with weights_only=True"
    assert (cache.parent / (cache.name + ".bad")).is_file() and cache.is_file(), "set aside, then rewritten"
    again = json.loads(next((tmp_path / "markings").glob("micro*.json")).read_text())
    assert again["ranks"] == first["ranks"]
    assert torch.load(cache, weights_only=True)["features"].shape[0] == 12 * 4


def test_no_cache_neither_reads_nor_writes_text_features(marked_world, tmp_path, micro_weights):
    assert main(cli(marked_world, tmp_path, micro_weights, "--no-cache")) == 0
    assert not (tmp_path / "markings" / "text_features").exists()


def test_an_image_that_cannot_make_a_query_is_named_or_counted(marked_world, tmp_path, capsys, micro_weights):
    """A scene without a marked object used to end in a StopIteration traceback; one with an unusable caption or a
    missing scene graph dropped or misaligned the queries."""
    world = tmp_path / "world"
    shutil.copytree(marked_world, world)
    scenes = world / "retrieval" / "scenes.jsonl"
    rows = [json.loads(line) for line in scenes.read_text().splitlines()]
    for obj in rows[5]["objects"]:
        obj.pop("marking", None)
    scenes.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(ValueError, match=r"5.jpg, retrieval image: cannot make a marking query \(its scene graph has "
                                         r"0 marked objects"):
        load_marking_queries(world, candidates=4)
    queries = load_marking_queries(world, candidates=4, skip_bad=True)
    assert len(queries.images) == 11 and len(queries.bad_items) == 1
    assert main(cli(world, tmp_path / "out", micro_weights)) == 2
    assert "5.jpg" in capsys.readouterr().err
    assert main(cli(world, tmp_path / "out", micro_weights, "--skip-bad")) == 0
    assert "| skipped |" in capsys.readouterr().out
