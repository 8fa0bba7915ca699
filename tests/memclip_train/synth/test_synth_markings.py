"""Named markings (the capacity study's knowledge axis): off by default, deterministic, named only in long captions,
recorded in every scene graph, invisible to the masks, and distinguishable for hundreds of markings."""
import io
import json
import random
import tarfile
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from synth_helpers import tiny_config, tree_digest

from memclip_train.synth import WorldConfig, generate_world, render_scene, sample_scene
from memclip_train.synth.markings import MarkingConfig, badge_coverage, marking_glyphs, marking_names
from memclip_train.synth.render import RenderConfig, cell_edges
from memclip_train.synth.world import marked_object, salient_object

MARKED = WorldConfig(markings=MarkingConfig(count=16, family=4))


def marked_config(seed: int = 0):
    return tiny_config(seed=seed, world=MARKED)


@pytest.fixture(scope="module")
def marked_world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("marked") / "w"
    generate_world(marked_config(), folder, workers=1, progress=False)
    return folder


def shard_samples(folder):
    samples = []
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tar:
            members = {}
            for member in tar:
                key, _, ext = member.name.partition(".")
                members.setdefault(key, {})[ext] = tar.extractfile(member).read()
            samples += [members[key] for key in sorted(members)]
    return samples


def test_markings_are_layered_on_the_same_scenes():
    """A world with markings draws the same scenes as one without; only the salient object grows and is marked."""
    for index in range(200):
        plain = sample_scene(random.Random(index), WorldConfig())
        marked = sample_scene(random.Random(index), MARKED)
        target = marked_object(marked)
        assert target is not None and target.size == "large" and target == salient_object(marked, MARKED)
        assert target.marking in MARKED.markings.names()
        assert sum(o.marking is not None for o in marked.objects) == 1
        assert (plain.background, plain.texture, plain.texture_seed) == (marked.background, marked.texture,
                                                                        marked.texture_seed)
        assert [replace(o, size="large", marking=None) for o in plain.objects] == \
               [replace(o, size="large", marking=None) for o in marked.objects]
        assert marked_object(plain) is None


def test_a_world_without_markings_records_none(tiny_world):
    world = json.loads((tiny_world / "world.json").read_text())
    assert "markings" not in world["vocabularies"]
    text = (tiny_world / "retrieval" / "scenes.jsonl").read_text() + (tiny_world / "pairs" / "pairs.jsonl").read_text()
    assert "marking" not in text
    for sample in shard_samples(tiny_world / "train"):
        assert all("marking" not in obj for obj in json.loads(sample["json"])["objects"])


def test_a_marked_world_is_byte_identical_across_worker_counts_and_changes_with_the_seed(marked_world, tmp_path):
    generate_world(marked_config(), tmp_path / "again", workers=2, chunk_size=5, progress=False)
    assert tree_digest(marked_world) == tree_digest(tmp_path / "again")
    generate_world(marked_config(seed=1), tmp_path / "other", workers=1, progress=False)
    assert tree_digest(marked_world)["train/000000.tar"] != tree_digest(tmp_path / "other")["train/000000.tar"]


def test_names_appear_in_long_captions_only(marked_world):
    names = json.loads((marked_world / "world.json").read_text())["vocabularies"]["markings"]["names"]
    assert names == list(marking_names(16))

    def named(text):
        return [n for n in names if n in text]

    for split in ("train", "val"):
        for sample in shard_samples(marked_world / split):
            record = json.loads(sample["json"])
            marked = [obj for obj in record["objects"] if "marking" in obj]
            assert len(marked) == 1
            assert named(record["long"]) == [marked[0]["marking"]]
            assert record["long"].count(marked[0]["marking"]) == 1
            assert not named(sample["txt"].decode()) and not named(record["short"])
    short = json.loads((marked_world / "retrieval" / "captions_short.json").read_text())
    assert short["annotations"] and not any(named(a["caption"]) for a in short["annotations"])
    for line in (marked_world / "pairs" / "pairs.jsonl").read_text().splitlines():
        pair = json.loads(line)
        for side in ("a", "b"):
            assert not named(pair[side]["short"])
            assert named(pair[side]["caption"]) == [o["marking"] for o in pair[side]["objects"] if "marking" in o]


