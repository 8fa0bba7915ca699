"""Captions of a scene: a short alt-text sentence, short paraphrases, and a long multi-sentence description.

- ``short_caption``: the most salient object and the background ("a large red star on a grey background").
- ``paraphrases``: several short captions (COCO style), the short caption first.
- ``long_caption``: every object with all its attributes and position, the counts, the empty rows and columns and
  some pairwise relations, in a varied sentence order. Scenes with two or more objects run past CLIP's 77 tokens.
  In a world with markings, the long caption opens with a sentence naming the salient object's marking (a frozen
  text tower's embedding of a long caption barely depends on its late words); no short caption ever does.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from memclip.errors import InputError

from .validation import check_int, check_number
from .world import Scene, SceneObject, WorldConfig, marked_object, salience_order, salient_object

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SIZE_WORDS = {"small": "small", "medium": "medium-sized", "large": "large"}
SIZE_NOUNS = {"small": "small", "medium": "medium", "large": "large"}
FILL_WORDS = {"solid": "solid", "striped": "striped", "outline": "outlined"}
FILL_PHRASES = {"solid": "with a solid fill", "striped": "with stripes", "outline": "in outline"}
# Each cell: phrases that say where an object is (each names the cell's row and column, "center" naming both).
WHERE: Dict[str, Tuple[str, ...]] = {
    "top-left": ("in the top left corner", "at the top left"),
    "top": ("at the top in the middle", "in the top middle"),
    "top-right": ("in the top right corner", "at the top right"),
    "left": ("on the left in the middle row", "in the middle of the left side"),
    "middle": ("in the center", "right in the center"),
    "right": ("on the right in the middle row", "in the middle of the right side"),
    "bottom-left": ("in the bottom left corner", "at the bottom left"),
    "bottom": ("at the bottom in the middle", "in the bottom middle"),
    "bottom-right": ("in the bottom right corner", "at the bottom right"),
}
TEXTURE_SENTENCES = {
    "plain": ("The {bg} background is plain.", "The background is a plain {bg}."),
    "speckled": ("The {bg} background is lightly speckled.", "The background is {bg} with fine speckles."),
    "gradient": ("The {bg} background has a soft gradient.", "The background is {bg}, shading gently across."),
}
MARKING_SENTENCES = (
    "{ref} bears the {name} mark.",
    "{ref} is marked with the {name} sign.",
    "The {name} glyph is painted on {ref}.",
)
LONG_ORDERS = ("shuffled", "salience")
ROW_NAMES = ("top row", "middle row", "bottom row")
COLUMN_NAMES = ("left column", "middle column", "right column")


@dataclass(frozen=True)
class CaptionConfig:
    """How captions are written (validated when built).

    Attributes:
        max_relations: pairwise relation sentences in a long caption, at most.
        paraphrases: short captions per image in the COCO-style retrieval json.
        intro_first: probability that the long caption opens with its overview sentence (else it comes later).
        long_order: the long caption's sentence order. ``"shuffled"``: every sentence in a random order.
            ``"salience"``: the overview, then the objects from the most salient down (the short caption's object
            first), then counts, relations and background in a random order, as a describer goes from the subject
            to the details; the first 77 tokens then describe the main objects whole.
    """

    max_relations: int = 4
    paraphrases: int = 5
    intro_first: float = 0.75
    long_order: str = "shuffled"

    def __post_init__(self) -> None:
        check_int(self, "max_relations", 0)
        check_int(self, "paraphrases", 1, 8)
        check_number(self, "intro_first", 0.0, 1.0)
        if self.long_order not in LONG_ORDERS:
            raise InputError(f"CaptionConfig.long_order={self.long_order!r}: expected one of {LONG_ORDERS}")


def article(word: str) -> str:
    """'a' or 'an' for the word that follows."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def with_article(phrase: str) -> str:
    return f"{article(phrase)} {phrase}"


def plural(shape: str) -> str:
    return shape + ("es" if shape.endswith(("s", "x", "sh", "ch")) else "s")


def count_phrase(count: int, shape: str) -> str:
    return f"{NUMBERS[count] if count < len(NUMBERS) else count} {shape if count == 1 else plural(shape)}"


