"""ImageNet's val set, ImageNet-V2 and any ImageFolder, with open_clip's class names and OpenAI's templates."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple

from open_clip import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

from ..dataset_files import BadItem, LayoutError
from .dataset import ZeroShotSet

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""torchvision's ImageFolder extensions (any case)."""

OPENAI_TEMPLATES_NAME = f"{len(OPENAI_IMAGENET_TEMPLATES)} OpenAI ImageNet templates"
IMAGENET_LAYOUT = """    <root>/<wnid>/<image>.JPEG   (or <root>/val/<wnid>/...): the 50,000 val images in 1,000
      class folders n01440764 ... n15075141, sorted = open_clip's IMAGENET_CLASSNAMES order"""
IMAGENET_V2_VARIANTS = ("matched-frequency", "threshold0.7", "top-images")
IMAGENET_V2_LAYOUT = """    <root>/imagenetv2-<variant>-format-val/<label>/<image>.jpeg   (or <root> = that folder)
      1,000 folders named 0 ... 999 by ImageNet class index (the release tarballs, extracted)"""
IMAGE_FOLDER_LAYOUT = """    <root>/<class folder>/<image>   one folder per class; labels follow the sorted folder names
      class names: --class-names FILE (one per line, in that order), else the folder names ('_' -> ' ')"""


