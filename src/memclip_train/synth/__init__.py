"""The synthetic fine-grained world: procedural scenes of shapes with short and long captions.

Every scene puts 1-6 objects (shape, colour, size, position in a 3x3 grid, orientation, fill) on a plain or lightly
textured background. ``python -m memclip_train.synth --out DIR`` writes it in the layouts the real pipelines read:
webdataset shards (train, val), Urban-1k and COCO-captions retrieval files, a VOC-style segmentation set and
MMVP-style blind pairs. See docs/synthetic-world.md.
"""
from .captions import CaptionConfig, long_caption, paraphrases, short_caption
from .config import SPLITS, SynthConfig
from .generate import generate_world
from .pairs import PATTERNS, BlindPair, make_pair
from .render import IGNORE, RenderConfig, Rendering, render_scene
from .world import Scene, SceneObject, WorldConfig, salient_object, sample_scene

__all__ = [
    "IGNORE",
    "PATTERNS",
    "SPLITS",
    "BlindPair",
    "CaptionConfig",
    "RenderConfig",
    "Rendering",
    "Scene",
    "SceneObject",
    "SynthConfig",
    "WorldConfig",
    "generate_world",
    "long_caption",
    "make_pair",
    "paraphrases",
    "render_scene",
    "salient_object",
    "sample_scene",
    "short_caption",
]