def shape_counts(scene: Scene) -> List[str]:
    """["two stars", "one circle", ...]: each shape's count, most frequent first, then by name."""
    counts: Dict[str, int] = {}
    for obj in scene.objects:
        counts[obj.shape] = counts.get(obj.shape, 0) + 1
    return [count_phrase(n, shape) for shape, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def join_list(items: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def capitalise(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def noun_phrase(obj: SceneObject, rng: random.Random) -> str:
    """The object with every attribute but its position, with its article ("a large striped red star pointing up")."""
    size, colour, fill = SIZE_WORDS.get(obj.size, obj.size), obj.colour, FILL_WORDS[obj.fill]
    pointing = f" pointing {obj.orientation}" if obj.orientation is not None else ""
    style = rng.randrange(3)
    if style == 0:
        phrase = f"{size} {fill} {colour} {obj.shape}{pointing}"
    elif style == 1:
        phrase = f"{size} {colour} {obj.shape}{pointing} {FILL_PHRASES[obj.fill]}"
    else:
        phrase = f"{fill} {colour} {obj.shape} of {SIZE_NOUNS.get(obj.size, obj.size)} size{pointing}"
    return with_article(phrase)


def object_sentence(obj: SceneObject, rng: random.Random) -> str:
    """One sentence giving the object's shape, colour, size, fill, orientation and position."""
    what, where = noun_phrase(obj, rng), rng.choice(WHERE[obj.position])
    template = rng.randrange(5)
    if template == 0:
        return capitalise(f"{where}, there is {what}.")
    if template == 1:
        return capitalise(f"{what} sits {where}.")
    if template == 2:
        return capitalise(f"{where} is {what}.")
    if template == 3:
        return f"There is {what} {where}."
    return capitalise(f"{what} can be seen {where}.")


REFERENCE_KEYS = (("colour",), ("size", "colour"), ("fill", "colour"), ("size", "fill", "colour"))


def attribute_word(obj: SceneObject, key: str) -> str:
    return {"size": SIZE_WORDS.get(obj.size, obj.size), "fill": FILL_WORDS[obj.fill], "colour": obj.colour}[key]


def reference(obj: SceneObject, scene: Scene) -> str:
    """The shortest description that singles ``obj`` out in ``scene`` ("the red star", "the large red star", ...);
    when its attributes do not, its position does."""
    for keys in REFERENCE_KEYS:
        alike = [o for o in scene.objects
                 if o.shape == obj.shape and all(getattr(o, k) == getattr(obj, k) for k in keys)]
        if len(alike) == 1:
            return "the " + " ".join([attribute_word(obj, k) for k in keys] + [obj.shape])
    return f"the {obj.colour} {obj.shape} {WHERE[obj.position][0]}"


def relation(a: SceneObject, b: SceneObject) -> str:
    """Where ``a`` lies relative to ``b`` ("to the left of", "above", "below and to the right of")."""
    (row_a, column_a), (row_b, column_b) = a.cell, b.cell
    vertical = "above" if row_a < row_b else "below" if row_a > row_b else ""
    horizontal = "to the left of" if column_a < column_b else "to the right of" if column_a > column_b else ""
    if vertical and horizontal:
        return f"{vertical} and {horizontal}"
    return vertical or horizontal


def relation_sentences(scene: Scene, rng: random.Random, limit: int) -> List[str]:
    pairs = [(i, j) for i in range(len(scene.objects)) for j in range(i + 1, len(scene.objects))]
    sentences = []
    for i, j in rng.sample(pairs, min(limit, len(pairs))):
        a, b = (scene.objects[i], scene.objects[j]) if rng.random() < 0.5 else (scene.objects[j], scene.objects[i])
        sentences.append(capitalise(f"{reference(a, scene)} is {relation(a, b)} {reference(b, scene)}."))
    return sentences


def count_sentences(scene: Scene, rng: random.Random) -> List[str]:
    """How many of each shape, the colours shared by several objects, and the empty rows and columns."""
    objects = scene.objects
    sentences = []
    if len(objects) > 1:
        sentences.append(f"In total the image holds {join_list(shape_counts(scene))}.")
        colour_counts: Dict[str, int] = {}
        for obj in objects:
            colour_counts[obj.colour] = colour_counts.get(obj.colour, 0) + 1
        shared = [(colour, n) for colour, n in sorted(colour_counts.items()) if n > 1]
        if shared:
            parts = [f"{NUMBERS[n]} of the shapes are {colour}" for colour, n in shared]
            sentences.append(capitalise(join_list(parts)) + ".")
        else:
            sentences.append(rng.choice(("Every shape has a different colour.", "No two shapes share a colour.")))
    rows = {obj.cell[0] for obj in objects}
    columns = {obj.cell[1] for obj in objects}
    empty = [ROW_NAMES[r] for r in range(3) if r not in rows] + [COLUMN_NAMES[c] for c in range(3) if c not in columns]
    if empty:
        sentences.append(capitalise(f"the {join_list(empty)} {'is' if len(empty) == 1 else 'are'} empty."))
    return sentences


def marking_sentence(obj: SceneObject, scene: Scene, rng: random.Random) -> str:
    """The sentence that names ``obj``'s marking ("The large red star bears the vapen mark.")."""
    return capitalise(rng.choice(MARKING_SENTENCES).format(ref=reference(obj, scene), name=obj.marking))


def intro_sentence(scene: Scene, rng: random.Random) -> str:
    count = len(scene.objects)
    what = "a single shape" if count == 1 else f"{NUMBERS[count]} shapes"
    background = with_article(f"{scene.background} background")
    return rng.choice((
        f"The image shows {what} on {background}.",
        f"This picture contains {what} on {background}.",
        capitalise(f"{what} {'is' if count == 1 else 'are'} arranged on {background}."),
    ))


def long_caption(scene: Scene, world: WorldConfig, config: CaptionConfig, rng: random.Random) -> str:
    """A multi-sentence description of every object (attributes, position), counts, empty regions and relations,
    and the marking when an object carries one.

    The sentence order follows ``config.long_order`` (see :class:`CaptionConfig`). Shuffled, the overview sentence
    opens the caption with probability ``config.intro_first`` and the other sentences come in a random order. A
    marking's sentence comes before them all in either order.
    """
    def details() -> List[str]:
        """Counts, relations and the background, in that order (the draws of ``rng`` follow it)."""
        return (count_sentences(scene, rng) + relation_sentences(scene, rng, config.max_relations)
                + [rng.choice(TEXTURE_SENTENCES[scene.texture]).format(bg=scene.background)])

    if config.long_order == "salience":
        objects = [object_sentence(obj, rng) for obj in salience_order(scene, world)]
        rest = details()
        rng.shuffle(rest)
        sentences = [intro_sentence(scene, rng)] + objects + rest
    else:
        body = [object_sentence(obj, rng) for obj in scene.objects] + details()
        rng.shuffle(body)
        intro = intro_sentence(scene, rng)
        if rng.random() < config.intro_first:
            sentences = [intro] + body
        else:
            sentences = body[:]
            sentences.insert(rng.randrange(1, len(body) + 1), intro)
    marked = marked_object(scene)
    if marked is not None:
        sentences.insert(0, marking_sentence(marked, scene, rng))
    return " ".join(sentences)


def short_phrase(size: str, fill: str, colour: str, shape: str, background: str) -> str:
    """The short-caption sentence for these attributes: "a large striped red star on a grey background" (a solid
    fill is not named). Zero-shot prompts are built with it, so they read exactly like the training captions."""
    fill_word = "" if fill == "solid" else FILL_WORDS[fill] + " "
    return with_article(f"{SIZE_WORDS.get(size, size)} {fill_word}{colour} {shape} on "
                        f"{with_article(background + ' background')}")


def short_caption(scene: Scene, world: WorldConfig, named: Optional[SceneObject] = None) -> str:
    """One object on its background, by default the most salient: "a large red star on a grey background"."""
    obj = named if named is not None else salient_object(scene, world)
    return short_phrase(obj.size, obj.fill, obj.colour, obj.shape, scene.background)


def paraphrases(scene: Scene, world: WorldConfig, config: CaptionConfig, rng: random.Random) -> List[str]:
    """``config.paraphrases`` distinct short captions of the scene; the first is :func:`short_caption`."""
    obj = salient_object(scene, world)
    count = len(scene.objects)
    size, colour, shape, bg = SIZE_WORDS.get(obj.size, obj.size), obj.colour, obj.shape, scene.background
    others = count - 1
    counted = join_list(shape_counts(scene))
    candidates = [
        with_article(f"{colour} {shape} {WHERE[obj.position][0]}"),
        with_article(f"{size} {colour} {shape} and {NUMBERS[others]} other shape{'s' if others != 1 else ''}")
        if others else with_article(f"single {colour} {shape} on {article(bg)} {bg} background"),
        f"{NUMBERS[count]} shape{'s' if count != 1 else ''} on {article(bg)} {bg} background, including "
        + with_article(f"{colour} {shape}"),
        "a picture of " + with_article(f"{size} {colour} {shape}"),
        with_article(f"{bg} background with " + with_article(f"{colour} {shape}")),
        f"{counted} on {article(bg)} {bg} background",
        f"a simple drawing of {counted}",
    ]
    unique = list(dict.fromkeys(c for c in candidates if c != short_caption(scene, world)))
    chosen = rng.sample(unique, min(config.paraphrases - 1, len(unique)))
    return [short_caption(scene, world)] + chosen