def class_folders(root: Path) -> List[Path]:
    """Sub-folders of ``root`` in sorted name order (hidden ones skipped), as torchvision's ImageFolder."""
    return sorted((Path(e.path) for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")),
                  key=lambda p: p.name)


def images_in(folder: Path) -> List[Path]:
    """Image files of one class folder (any depth), sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def loose_images(root: Path) -> List[BadItem]:
    """Image files directly in ``root``, outside every class folder: they would belong to no class (torchvision's
    ImageFolder drops them without a word; here they are bad items)."""
    return [BadItem(str(path), "image", "is outside every class folder, so it has no class")
            for path in sorted(root.iterdir()) if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES]


def read_folders(dataset: str, folders: List[Path], labels: List[int], layout: str,
                 root: Path) -> Tuple[List[Path], List[int], List[BadItem]]:
    """The images of each class folder with its label, and a bad item for each class folder without images (the class
    would have no test image; the caller decides whether it stays a candidate)."""
    images: List[Path] = []
    targets: List[int] = []
    empty: List[BadItem] = []
    for folder, label in zip(folders, labels):
        files = images_in(folder)
        if not files:
            empty.append(BadItem(str(folder), "class folder", f"holds no image ({', '.join(IMAGE_SUFFIXES)})"))
        images.extend(files)
        targets.extend([label] * len(files))
    if not images:
        raise LayoutError(dataset, root, layout, "no images in the class folders of")
    return images, targets, empty


def load_imagenet(root: Path, variant: Optional[str] = None) -> ZeroShotSet:
    """ImageNet-1k val in ImageFolder layout; class i is the i-th folder in sorted order (the wnid order)."""
    if not root.is_dir():
        raise LayoutError("imagenet", root, IMAGENET_LAYOUT)
    if len(class_folders(root)) != len(IMAGENET_CLASSNAMES) and (root / "val").is_dir():
        root = root / "val"
    folders = class_folders(root)
    if len(folders) != len(IMAGENET_CLASSNAMES):
        raise LayoutError("imagenet", root, IMAGENET_LAYOUT,
                          f"expected {len(IMAGENET_CLASSNAMES)} class folders, found {len(folders)} in")
    images, labels, empty = read_folders("imagenet", folders, list(range(len(folders))), IMAGENET_LAYOUT, root)
    return ZeroShotSet("imagenet", images, labels, list(IMAGENET_CLASSNAMES), templates=OPENAI_IMAGENET_TEMPLATES,
                       prompts_name=OPENAI_TEMPLATES_NAME,
                       meta={"layout": "ImageFolder (sorted wnid folders)", "root": str(root),
                             "class_names": "open_clip IMAGENET_CLASSNAMES"},
                       bad_items=[_kept(item) for item in empty] + loose_images(root))


def _kept(item: BadItem) -> BadItem:
    """An empty class folder of a fixed class list: the class stays a candidate, with no test image."""
    return BadItem(item.file, item.item, f"{item.reason}: its class stays a candidate but is never tested")


def _imagenet_v2_folder(root: Path, variant: str) -> Path:
    if not root.is_dir():
        raise LayoutError("imagenet-v2", root, IMAGENET_V2_LAYOUT)
    if (root / "0").is_dir():
        return root
    wanted = f"imagenetv2-{variant}-format-val"
    for child in class_folders(root):
        if child.name.lower() == wanted:
            return child
    raise LayoutError("imagenet-v2", root / wanted, IMAGENET_V2_LAYOUT)


def load_imagenet_v2(root: Path, variant: Optional[str] = None) -> ZeroShotSet:
    """ImageNet-V2 (matched-frequency by default): folder names are the ImageNet class indices, not an order."""
    variant = variant or IMAGENET_V2_VARIANTS[0]
    folder = _imagenet_v2_folder(root, variant)
    named = {child.name: child for child in class_folders(folder)}
    expected = [str(i) for i in range(len(IMAGENET_CLASSNAMES))]
    missing = [name for name in expected if name not in named]
    if missing:
        raise LayoutError("imagenet-v2", folder, IMAGENET_V2_LAYOUT,
                          f"{len(missing)} of the class folders 0 ... 999 are missing (e.g. {missing[0]}) in")
    images, labels, empty = read_folders("imagenet-v2", [named[n] for n in expected], list(range(len(expected))),
                                         IMAGENET_V2_LAYOUT, folder)
    extra = [BadItem(str(path), "folder", "is not a class index 0 ... 999, so its images have no class")
             for name, path in named.items() if name not in set(expected) and images_in(path)]
    return ZeroShotSet("imagenet-v2", images, labels, list(IMAGENET_CLASSNAMES), templates=OPENAI_IMAGENET_TEMPLATES,
                       prompts_name=OPENAI_TEMPLATES_NAME,
                       meta={"layout": f"ImageNet-V2 {variant} (folders named by class index)", "root": str(folder),
                             "class_names": "open_clip IMAGENET_CLASSNAMES"},
                       bad_items=[_kept(item) for item in empty] + extra + loose_images(folder))


def load_image_folder(root: Path, variant: Optional[str] = None) -> ZeroShotSet:
    """Any ImageFolder; class names are the folder names until ``--class-names`` replaces them.

    A class folder without images would be an extra class that no image has (it moves top-1: a distractor the task
    does not hold), so it is a bad item; left out with ``--skip-bad`` (the remaining folders keep their sorted order,
    and ``--class-names`` then lists their names only). Images directly in ``root`` are bad items too.
    """
    if not root.is_dir():
        raise LayoutError("imagefolder", root, IMAGE_FOLDER_LAYOUT)
    folders = class_folders(root)
    if not folders:
        raise LayoutError("imagefolder", root, IMAGE_FOLDER_LAYOUT, "no class folders in")
    files = {folder: images_in(folder) for folder in folders}
    left_out = [BadItem(str(folder), "class folder", f"holds no image ({', '.join(IMAGE_SUFFIXES)}): it would be a "
                                                     "class no image has") for folder in folders if not files[folder]]
    folders = [folder for folder in folders if files[folder]]
    if not folders:
        raise LayoutError("imagefolder", root, IMAGE_FOLDER_LAYOUT, "no images in the class folders of")
    images = [path for folder in folders for path in files[folder]]
    labels = [label for label, folder in enumerate(folders) for _ in files[folder]]
    return ZeroShotSet("imagefolder", images, labels, [f.name.replace("_", " ") for f in folders],
                       templates=OPENAI_IMAGENET_TEMPLATES, prompts_name=OPENAI_TEMPLATES_NAME,
                       meta={"layout": "ImageFolder", "root": str(root), "class_names": "folder names",
                             "empty_class_folders_left_out": len(left_out)},
                       bad_items=left_out + loose_images(root))
