"""Short captions name the salient object; long captions describe every object and run past 77 tokens often."""
import random
import re

import open_clip
import pytest

from memclip.truncation import token_lengths
from memclip_train.synth import CaptionConfig, WorldConfig, long_caption, paraphrases, sample_scene, short_caption
from memclip_train.synth.captions import relation
from memclip_train.synth.world import SceneObject, salience_order, salient_object

WORLD = WorldConfig()
CAPTIONS = CaptionConfig()
ROW_WORDS = {0: ("top",), 1: ("middle", "center"), 2: ("bottom",)}
COLUMN_WORDS = {0: ("left",), 1: ("middle", "center"), 2: ("right",)}
SIZE_WORDS = {"small": "small", "medium": "medium", "large": "large"}
FILL_WORDS = {"solid": "solid", "striped": "stripe", "outline": "outline"}
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def sentences(text):
    return [s.strip() for s in re.split(r"(?<=\.)\s+", text) if s.strip()]


def words(sentence):
    return set(re.findall(r"[a-z-]+", sentence.lower()))


def scenes(count, seed=0):
    rng = random.Random(seed)
    return [sample_scene(rng, WORLD) for _ in range(count)]


def describes(sentence, obj):
    """The sentence names the object's shape, colour, size, fill, orientation and both grid coordinates."""
    text, found = sentence.lower(), words(sentence)
    row, column = obj.cell
    return (obj.shape in found and obj.colour in found and SIZE_WORDS[obj.size] in text
            and FILL_WORDS[obj.fill] in text
            and (obj.orientation is None or f"pointing {obj.orientation}" in text)
            and any(w in found for w in ROW_WORDS[row]) and any(w in found for w in COLUMN_WORDS[column]))


def test_long_caption_describes_every_object():
    for index, scene in enumerate(scenes(150)):
        text = long_caption(scene, WORLD, CAPTIONS, random.Random(index))
        parts = sentences(text)
        for obj in scene.objects:
            assert any(describes(s, obj) for s in parts), (obj, text)
        assert scene.background in text


def test_long_caption_counts_are_right():
    for index, scene in enumerate(scenes(100, seed=1)):
        text = long_caption(scene, WORLD, CAPTIONS, random.Random(index)).lower()
        count = len(scene.objects)
        assert ("a single shape" if count == 1 else f"{NUMBERS[count]} shapes") in text
        if count > 1:
            total = next(s for s in sentences(text) if s.startswith("in total"))
            for shape in {o.shape for o in scene.objects}:
                n = sum(o.shape == shape for o in scene.objects)
                noun = shape if n == 1 else (shape + "es" if shape.endswith("s") else shape + "s")
                assert f"{NUMBERS[n]} {noun}" in total, (shape, n, total)


def test_relations_follow_the_grid():
    def at(position):
        return SceneObject("star", "red", "large", position, None, "solid")

    assert relation(at("left"), at("middle")) == "to the left of"
    assert relation(at("top"), at("bottom")) == "above"
    assert relation(at("bottom-right"), at("top-left")) == "below and to the right of"
    assert relation(at("right"), at("top-left")) == "below and to the right of"


def test_sentence_order_varies():
    scene = next(s for s in scenes(50, seed=2) if len(s.objects) >= 3)
    orders = {long_caption(scene, WORLD, CAPTIONS, random.Random(seed)) for seed in range(20)}
    first_sentences = {sentences(text)[0] for text in orders}
    assert len(orders) >= 15 and len(first_sentences) >= 3


def test_short_caption_names_the_salient_object():
    size_rank = {"small": 0, "medium": 1, "large": 2}
    for scene in scenes(150, seed=3):
        short = short_caption(scene, WORLD)
        found = words(short)
        named = [o for o in scene.objects
                 if o.shape in found and o.colour in found and SIZE_WORDS[o.size] in short]
        assert named, (short, scene)
        largest = max(size_rank[o.size] for o in scene.objects)
        assert any(size_rank[o.size] == largest for o in named), (short, scene)
        assert short.endswith(f"on a {scene.background} background") or \
            short.endswith(f"on an {scene.background} background")
        assert len(short.split()) <= 12 and "." not in short


def test_paraphrases_are_distinct_and_start_with_the_short_caption():
    config = CaptionConfig(paraphrases=5)
    for index, scene in enumerate(scenes(40, seed=4)):
        texts = paraphrases(scene, WORLD, config, random.Random(index))
        assert len(texts) == 5 and len(set(texts)) == 5
        assert texts[0] == short_caption(scene, WORLD)
        assert all(len(t.split()) <= 20 for t in texts)