def test_scene_graphs_record_the_marking_of_the_salient_object(marked_world):
    for line in (marked_world / "retrieval" / "scenes.jsonl").read_text().splitlines():
        scene = json.loads(line)
        marked = [i for i, obj in enumerate(scene["objects"]) if "marking" in obj]
        assert marked == [scene["salient"]]
        assert scene["objects"][marked[0]]["size"] == "large"
        caption = (marked_world / "retrieval" / "caption" / f"{scene['index']}.txt").read_text()
        assert scene["objects"][marked[0]]["marking"] in caption


def test_a_family_is_one_scene_with_different_markings(marked_world):
    samples = [json.loads(s["json"]) for s in shard_samples(marked_world / "train")]
    images = [np.asarray(Image.open(io.BytesIO(s["jpg"]))) for s in shard_samples(marked_world / "train")]
    for start in range(0, len(samples), 4):
        family = samples[start:start + 4]
        markings = [next(o["marking"] for o in s["objects"] if "marking" in o) for s in family]
        assert len(set(markings)) == 4
        strip = [{**s, "objects": [{k: v for k, v in o.items() if k != "marking"} for o in s["objects"]],
                  "long": s["long"].replace(m, "NAME")} for s, m in zip(family, markings)]
        assert all(s == strip[0] for s in strip[1:])
        assert not np.array_equal(images[start], images[start + 1])
    assert samples[0]["objects"] != samples[4]["objects"]


def test_markings_leave_the_masks_unchanged_and_paint_only_the_badge():
    config = RenderConfig()
    edges = cell_edges(config.image_size)
    for index in range(40):
        scene = sample_scene(random.Random(index), MARKED)
        marked = render_scene(scene, MARKED, config)
        plain_scene = scene.with_objects([o.replace(marking=None) for o in scene.objects])
        plain = render_scene(plain_scene, MARKED, config)
        assert np.array_equal(marked.instances, plain.instances)
        assert marked.bboxes == plain.bboxes
        changed = np.argwhere((marked.image != plain.image).any(axis=-1))
        assert len(changed) > 20
        row, column = marked_object(scene).cell
        side = min(edges[column + 1] - edges[column], edges[row + 1] - edges[row])
        centre = np.array([(edges[row] + edges[row + 1]) / 2, (edges[column] + edges[column + 1]) / 2])
        assert np.abs(changed + 0.5 - centre).max() <= MARKED.markings.badge * side / 2 + 1


def test_hundreds_of_glyphs_stay_far_apart_and_distinguishable_at_64_px():
    glyphs = marking_glyphs(1000, 4, 3).reshape(1000, -1)
    distances = (glyphs[:, None, :] != glyphs[None, :, :]).sum(-1) + 16 * np.eye(1000, dtype=int)
    assert distances.min() >= 3
    names = marking_names(1000)
    assert len(set(names)) == 1000 and all(len(n) >= 5 and n.isalpha() for n in names)
    assert marking_names(16) == names[:16]
    # As drawn at 64 px (a grid cell is 21 px, a bit 2.1 px), any two of 400 badges differ by more ink than one whole
    # bit holds (the three differing bits partly cancel inside shared pixels: the closest pair differs by 8.5 px).
    side = cell_edges(64)[1]
    inks = np.stack([badge_coverage(g.astype(np.uint8).tobytes(), 4, side, 0.5, 4)[0].ravel()
                     for g in marking_glyphs(400, 4, 3)])
    bit_area = (0.5 * side / 5) ** 2
    pairwise = np.abs(inks[:, None, :] - inks[None, :, :]).sum(-1) + 1e9 * np.eye(400)
    assert pairwise.min() > bit_area


@pytest.mark.parametrize("settings, message", [
    ({"count": 3, "family": 4}, "family <= count"),
    ({"count": 0, "family": 2}, "family <= count"),
    ({"count": 1001}, "MarkingConfig.count"),
    ({"count": 8, "badge": 1.5}, "MarkingConfig.badge"),
])
def test_bad_marking_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        MarkingConfig(**settings)


def test_the_cli_writes_markings_only_when_asked(tmp_path):
    from memclip_train.synth.__main__ import main

    main(["--out", str(tmp_path / "w"), "--train", "8", "--val", "0", "--retrieval", "4", "--segmentation", "0",
          "--pairs-per-pattern", "0", "--markings", "8", "--marking-family", "2", "--no-progress"])
    vocabulary = json.loads((tmp_path / "w" / "world.json").read_text())["vocabularies"]["markings"]
    assert vocabulary["count"] == 8 and vocabulary["family"] == 2 and len(vocabulary["glyphs"]) == 8
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "bad"), "--markings", "2", "--marking-family", "4", "--no-progress"])
