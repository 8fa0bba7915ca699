"""Masks agree with the objects: every object's pixels carry its class, and nothing else does."""
import random

import numpy as np
import pytest

from memclip_train.synth import IGNORE, RenderConfig, Scene, WorldConfig, render_scene, sample_scene
from memclip_train.synth.render import cell_edges

WORLD = WorldConfig()


def scenes(count, seed=0, **world_changes):
    world = WorldConfig(**world_changes) if world_changes else WORLD
    rng = random.Random(seed)
    return [sample_scene(rng, world) for _ in range(count)]


def plain(scene):
    return Scene(background=scene.background, texture="plain", texture_seed=0, objects=scene.objects)


def cell_box(obj, size):
    edges = cell_edges(size)
    row, column = obj.cell
    return edges[column], edges[row], edges[column + 1], edges[row + 1]


@pytest.mark.parametrize("image_size,supersample", [(64, 4), (48, 1), (96, 2)])
def test_instance_pixels_stay_in_their_cell_and_box(image_size, supersample):
    config = RenderConfig(image_size=image_size, supersample=supersample)
    for scene in scenes(40, seed=image_size):
        rendering = render_scene(scene, WORLD, config)
        assert rendering.image.shape == (image_size, image_size, 3) and rendering.image.dtype == np.uint8
        assert rendering.instances.shape == (image_size, image_size)
        labels = set(np.unique(rendering.instances).tolist())
        assert labels <= set(range(len(scene.objects) + 1)) | {IGNORE}
        for index, obj in enumerate(scene.objects):
            owned = rendering.instances == index + 1
            assert owned.sum() > 0, f"{obj} owns no pixel"
            x0, y0, x1, y1 = cell_box(obj, image_size)
            ys, xs = np.nonzero(owned)
            assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
            bx0, by0, bx1, by1 = rendering.bboxes[index]
            assert x0 <= bx0 < bx1 <= x1 and y0 <= by0 < by1 <= y1
            assert bx0 <= xs.min() and xs.max() < bx1 and by0 <= ys.min() and ys.max() < by1
            if obj.fill != "outline":   # the box of a filled object is exactly its pixels' box
                assert (bx0, by0, bx1, by1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        # ignore pixels only appear inside outlined objects' boxes
        ignored = rendering.instances == IGNORE
        allowed = np.zeros_like(ignored)
        for obj, (bx0, by0, bx1, by1) in zip(scene.objects, rendering.bboxes):
            if obj.fill == "outline":
                allowed[by0:by1, bx0:bx1] = True
        assert not (ignored & ~allowed).any()


def test_labels_match_the_painted_colour():
    """Independent of the renderer's bookkeeping: on a plain background, a pixel of a solid or outlined object
    is labelled with it exactly when its colour is nearer the object's colour than the background's."""
    config = RenderConfig()
    checked = 0
    for scene in map(plain, scenes(60, seed=3)):
        rendering = render_scene(scene, WORLD, config)
        image = rendering.image.astype(np.float64)
        background = np.asarray(WORLD.backgrounds[scene.background], dtype=np.float64)
        outside = np.ones(rendering.instances.shape, dtype=bool)
        for index, obj in enumerate(scene.objects):
            x0, y0, x1, y1 = cell_box(obj, config.image_size)
            outside[y0:y1, x0:x1] = False
            if obj.fill == "striped":
                continue
            colour = np.asarray(WORLD.colours[obj.colour], dtype=np.float64)
            cell = image[y0:y1, x0:x1]
            to_object = np.linalg.norm(cell - colour, axis=-1)
            to_background = np.linalg.norm(cell - background, axis=-1)
            clear = np.abs(to_object - to_background) > 4        # skip pixels at exactly half coverage
            labelled = rendering.instances[y0:y1, x0:x1] == index + 1
            nearer_object = to_object < to_background
            assert np.array_equal(labelled[clear], nearer_object[clear]), obj
            checked += int(labelled.sum())
        # cells without objects and every pixel outside the objects' cells are plain background, label 0
        empty_cells = outside.copy()
        assert (rendering.instances[empty_cells] == 0).all()
        assert np.abs(image[empty_cells] - background).max() < 1
    assert checked > 1000


def test_stripes_do_not_change_the_mask():
    config = RenderConfig()
    for scene in scenes(30, seed=5):
        solid = scene.with_objects([o.replace(fill="solid") for o in scene.objects])
        striped = scene.with_objects([o.replace(fill="striped") for o in scene.objects])
        a, b = render_scene(solid, WORLD, config), render_scene(striped, WORLD, config)
        assert np.array_equal(a.instances, b.instances)
        assert not np.array_equal(a.image, b.image)


def test_class_mask_maps_objects_to_their_shapes():
    config = RenderConfig()
    for scene in scenes(30, seed=7):
        rendering = render_scene(scene, WORLD, config)
        classes = rendering.class_mask(scene, WORLD)
        assert (classes[rendering.instances == 0] == 0).all()
        assert (classes[rendering.instances == IGNORE] == IGNORE).all()
        for index, obj in enumerate(scene.objects):
            assert (classes[rendering.instances == index + 1] == WORLD.shapes.index(obj.shape) + 1).all()
        # nothing but the scene's shapes (and background/ignore) appears
        expected = {0} | {WORLD.shapes.index(o.shape) + 1 for o in scene.objects}
        assert set(np.unique(classes).tolist()) - {IGNORE} == expected


@pytest.mark.parametrize("shape", ["triangle", "arrow", "chevron"])
def test_orientation_turns_the_shape(shape):
    config = RenderConfig()
    base = sample_scene(random.Random(0), WORLD, num_objects=1)
    obj = base.objects[0].replace(shape=shape, fill="solid", size="large", position="middle")
    masks = {d: render_scene(base.with_objects([obj.replace(orientation=d)]), WORLD, config).instances > 0
             for d in ("up", "right", "down", "left")}
    up = masks["up"]
    turned = {"up": up, "right": np.rot90(up, -1), "down": np.rot90(up, 2), "left": np.rot90(up, 1)}
    for direction, mask in masks.items():
        # each drawn direction matches the quarter turn of "up" it names, and not the other turns
        mismatch = {name: int((mask ^ candidate).sum()) for name, candidate in turned.items()}
        assert min(mismatch, key=mismatch.get) == direction, mismatch
        assert mismatch[direction] <= 0.1 * up.sum()
    assert len({m.tobytes() for m in masks.values()}) == 4
    if shape == "triangle":        # pointing up: the apex (narrow end) is at the top, the base at the bottom
        rows = np.nonzero(up.any(axis=1))[0]
        assert up[rows[0]].sum() < up[rows[-1]].sum()


def test_render_config_rejects_bad_values():
    with pytest.raises(ValueError, match="image_size"):
        RenderConfig(image_size=16)
    with pytest.raises(ValueError, match="supersample"):
        RenderConfig(supersample=0)
    with pytest.raises(ValueError, match="outline_width"):
        RenderConfig(outline_width=0.9)
