"""Marking R@1 (the capacity study's metric): candidate captions, ranks, the text-feature cache and the CLI."""
import json

import pytest
import torch

from memclip_train.eval import ModelRef
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
