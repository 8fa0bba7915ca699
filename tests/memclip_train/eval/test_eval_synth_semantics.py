"""Semantic retrieval and zero-shot labels from the synthetic world's scene graphs."""
import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from memclip_train.eval.__main__ import _breakdown
from memclip_train.dataset_files import LayoutError
from memclip_train.eval.synth_semantics import (satisfies, semantic_hits, short_claims, synth_semantic_results,
                                                zeroshot_breakdown)
from memclip_train.eval.tables import confusions_table, salience_table
from memclip_train.synth import generate_world
from memclip_train.zeroshot.registry import load_zeroshot_set
from memclip_train.zeroshot.synth_scenes import SynthScenes, load_scenes, prompt_grid, salience_group
from memclip_train.synth.config import SynthConfig


def scene(background, *objects, salient=0):
    keys = ("shape", "colour", "size", "fill")
    return {"background": background, "objects": [dict(zip(keys, o)) for o in objects], "salient": salient}


RED_STAR = ("star", "red", "large", "solid")
BLUE_RING = ("ring", "blue", "small", "outline")


def test_an_image_satisfies_a_caption_when_one_object_has_every_stated_attribute():
    claims = short_claims(scene("grey", RED_STAR, BLUE_RING))
    assert claims == {"shape": "star", "colour": "red", "size": "large", "fill": "solid", "background": "grey"}
    assert satisfies(scene("grey", BLUE_RING, RED_STAR, salient=0), claims)      # not salient there: still a match
    assert not satisfies(scene("navy", RED_STAR), claims)                        # other background
    assert not satisfies(scene("grey", ("star", "red", "small", "solid")), claims)
    assert not satisfies(scene("grey", ("star", "blue", "large", "solid"), ("square", "red", "large", "solid")),
                         claims)                                                 # attributes split over objects


def test_semantic_hits_count_an_equivalent_image_as_a_hit():
    scenes = [scene("grey", RED_STAR), scene("grey", RED_STAR, BLUE_RING), scene("navy", BLUE_RING)]
    similarity = torch.tensor([[0.1, 0.9, 0.0],     # query 0 ranks image 1 first: same red star on grey -> hit
                               [0.0, 0.2, 0.9],     # query 1 ranks image 2 first: a navy scene -> miss at 1
                               [0.0, 0.5, 0.4]])    # query 2 (blue ring on navy) ranks image 1 first: grey -> miss
    hits = semantic_hits(similarity, scenes, ks=(1, 2))
    assert hits[1] == [True, False, False]
    assert hits[2] == [True, True, True]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("semantic") / "w"
    generate_world(SynthConfig(seed=2, train=0, val=0, retrieval=30, segmentation=0, pairs_per_pattern=0), folder,
                   workers=1, progress=False)
    return folder


def test_scenes_file_follows_the_retrieval_images(world):
    scenes = load_scenes(world)
    assert len(scenes.scenes) == 30 == len(list((world / "retrieval" / "image").glob("*.jpg")))
    captions = json.loads((world / "retrieval" / "captions_short.json").read_text())
    first = {}
    for annotation in captions["annotations"]:
        first.setdefault(annotation["image_id"], annotation["caption"])
    for index, graph in enumerate(scenes.scenes):
        obj = scenes.salient(index)
        assert f"{obj['colour']} {obj['shape']}" in first[index] and graph["background"] in first[index]


def test_a_perfect_embedding_scores_full_semantic_recall(world):
    """Features that encode every stated attribute exactly: semantic R@1 is 100%."""
    scenes = load_scenes(world)
    vocab = {a: scenes.values(a) for a in ("shape", "colour", "size", "fill", "background")}

    def encode(stated):
        parts = [F.one_hot(torch.tensor(vocab[a].index(stated[a])), len(vocab[a])).float() for a in vocab]
        return F.normalize(torch.cat(parts), dim=0)

    features = torch.stack([encode(short_claims(s)) for s in scenes.scenes])
    result = synth_semantic_results(features, features.clone(), scenes)
    assert result["metrics"]["semantic_t2i_R@1"] == 100.0
    assert len(result["hits"]["semantic_t2i_R@1"]) == 30
    torch.manual_seed(0)
    blind = synth_semantic_results(F.normalize(torch.randn(30, 16), dim=1), F.normalize(torch.randn(30, 16), dim=1),
                                   scenes)
    assert blind["metrics"]["semantic_t2i_R@1"] < 50


@pytest.mark.parametrize("name, attribute, classes", [("synth-shapes", "shape", 10), ("synth-colours", "colour", 11),
                                                      ("synth-sizes", "size", 3)])
def test_zero_shot_datasets_label_the_salient_object(world, name, attribute, classes):
    dataset = load_zeroshot_set(name, world)
    scenes = load_scenes(world)
    prompts, _ = prompt_grid(scenes)
    assert len(prompts) == len(set(prompts)) == 3 * 3 * 11 * 10 * 5
    assert dataset.num_classes == classes and len(dataset.images) == 30
    for index, label in enumerate(dataset.labels):
        assert dataset.class_names[label] == scenes.salient(index)[attribute]
        assert dataset.images[index].name == f"{index}.jpg"
    for value, prompts_of_class in zip(dataset.class_names, dataset.class_prompts):
        assert len(prompts_of_class) == len(prompts) // classes
        if attribute != "size":
            assert all(f" {value} " in f" {p} " for p in prompts_of_class)


