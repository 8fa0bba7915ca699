"""Salience: in a strict world the object a short caption names is always strictly the largest of its scene."""
import json
import random

import pytest

from memclip_train.synth import WorldConfig, sample_scene, salient_object
from memclip_train.synth.__main__ import main
from memclip_train.synth.markings import MarkingConfig
from memclip_train.synth.stream import SceneStream, StreamConfig
from memclip_train.synth.world import Scene, SceneObject, is_strictly_salient, make_salience_strict, marked_object
from memclip_train.synth.batch_stream import parse_stream_spec

STRICT = WorldConfig()
TIE_BREAK = WorldConfig(salience="tie-break")
RANK = {name: i for i, name in enumerate(STRICT.sizes)}


def scene_of(*objects):
    """A scene of (shape, size, position, fill) objects."""
    return Scene("grey", "plain", 0, tuple(SceneObject(shape, "red", size, position, None, fill)
                                          for shape, size, position, fill in objects))


def test_the_default_world_is_strict_and_its_salient_object_is_always_strictly_the_largest():
    assert STRICT.salience == "strict"
    for index in range(2000):
        scene = sample_scene(random.Random(index), STRICT)
        target = salient_object(scene, STRICT)
        assert all(RANK[o.size] < RANK[target.size] for o in scene.objects if o is not target), scene


def test_a_tie_break_world_keeps_sizes_as_drawn():
    scenes = [sample_scene(random.Random(index), TIE_BREAK) for index in range(500)]
    tied = sum(not is_strictly_salient(scene, TIE_BREAK) for scene in scenes)
    assert 0.2 < tied / len(scenes) < 0.8
    # Strictness touches sizes only: the same draw in both worlds has the same objects where they are.
    for index in range(200):
        strict, loose = sample_scene(random.Random(index), STRICT), sample_scene(random.Random(index), TIE_BREAK)
        assert [o.replace(size="small") for o in strict.objects] == [o.replace(size="small") for o in loose.objects]
        assert salient_object(strict, STRICT).position == salient_object(loose, TIE_BREAK).position


def test_objects_tied_with_the_salient_one_shrink_by_one_size():
    scene = scene_of(("circle", "large", "top-left", "striped"), ("square", "large", "middle", "solid"),
                     ("heart", "medium", "bottom", "solid"), ("ring", "small", "right", "solid"))
    strict = make_salience_strict(scene, STRICT)
    # Objects are kept in reading order: top-left circle, middle square, right ring, bottom heart.
    assert [(o.shape, o.size) for o in strict.objects] == [("circle", "medium"), ("square", "large"),
                                                           ("ring", "small"), ("heart", "medium")]
    assert salient_object(strict, STRICT) == salient_object(scene, STRICT) == scene.objects[1]
    assert make_salience_strict(strict, STRICT) is strict


def test_when_all_are_smallest_the_salient_object_grows_instead():
    scene = scene_of(("circle", "small", "top-left", "outline"), ("star", "small", "left", "solid"))
    strict = make_salience_strict(scene, STRICT)
    assert [(o.shape, o.size) for o in strict.objects] == [("circle", "small"), ("star", "medium")]
    assert salient_object(strict, STRICT).shape == "star" and is_strictly_salient(strict, STRICT)


def test_the_marked_object_is_large_and_strictly_the_largest():
    world = WorldConfig(markings=MarkingConfig(count=4))
    for index in range(300):
        scene = sample_scene(random.Random(index), world)
        marked = marked_object(scene)
        assert marked == salient_object(scene, world) and marked.size == "large"
        assert is_strictly_salient(scene, world)


def test_every_scene_of_a_strict_stream_is_strictly_salient_and_families_still_differ():
    stream = SceneStream(StreamConfig(family_size=4), seed=2)
    captions = set()
    for index in range(100):
        for sample in stream.family(0, index):
            assert is_strictly_salient(sample["scene"], STRICT)
            captions.add(sample["txt"])
    assert len(captions) > 300


def test_stream_spec_and_world_config_take_the_salience():
    assert parse_stream_spec("synth-stream:salience=tie-break").world == TIE_BREAK
    with pytest.raises(ValueError, match="salience='loud'.*strict"):
        parse_stream_spec("synth-stream:salience=loud")
    with pytest.raises(ValueError, match="at least two sizes"):
        WorldConfig(sizes={"large": 0.9})
    assert WorldConfig(sizes={"large": 0.9}, max_objects=1).salience == "strict"


@pytest.mark.parametrize("salience", ["strict", "tie-break"])
def test_the_cli_records_the_salience_in_world_json(tmp_path, salience):
    out = tmp_path / salience
    main(["--out", str(out), "--salience", salience, "--train", "4", "--val", "0", "--retrieval", "20",
          "--segmentation", "0", "--pairs-per-pattern", "0", "--no-progress"])
    # A world.json without "salience" is a tie-break world: what the generator wrote before salience existed.
    assert json.loads((out / "world.json").read_text())["vocabularies"].get("salience", "tie-break") == salience
    rows = [json.loads(line) for line in (out / "retrieval" / "scenes.jsonl").read_text().splitlines()]
    strict = [all(o["size"] != row["objects"][row["salient"]]["size"]
                  for i, o in enumerate(row["objects"]) if i != row["salient"]) for row in rows]
    assert all(strict) if salience == "strict" else not all(strict)
