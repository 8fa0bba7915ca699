"""The synthetic scene stream: families of hard negatives, determinism, exact resumption, and training from it."""
import json

import pytest
import torch
from train_helpers import assert_resumes_exactly

import memclip
from memclip_train.data.samples import SampleDecoder, SampleFields
from memclip_train.synth.batch_stream import SynthStream, parse_stream_spec
from memclip_train.main import main
from memclip_train.synth import WorldConfig, salient_object, short_caption
from memclip_train.synth.stream import SceneStream, StreamConfig, change_named
from memclip_train.tasks.build import transforms

WORLD = WorldConfig()


@pytest.fixture(scope="module")
def decoder():
    model = memclip.create_model("Test-Micro")
    train, _ = transforms(model)
    return SampleDecoder(SampleFields(captions=("text",)), train, memclip.get_tokenizer("Test-Micro"), seed=5)


def differing_words(a: str, b: str):
    return [(x, y) for x, y in zip(a.split(), b.split()) if x != y]


def test_a_family_differs_in_one_attribute_of_the_salient_object():
    families = [SceneStream(StreamConfig(family_size=4), seed=0).family(0, i) for i in range(30)]
    changed = 0
    for family in families:
        assert len(family) == 4
        for a, b in zip(family, family[1:]):
            scene_a, scene_b = a["scene"], b["scene"]
            if scene_b.background != scene_a.background:   # a fresh scene when no variant was possible
                continue
            changed += 1
            before, after = salient_object(scene_a, WORLD), salient_object(scene_b, WORLD)
            assert before.position == after.position
            fields = [f for f in ("shape", "colour", "size", "fill") if getattr(before, f) != getattr(after, f)]
            assert len(fields) == 1, (before, after)
            others_a = [o for o in scene_a.objects if o.position != before.position]
            others_b = [o for o in scene_b.objects if o.position != after.position]
            assert others_a == others_b
            assert a["txt"] == short_caption(scene_a, WORLD) and a["txt"] != b["txt"]
    assert changed >= 80


def test_changing_the_salient_object_never_changes_which_object_is_named():
    import random
    rng = random.Random(0)
    from memclip_train.synth import sample_scene
    for _ in range(300):
        scene = sample_scene(rng, WORLD)
        variant = change_named(rng, scene, WORLD, salient_object(scene, WORLD).position)
        if variant is not None:
            assert salient_object(variant, WORLD).position == salient_object(scene, WORLD).position


def test_families_can_name_another_object_and_then_change_that_one():
    stream = SceneStream(StreamConfig(family_size=4, other_object_rate=1.0), seed=0)
    named_other = changed = 0
    for index in range(60):
        samples = stream.family(0, index)
        first = samples[0]["scene"]
        if len(first.objects) < 2:
            continue
        salient = salient_object(first, WORLD)
        named = [o for o in first.objects if samples[0]["txt"] == short_caption(first, WORLD, o)]
        assert named and salient not in named, samples[0]["txt"]
        named_other += 1
        for a, b in zip(samples, samples[1:]):
            scene_a, scene_b = a["scene"], b["scene"]
            if scene_b.background != scene_a.background:   # a fresh scene: it names its salient object again
                assert b["txt"] == short_caption(scene_b, WORLD)
                break
            moved = [(x, y) for x, y in zip(scene_a.objects, scene_b.objects) if x != y]
            assert len(moved) == 1 and moved[0][0].position != salient.position, "only the named object changes"
            assert salient_object(scene_b, WORLD) == salient, "the salient object stays the salient one"
            assert b["txt"] == short_caption(scene_b, WORLD, moved[0][1]) and b["txt"] != a["txt"]
            changed += 1
    assert named_other >= 40 and changed >= 80


def test_the_other_object_rate_is_the_fraction_of_families_naming_another_object():
    stream = SceneStream(StreamConfig(other_object_rate=0.5), seed=2)
    other = multi = 0
    for index in range(300):
        sample = stream.family(0, index)[0]
        if len(sample["scene"].objects) > 1:
            multi += 1
            other += sample["txt"] != short_caption(sample["scene"], WORLD)
    assert 0.4 < other / multi < 0.6


