"""Blind pairs differ in exactly the labelled attribute, and nowhere else in the pixels."""
import json
import random
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from memclip_train.synth import PATTERNS, RenderConfig, SynthConfig, WorldConfig, make_pair, render_scene
from memclip_train.synth.render import cell_edges

WORLD = WorldConfig()
FIELDS = ("shape", "colour", "size", "position", "orientation", "fill")


def as_tuple(obj):
    return tuple(obj[f] if isinstance(obj, dict) else getattr(obj, f) for f in FIELDS)


def check_exactly_one_difference(pattern, a_objects, b_objects, differs):
    """The object lists of a and b (as tuples of FIELDS) differ as ``pattern`` says, and in nothing else."""
    a, b = Counter(map(as_tuple, a_objects)), Counter(map(as_tuple, b_objects))
    only_a, only_b = list((a - b).elements()), list((b - a).elements())
    assert differs["attribute"] == pattern
    if pattern in ("colour", "size", "fill", "orientation", "position"):
        assert len(only_a) == len(only_b) == 1 and len(a_objects) == len(b_objects)
        changed = [f for f, x, y in zip(FIELDS, only_a[0], only_b[0]) if x != y]
        assert changed == [pattern]
        index = FIELDS.index(pattern)
        assert (differs["a"], differs["b"]) == (only_a[0][index], only_b[0][index])
        assert as_tuple(differs["object"]) == only_a[0]
    else:
        b_larger = len(b_objects) > len(a_objects)
        extra, fewer, more = (only_b, a_objects, b_objects) if b_larger else (only_a, b_objects, a_objects)
        assert len(extra) == 1 and not (only_a and only_b) and len(more) == len(fewer) + 1
        added = extra[0]
        assert as_tuple(differs["object"]) == added
        shape_count = {side: sum(as_tuple(o)[0] == added[0] for o in objs)
                       for side, objs in (("a", a_objects), ("b", b_objects))}
        if pattern == "count":
            twin = [o for o in map(as_tuple, fewer) if o[:3] + o[4:] == added[:3] + added[4:]]
            assert twin, "the added object copies an existing one but for its position"
            assert min(shape_count.values()) >= 1
            assert (differs["a"], differs["b"]) == (shape_count["a"], shape_count["b"])
        else:
            assert min(shape_count.values()) == 0 and max(shape_count.values()) == 1
            assert (differs["a"], differs["b"]) == (shape_count["a"] == 1, shape_count["b"] == 1)


def changed_cells_mask(pair_a, pair_b, size):
    """Pixels of the cells whose objects differ between the two scenes."""
    a = {o.position: o for o in pair_a.objects}
    b = {o.position: o for o in pair_b.objects}
    edges = cell_edges(size)
    mask = np.zeros((size, size), dtype=bool)
    for position in set(a) | set(b):
        if a.get(position) != b.get(position):
            row, column = (a.get(position) or b.get(position)).cell
            mask[edges[row]:edges[row + 1], edges[column]:edges[column + 1]] = True
    return mask


@pytest.mark.parametrize("pattern", PATTERNS)
def test_pairs_differ_in_exactly_the_labelled_attribute(pattern):
    rng = random.Random(pattern)
    config = RenderConfig()
    swapped = 0
    for _ in range(40):
        pair = make_pair(rng, WORLD, pattern)
        assert pair.pattern == pattern
        assert (pair.a.background, pair.a.texture, pair.a.texture_seed) == \
            (pair.b.background, pair.b.texture, pair.b.texture_seed)
        check_exactly_one_difference(pattern, pair.a.objects, pair.b.objects, pair.differs)
        image_a = render_scene(pair.a, WORLD, config).image
        image_b = render_scene(pair.b, WORLD, config).image
        differ = (image_a != image_b).any(axis=-1)
        assert differ.any()
        assert not (differ & ~changed_cells_mask(pair.a, pair.b, config.image_size)).any()
        swapped += pattern in ("count", "presence") and len(pair.a.objects) > len(pair.b.objects)
    if pattern in ("count", "presence"):
        assert 5 < swapped < 35     # the larger scene is sometimes a, sometimes b


def test_written_pairs(tiny_world):
    lines = (tiny_world / "pairs" / "pairs.jsonl").read_text().splitlines()
    pairs = [json.loads(line) for line in lines]
    assert Counter(p["pattern"] for p in pairs) == {pattern: 2 for pattern in PATTERNS}
    assert len({p["id"] for p in pairs}) == len(pairs)
    for pair in pairs:
        check_exactly_one_difference(pair["pattern"], pair["a"]["objects"], pair["b"]["objects"], pair["differs"])
        assert pair["a"]["caption"] != pair["b"]["caption"]
        for side in ("a", "b"):
            assert pair[side]["image"] == f"images/{pair['id']}_{side}.jpg"
            with Image.open(tiny_world / "pairs" / pair[side]["image"]) as image:
                assert image.format == "JPEG" and image.size == (64, 64)
            assert pair[side]["short"] and len(pair[side]["caption"]) > len(pair[side]["short"])


def test_default_pair_split_has_fifty_per_pattern():
    config = SynthConfig()
    assert config.pairs_per_pattern >= 50
    assert config.split_size("pairs") == config.pairs_per_pattern * len(PATTERNS)


def test_unavailable_pattern_is_refused():
    world = WorldConfig(oriented_shapes=())
    assert "orientation" not in SynthConfig(world=world).patterns
    with pytest.raises(ValueError, match="orientation"):
        make_pair(random.Random(0), world, "orientation")