def test_worlds_without_scene_graphs_get_a_clear_error(tmp_path, world):
    (tmp_path / "world.json").write_text((world / "world.json").read_text())
    with pytest.raises(LayoutError, match="scenes.jsonl"):
        load_scenes(tmp_path)


def test_salience_groups_say_whether_size_alone_shows_the_captioned_object():
    small_star = ("star", "red", "small", "solid")
    assert salience_group(scene("grey", RED_STAR)) == "alone"
    assert salience_group(scene("grey", RED_STAR, BLUE_RING)) == "largest"
    assert salience_group(scene("grey", RED_STAR, ("ring", "blue", "large", "outline"))) == "tied"
    assert salience_group(scene("grey", small_star, BLUE_RING, salient=1)) == "tied"   # two small objects


def test_zeroshot_breakdown_splits_accuracy_by_salience_and_counts_confusions():
    scenes = SynthScenes([scene("grey", RED_STAR),                                          # alone
                          scene("grey", RED_STAR, BLUE_RING),                               # largest
                          scene("grey", ("ring", "blue", "large", "solid"), RED_STAR),       # tied
                          scene("grey", ("ring", "blue", "large", "solid"), RED_STAR)],      # tied
                         {"shapes": ["star", "ring", "heart"]})
    result = {"ranks": [0, 0, 1, 2], "predictions": [0, 0, 2, 2]}   # both tied rings called hearts
    breakdown = zeroshot_breakdown(result, scenes, "shape")
    assert breakdown["by_salience"] == {"alone": {"top1": 100.0, "images": 1}, "largest": {"top1": 100.0, "images": 1},
                                        "tied": {"top1": 0.0, "images": 2}}
    assert breakdown["confusions"] == [["ring", "heart", 2]]
    older = zeroshot_breakdown({"ranks": [0, 0, 1, 2]}, scenes, "shape")     # results stored before predictions
    assert older["confusions"] == [] and older["by_salience"]["tied"]["top1"] == 0.0
    with pytest.raises(ValueError, match="skipped"):
        zeroshot_breakdown({"ranks": [0, 0]}, scenes, "shape")
    tables = {"teacher": {"synth-shapes": breakdown}}
    assert salience_table(tables, ["synth-shapes"], ("alone", "largest", "tied")).splitlines()[2] == \
        "| teacher | 100.0 | 100.0 | 0.0 |"
    assert "tied (n=2)" in salience_table(tables, ["synth-shapes"], ("alone", "largest", "tied"))
    assert "ring -> heart (2)" in confusions_table(tables, ["synth-shapes"])
    # --skip-bad left an image out: no breakdown, and the tables show '-' rather than failing the whole evaluation
    skipped = _breakdown(dict(result, skipped_images=[["4.jpg", "unreadable"]]), scenes, "shape", "teacher")
    assert skipped == {}
    assert salience_table({"teacher": {"synth-shapes": skipped}}, ["synth-shapes"], ("alone",)).splitlines()[2] == \
        "| teacher | - |"
    assert confusions_table({"teacher": {"synth-shapes": skipped}}, ["synth-shapes"]).splitlines()[2] == \
        "| teacher | - |"


def test_a_nan_similarity_is_never_in_the_top_k():
    """torch's topk takes NaN for the largest value: a NaN image used to be every query's first hit."""
    scenes = [scene("grey", RED_STAR), scene("grey", RED_STAR), scene("navy", BLUE_RING)]
    similarity = torch.tensor([[float("nan"), 0.1, 0.9]] * 3)
    hits = semantic_hits(similarity, scenes, ks=(1,))
    assert hits[1] == [False, False, True]


@pytest.mark.parametrize("change, named", [
    (lambda rows: rows.append(dict(rows[3])), "line 31 repeats index 3"),
    (lambda rows: rows[4].update(salient=9), "line 5 has salient 9"),
    (lambda rows: rows[2]["objects"][0].pop("colour"), "line 3 has an object without one of"),
    (lambda rows: rows[7].update(index=99), "line 8 has index 99"),
])
def test_malformed_scene_graphs_are_named_by_line(tmp_path, world, change, named):
    """A repeated, missing or malformed scene graph used to end in a KeyError or IndexError, or to misalign the
    zero-shot labels with the images."""
    copy = tmp_path / "w"
    shutil.copytree(world, copy)
    path = copy / "retrieval" / "scenes.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    change(rows)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(LayoutError, match=named):
        load_scenes(copy)


def test_a_salient_value_outside_the_vocabulary_is_named(tmp_path, world):
    copy = tmp_path / "w"
    shutil.copytree(world, copy)
    path = copy / "retrieval" / "scenes.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["objects"][rows[0]["salient"]]["shape"] = "heptagon"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(LayoutError, match="image 0's salient shape 'heptagon' is not in world.json's vocabulary"):
        load_zeroshot_set("synth-shapes", copy)