def test_stream_is_a_pure_function_of_seed_epoch_and_index():
    a, b = SceneStream(StreamConfig(), seed=3), SceneStream(StreamConfig(), seed=3)
    assert [s["txt"] for s in a.family(2, 17)] == [s["txt"] for s in b.family(2, 17)]
    assert [s["json"]["long"] for s in a.family(2, 17)] == [s["json"]["long"] for s in b.family(2, 17)]
    assert a.family(2, 17)[0]["scene"] != a.family(3, 17)[0]["scene"]
    assert a.family(2, 17)[0]["scene"] != SceneStream(StreamConfig(), seed=4).family(2, 17)[0]["scene"]


@pytest.mark.parametrize("spec, expected", [
    ("synth-stream", StreamConfig()),
    ("synth-stream:family_size=2,max_objects=3", StreamConfig(family_size=2, world=WorldConfig(max_objects=3))),
    ("synth-stream:other_object_rate=0.25", StreamConfig(other_object_rate=0.25)),
])
def test_stream_specs(spec, expected):
    assert parse_stream_spec(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("synth-stream:colours=3", "unknown settings"),
    ("synth-stream:family_size=two", "not an integer"),
    ("synth-stream:family_size", "KEY=VALUE"),
    ("synth-stream:family_size=0", "family_size"),
    ("synth-stream:other_object_rate=half", "not a number"),
    ("synth-stream:other_object_rate=1.5", r"must lie in \[0, 1\]"),
    ("synth-stream:other_object_rate=nan", r"must lie in \[0, 1\]"),
    ("synth-stream:family_size=4,family_size=2", "family_size is given twice"),
])
def test_bad_stream_specs_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_stream_spec(spec)


def test_batch_size_must_keep_families_together(decoder):
    with pytest.raises(ValueError, match="multiple of the synth stream's family_size 4"):
        SynthStream(StreamConfig(family_size=4), decoder, batch_size=6, batches_per_worker=2)


@pytest.mark.parametrize("workers", [0, 2])
def test_synth_stream_resumes_exactly_and_keeps_families_in_batches(decoder, workers):
    def make():
        stream = SynthStream(StreamConfig(family_size=4), decoder, batch_size=8, batches_per_worker=3 if workers else 6,
                             seed=1)
        return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers), stream

    loader, stream = make()
    stream.set_epoch(1)
    full = list(loader)
    assert len(full) == 6 and full[0]["image"].shape == (8, 3, 32, 32)
    assert not torch.equal(full[0]["image"], full[1]["image"])
    cut = 2
    assert_resumes_exactly(make, 1, full, cut)
    loader, stream = make()
    stream.set_epoch(2)
    assert not torch.equal(next(iter(loader))["image"], full[0]["image"]), "every epoch draws new scenes"


def test_training_from_the_stream(micro_world, tmp_path):
    args = ["--model", "Test-Micro", "--train-data", "synth-stream:family_size=4", "--train-num-samples", "32",
            "--val-data", str(micro_world / "val" / "000000.tar"), "--batch-size", "8", "--epochs", "1",
            "--precision", "fp32", "--workers", "0", "--logs", str(tmp_path), "--name", "stream", "--no-progress"]
    assert main(args) == 0
    rows = [json.loads(line) for line in (tmp_path / "stream" / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "train" and r["step"] == 4 for r in rows)
    assert (tmp_path / "stream" / "final" / "memclip_config.json").is_file()


def test_stream_without_a_sample_count_is_refused(tmp_path, capsys):
    args = ["--model", "Test-Micro", "--train-data", "synth-stream", "--batch-size", "8", "--precision", "fp32",
            "--workers", "0", "--logs", str(tmp_path), "--name", "endless", "--no-progress"]
    assert main(args) == 2
    assert "pass --train-num-samples" in capsys.readouterr().err
