"""`ZeroShotSet`: labelled images, class names, and the prompts that describe each class."""
from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from memclip.errors import InputError

from ..dataset_files import BadItem

ImageSource = Union[str, Path, bytes]
"""An image file path, or the encoded bytes of an image (e.g. a ``jpg`` field read from a webdataset shard)."""

Template = Union[str, Callable[[str], str]]
"""A prompt template, as open_clip takes them: a format string with one ``{}``, or a callable ``name -> prompt``."""


def template_problem(template: str) -> Optional[str]:
    """Why a prompt template cannot be filled with one class name (None when it can): it must hold exactly one
    ``{}`` and no other ``{...}`` (a literal brace is written ``{{`` or ``}}``)."""
    try:
        slots = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:
        return f"is not a format string ({error}; write a literal brace as '{{{{' or '}}}}')"
    if not slots:
        return "has no {} for the class name"
    if slots != [""]:
        shown = ", ".join("{" + name + "}" for name in slots)
        return f"has {len(slots)} slots ({shown}); it needs exactly one {{}}, for the class name"
    return None


@dataclass
class ZeroShotSet:
    """A zero-shot classification benchmark, as a dataset plug-in returns it.

    Give either ``templates`` (one list shared by every class, open_clip's ImageNet style) or ``class_prompts``
    (every class its own prompts, e.g. "a red circle", "a small red square", ... for the class "red"). A class's
    text embedding is the normalised mean of its prompts' embeddings in both cases.

    Attributes:
        name: dataset name as given on the command line (``imagenet``, ``synth-shapes``, ...).
        images: one :data:`ImageSource` per sample.
        labels: the class index of each image, in ``[0, len(class_names))``.
        class_names: one name per class, in label order.
        templates: prompt templates shared by all classes, or None.
        class_prompts: per class, its prompts (non-empty lists), or None.
        prompts_name: how the prompts are described in results and tables ("80 OpenAI ImageNet templates").
        meta: how the set was built (layout, variant, class-names file), recorded with every result.
        bad_items: what the reader left out because it would change the task (an empty class folder, an image
            outside any class folder, ...): an error unless skipped and counted (see
            :func:`..dataset_files.refuse_or_count`).
    """

    name: str
    images: Sequence[ImageSource]
    labels: List[int]
    class_names: List[str]
    templates: Optional[Sequence[Template]] = None
    class_prompts: Optional[List[List[str]]] = None
    prompts_name: str = ""
    meta: Dict[str, Any] = field(default_factory=dict)
    bad_items: List[BadItem] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels):
            raise InputError(f"{self.name}: {len(self.images)} images but {len(self.labels)} labels")
        if not self.images:
            raise InputError(f"{self.name}: no images")
        if not self.class_names:
            raise InputError(f"{self.name}: no class names")
        bad = [label for label in self.labels if not 0 <= label < len(self.class_names)]
        if bad:
            raise InputError(f"{self.name}: label {bad[0]} outside [0, {len(self.class_names)}) classes")
        if (self.templates is None) == (self.class_prompts is None):
            raise InputError(f"{self.name}: give either templates or class_prompts (exactly one)")
        if self.templates is not None and len(self.templates) == 0:
            raise InputError(f"{self.name}: empty template list")
        for template in self.templates or ():
            problem = template_problem(template) if isinstance(template, str) else None
            if problem:
                raise InputError(f"{self.name}: the template {template!r} {problem}")
        if self.class_prompts is not None:
            if len(self.class_prompts) != len(self.class_names):
                raise InputError(f"{self.name}: {len(self.class_prompts)} prompt lists for {len(self.class_names)} "
                                 "classes")
            empty = [n for n, prompts in zip(self.class_names, self.class_prompts) if not prompts]
            if empty:
                raise InputError(f"{self.name}: class {empty[0]!r} has no prompts")
        if not self.prompts_name:
            self.prompts_name = (f"{len(self.templates)} templates" if self.templates is not None
                                 else f"per-class prompts ({sum(map(len, self.class_prompts))} in all)")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def prompts_of(self, index: int) -> List[str]:
        """The prompts of class ``index``, written out (templates filled with its name)."""
        if self.class_prompts is not None:
            return list(self.class_prompts[index])
        name = self.class_names[index]
        return [t.format(name) if isinstance(t, str) else t(name) for t in self.templates]

    def subset(self, keep: Sequence[int]) -> "ZeroShotSet":
        """Only the listed images (the classes and prompts stay)."""
        return ZeroShotSet(self.name, [self.images[i] for i in keep], [self.labels[i] for i in keep],
                           self.class_names, self.templates, self.class_prompts, self.prompts_name, dict(self.meta),
                           list(self.bad_items))