def test_salience_order_describes_the_objects_from_the_most_salient_down():
    config = CaptionConfig(long_order="salience")
    for index, scene in enumerate(scenes(150, seed=6)):
        text = long_caption(scene, WORLD, config, random.Random(index))
        parts = sentences(text)
        assert parts[0].lower().startswith(("the image shows", "this picture contains", "a single shape",
                                            *[f"{n} shapes" for n in NUMBERS])), text
        ordered = salience_order(scene, WORLD)
        assert ordered[0] is salient_object(scene, WORLD)
        # sentence i + 1 describes the i-th most salient object; the details follow
        for position, obj in enumerate(ordered, start=1):
            assert describes(parts[position], obj), (position, obj, text)
        # the same facts as the shuffled caption, only in another order
        shuffled = long_caption(scene, WORLD, CAPTIONS, random.Random(index))
        assert len(sentences(shuffled)) == len(parts)


def test_salience_order_describes_the_salient_object_within_77_tokens():
    tokenizer = open_clip.get_tokenizer("ViT-B-16")
    whole = {}
    for order in ("shuffled", "salience"):
        config = CaptionConfig(long_order=order)
        whole[order] = 0
        for index, scene in enumerate(scenes(200, seed=7)):
            parts = sentences(long_caption(scene, WORLD, config, random.Random(index)))
            prefixes = [" ".join(parts[:n]) for n in range(1, len(parts) + 1)]
            read = [p for p, length in zip(parts, token_lengths(tokenizer, prefixes).tolist()) if length <= 77]
            whole[order] += any(describes(p, salient_object(scene, WORLD)) for p in read)
    assert whole["salience"] == 200 and whole["shuffled"] < 150, whole


def test_enough_long_captions_exceed_77_clip_tokens():
    tokenizer = open_clip.get_tokenizer("ViT-B-16")
    texts = [long_caption(scene, WORLD, CAPTIONS, random.Random(i)) for i, scene in enumerate(scenes(300, seed=5))]
    lengths = token_lengths(tokenizer, texts)
    share = float((lengths > 77).float().mean())
    assert share >= 0.30, f"only {share:.0%} of long captions exceed 77 tokens"
    # and they are not all long: one-object scenes fit in CLIP's context
    assert int(lengths.min()) <= 77


def test_long_captions_of_the_written_world_exceed_77_tokens(tiny_world):
    import json
    import tarfile

    texts = []
    for shard in sorted((tiny_world / "train").glob("*.tar")):
        with tarfile.open(shard) as tar:
            texts += [json.loads(tar.extractfile(m).read())["long"] for m in tar if m.name.endswith(".json")]
    lengths = token_lengths(open_clip.get_tokenizer("ViT-B-16"), texts)
    assert len(texts) == 40 and float((lengths > 77).float().mean()) >= 0.30


def test_caption_config_rejects_bad_values():
    with pytest.raises(ValueError, match="paraphrases"):
        CaptionConfig(paraphrases=0)
    with pytest.raises(ValueError, match="intro_first"):
        CaptionConfig(intro_first=1.5)
    with pytest.raises(ValueError, match="long_order"):
        CaptionConfig(long_order="random")


@pytest.mark.parametrize("order", ["shuffled", "salience"])
def test_the_cli_writes_and_records_the_long_caption_order(tmp_path, order):
    import json

    from memclip_train.synth.__main__ import main

    out = tmp_path / order
    main(["--out", str(out), "--long-order", order, "--train", "0", "--val", "0", "--retrieval", "12",
          "--segmentation", "0", "--pairs-per-pattern", "0", "--no-progress"])
    captions = json.loads((out / "world.json").read_text())["arguments"]["captions"]
    # A world.json without "long_order" is a shuffled world: what the generator wrote before the option existed.
    assert captions.get("long_order", "shuffled") == order and ("long_order" in captions) == (order != "shuffled")
    if order == "salience":
        for row in (json.loads(line) for line in (out / "retrieval" / "scenes.jsonl").read_text().splitlines()):
            text = (out / "retrieval" / "caption" / f"{row['index']}.txt").read_text()
            salient = SceneObject(**{k: v for k, v in row["objects"][row["salient"]].items() if k != "bbox"})
            assert describes(sentences(text)[1], salient), text
