"""Zero-shot classification datasets: a registry of loaders, and the options every dataset shares.

A dataset plugs in with :func:`register_zeroshot_dataset`: a loader ``(root, variant) -> ZeroShotSet`` that returns
the images (file paths or encoded bytes), their labels, the class names, and either prompt templates shared by all
classes or a list of prompts per class. ``python -m memclip_train.eval zeroshot --dataset NAME`` and the trainer's
``--zeroshot-frequency`` then evaluate it with no further code.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from open_clip import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

from memclip.errors import InputError

from ..dataset_files import refuse_or_count
from .dataset import ImageSource, Template, ZeroShotSet, template_problem
from .image_folders import (IMAGENET_V2_VARIANTS, OPENAI_TEMPLATES_NAME, load_image_folder, load_imagenet,
                            load_imagenet_v2)
from .synth_attributes import ATTRIBUTE_OF as SYNTH_ATTRIBUTES
from .synth_attributes import loader as synth_loader

logger = logging.getLogger(__name__)

Loader = Callable[[Path, Optional[str]], ZeroShotSet]
TEMPLATE_SETS: Dict[str, Tuple[Sequence[Template], str]] = {
    "openai": (OPENAI_IMAGENET_TEMPLATES, OPENAI_TEMPLATES_NAME),
    "simple": (SIMPLE_IMAGENET_TEMPLATES, f"{len(SIMPLE_IMAGENET_TEMPLATES)} simple ImageNet templates"),
}
"""Template sets by name (open_clip's own metadata), for ``--templates``."""


@dataclass(frozen=True)
class ZeroShotDataset:
    """A registered dataset: its loader, the variants it accepts after '@', and the default one."""

    load: Loader
    variants: Tuple[str, ...] = ()
    default_variant: Optional[str] = None


@dataclass(frozen=True)
class ZeroShotOptions:
    """Choices that apply to any dataset that uses templates.

    Attributes:
        class_names: a file with one class name per line, in label order, replacing the dataset's names.
        templates: ``openai`` or ``simple`` (open_clip's ImageNet sets), or a file with one template per line,
            each with a ``{}`` for the class name; replaces the dataset's templates.
    """

    class_names: Optional[Path] = None
    templates: Optional[str] = None


ZEROSHOT_DATASETS: Dict[str, ZeroShotDataset] = {}


def register_zeroshot_dataset(name: str, load: Loader, variants: Sequence[str] = (),
                              default_variant: Optional[str] = None) -> None:
    """Make ``name`` known to the eval program and the trainer (a later registration replaces an earlier one)."""
    if default_variant is not None and default_variant not in variants:
        raise InputError(f"zero-shot dataset {name}: default variant {default_variant!r} not in {tuple(variants)}")
    ZEROSHOT_DATASETS[name] = ZeroShotDataset(load, tuple(variants), default_variant)


register_zeroshot_dataset("imagenet", load_imagenet)
register_zeroshot_dataset("imagenet-v2", load_imagenet_v2, IMAGENET_V2_VARIANTS, IMAGENET_V2_VARIANTS[0])
register_zeroshot_dataset("imagefolder", load_image_folder)
for _name in SYNTH_ATTRIBUTES:
    register_zeroshot_dataset(_name, synth_loader(_name))


def read_lines(path: Path, what: str) -> List[str]:
    """Non-empty, stripped lines of a text file.

    Raises:
        ValueError: the file is missing or empty (the message names ``what`` it should hold).
    """
    if not Path(path).is_file():
        raise InputError(f"{what} file {path} does not exist")
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise InputError(f"{what} file {path} is empty")
    return lines


def resolve_templates(spec: str) -> Tuple[Sequence[Template], str]:
    """``openai``/``simple`` -> open_clip's template set; a file -> its lines, each checked when read (exactly one
    ``{}``, see :func:`.dataset.template_problem`).

    Raises:
        ValueError: a missing or empty file, or a line that is not a template (naming the file and the line).
    """
    if spec in TEMPLATE_SETS:
        return TEMPLATE_SETS[spec]
    templates = read_lines(Path(spec), f"--templates (one of {sorted(TEMPLATE_SETS)}, or a)")
    for template in templates:
        problem = template_problem(template)
        if problem:
            raise InputError(f"--templates {spec}: the template {template!r} {problem}")
    twice = sorted({t for t in templates if templates.count(t) > 1})
    if twice:
        raise InputError(f"--templates {spec}: the template {twice[0]!r} is listed twice (it would weigh twice in "
                         "each class's mean)")
    return templates, f"{len(templates)} templates from {Path(spec).name}"


def apply_options(dataset: ZeroShotSet, options: ZeroShotOptions) -> ZeroShotSet:
    """The dataset with ``--class-names`` and ``--templates`` applied.

    Raises:
        ValueError: a class-names file whose line count differs from the number of classes, or templates for a
            dataset that brings its own per-class prompts.
    """
    changes = {}
    if options.class_names is not None:
        names = read_lines(options.class_names, "--class-names")
        if len(names) != dataset.num_classes:
            left_out = dataset.meta.get("empty_class_folders_left_out", 0)
            raise InputError(f"--class-names {options.class_names}: {len(names)} names for {dataset.num_classes} "
                             f"classes of {dataset.name}" + (f" ({left_out} empty class folders were left out, "
                                                             "--skip-bad)" if left_out else ""))
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            logger.warning("--class-names %s: %d names are given to more than one class, e.g. %r: those classes "
                           "share one text embedding", options.class_names, len(twice), twice[0])
        changes["class_names"] = names
        changes["meta"] = dict(dataset.meta, class_names=str(options.class_names))
    if options.templates is not None:
        if dataset.class_prompts is not None:
            raise InputError(f"--templates: {dataset.name} brings its own prompts for each class")
        changes["templates"], changes["prompts_name"] = resolve_templates(options.templates)
    return dataclasses.replace(dataset, **changes) if changes else dataset


def options_identity(options: ZeroShotOptions) -> Dict[str, object]:
    """What makes results with these options reusable: the choices, and each named file's size and time."""
    identity: Dict[str, object] = {"class_names": None, "templates": options.templates}
    for key, value in (("class_names", options.class_names), ("templates", options.templates)):
        if value is not None and Path(value).is_file():
            stat = Path(value).stat()
            identity[key] = [str(Path(value).resolve()), stat.st_size, stat.st_mtime_ns]
    return identity


def check_zeroshot_name(name: str, variant: Optional[str] = None) -> Optional[str]:
    """The variant ``name`` is read with (``variant`` or the default).

    Raises:
        ValueError: an unknown name or variant.
    """
    if name not in ZEROSHOT_DATASETS:
        raise InputError(f"unknown zero-shot dataset {name!r}; choose from {sorted(ZEROSHOT_DATASETS)}")
    entry = ZEROSHOT_DATASETS[name]
    variant = variant or entry.default_variant
    if variant is not None and variant not in entry.variants:
        raise InputError(f"{name}: unknown variant {variant!r}; choose from {entry.variants or 'none'}")
    return variant


def load_zeroshot_set(name: str, root: Path, variant: Optional[str] = None,
                      options: Optional[ZeroShotOptions] = None, skip_bad: bool = False) -> ZeroShotSet:
    """Load a registered dataset from ``root``, with its variant (or the default) and the options applied.

    Raises:
        ValueError: unknown name, variant, or bad options.
        LayoutError: the folder does not have the dataset's layout (the message shows the expected one).
        BadItemError: the reader found items that would change the task (an empty class folder, ...), unless
            ``skip_bad``: then they are left out and counted in the set's ``bad_items``.
    """
    variant = check_zeroshot_name(name, variant)
    entry = ZEROSHOT_DATASETS[name]
    loaded = entry.load(Path(root), variant)
    refuse_or_count(name, loaded.bad_items, skip_bad)
    dataset = apply_options(loaded, options or ZeroShotOptions())
    if variant:
        dataset.meta.setdefault("variant", variant)
    return dataset


__all__ = ["ImageSource", "SYNTH_ATTRIBUTES", "TEMPLATE_SETS", "Template", "ZEROSHOT_DATASETS", "ZeroShotDataset",
           "ZeroShotOptions", "ZeroShotSet", "check_zeroshot_name", "load_zeroshot_set", "options_identity",
           "register_zeroshot_dataset"]
