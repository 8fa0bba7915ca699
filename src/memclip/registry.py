"""Model configs: open_clip JSON plus memclip's own keys, and the registry that finds them by name.

A memclip config is an open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``, ...) with extra top-level
keys that open_clip does not know, and which are removed before the rest reaches open_clip:

- ``memory``: a :class:`memory_layers.MemoryConfig` as a dict (absent for models without memory);
- ``teacher``: the architecture without memory that the student is distilled from. open_clip pretrained tags
  (``openai``, ``laion2b_s34b_b88k``, ...) are looked up under this name;
- ``text_tower``: a :class:`memclip.text_tower.TextTowerConfig` as a dict (absent for CLIP's own tower);
- ``vision_stem``: a :class:`memclip.stem.VisionStemConfig` as a dict (absent for open_clip's patchify stem);
- ``wide_mlp``: a :class:`memclip.wide_mlp.WideMLPConfig` as a dict (absent unless some MLPs are widened: the dense
  control of the capacity study).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import open_clip
import open_clip.factory

from memory_layers import MemoryConfig

from . import hub
from .errors import InputError
from .model_files import SAVED_CONFIG_NAME
from .stem import VisionStemConfig
from .text_tower import TextTowerConfig
from .wide_mlp import WideMLPConfig

MEMCLIP_KEYS = ("memory", "teacher", "text_tower", "vision_stem", "wide_mlp")
OPEN_CLIP_REQUIRED_KEYS = ("embed_dim", "vision_cfg", "text_cfg")
CONFIG_KEY = "memclip_config"
"""Key under which a training checkpoint (and a safetensors file's metadata) records the model's memclip config."""

# Captured at import, so that memclip.register_open_clip() can point open_clip.list_models here without recursion.
_open_clip_list_models = open_clip.factory.list_models

CONFIG_PATH_ENV = "MEMCLIP_MODEL_CONFIGS"
"""Extra config folders or files, separated by os.pathsep, registered at import (like add_model_config)."""

_CONFIG_PATHS: List[Path] = [Path(__file__).parent / "model_configs"] + [
    Path(p) for p in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep) if p
]
_CONFIGS: Dict[str, Dict[str, Any]] = {}
_CONFIG_FILES: Dict[str, Path] = {}
_BAD_CONFIGS: Dict[str, Tuple[Path, str]] = {}
"""Config files that could not be registered: name (file stem) -> (file, why). Asking for that name is an error."""
_WARNED: set = set()
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build a model, independent of its weights.

    Attributes:
        name: the model name (registry name, or the name a saved model was created under).
        model_cfg: the open_clip part of the config, passed to open_clip's model classes.
        memory: the memory knobs, or None for a model without memory.
        teacher: the architecture the memory model is distilled from (its pretrained tags apply); for a model
            without memory, its own name.
        text: the text tower and its context length.
        stem: how the vision tower turns images into patch tokens (open_clip's patchify convolution by default).
        wide_mlp: vision blocks whose MLP is widened beyond the teacher's (none by default).
    """

    name: str
    model_cfg: Dict[str, Any] = field(hash=False)
    memory: Optional[MemoryConfig] = None
    teacher: Optional[str] = None
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    stem: VisionStemConfig = field(default_factory=VisionStemConfig)
    wide_mlp: WideMLPConfig = field(default_factory=WideMLPConfig)

    @property
    def has_memory(self) -> bool:
        return self.memory is not None

    @classmethod
    def from_config(cls, name: str, config: Dict[str, Any]) -> "ModelSpec":
        """Split a memclip JSON config into its open_clip part and memclip's keys."""
        missing = [key for key in OPEN_CLIP_REQUIRED_KEYS if key not in config]
        if missing:
            raise InputError(f"model config '{name}' lacks the open_clip keys {missing}")
        model_cfg = {k: copy.deepcopy(v) for k, v in config.items() if k not in MEMCLIP_KEYS}
        memory = config.get("memory")
        if memory is not None and not isinstance(memory, MemoryConfig):
            memory = MemoryConfig.from_dict(memory)
        teacher = config.get("teacher")
        if memory is not None and not teacher:
            raise InputError(f"model config '{name}' has a memory block but no 'teacher' architecture name")
        text = config.get("text_tower") or TextTowerConfig()
        if not isinstance(text, TextTowerConfig):
            text = TextTowerConfig.from_dict(text)
        stem = config.get("vision_stem") or VisionStemConfig()
        if not isinstance(stem, VisionStemConfig):
            stem = VisionStemConfig.from_dict(stem)
        wide_mlp = config.get("wide_mlp") or WideMLPConfig()
        if not isinstance(wide_mlp, WideMLPConfig):
            wide_mlp = WideMLPConfig.from_dict(wide_mlp)
        return cls(name=name, model_cfg=model_cfg, memory=memory, teacher=teacher or name, text=text, stem=stem,
                   wide_mlp=wide_mlp)

    @property
    def context_length(self) -> int:
        """Tokens the text tower reads (after any stretch or RoPE extension)."""
        return self.text.resolved_context_length(self.model_cfg.get("text_cfg", {}).get("context_length", 77))

    def to_config(self) -> Dict[str, Any]:
        """The memclip JSON form: open_clip config plus ``teacher`` and ``memory``."""
        config = {"teacher": self.teacher, **copy.deepcopy(self.model_cfg)}
        if self.memory is not None:
            config["memory"] = self.memory.to_dict()
        if not self.text.is_default:
            config["text_tower"] = self.text.to_dict()
        if not self.stem.is_default:
            config["vision_stem"] = self.stem.to_dict()
        if not self.wide_mlp.is_default:
            config["wide_mlp"] = self.wide_mlp.to_dict()
        return config

    def replace(self, **changes: Any) -> "ModelSpec":
        """A copy with ``changes`` applied (name, model_cfg, memory, teacher, text, stem, wide_mlp)."""
        changes.setdefault("model_cfg", copy.deepcopy(self.model_cfg))
        return dataclasses.replace(self, **changes)

    def with_memory(self, memory: Optional[MemoryConfig]) -> "ModelSpec":
        return self.replace(memory=memory)


def _natural_key(text: str) -> list:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", text.lower())]


def _read_config_file(file: Path) -> Tuple[Optional[Dict[str, Any]], str]:
    """(config, '') for a model config file, else (None, why it is not one)."""
    try:
        with open(file, "r", encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        return None, f"not readable JSON ({type(error).__name__}: {next(iter(str(error).splitlines()), '')})"
    if not isinstance(config, dict):
        return None, f"a JSON {type(config).__name__}, not a model config object"
    missing = [key for key in OPEN_CLIP_REQUIRED_KEYS if key not in config]
    if missing:
        return None, f"not a model config (it lacks {missing})"
    return config, ""


def _warn_once(message: str, *args: Any) -> None:
    key = message % args
    if key not in _WARNED:
        _WARNED.add(key)
        logger.warning(message, *args)


def _rescan() -> None:
    """Register every config file of the config paths. One that cannot be read is skipped with a warning naming it
    (so a bad file in a shared ``MEMCLIP_MODEL_CONFIGS`` folder breaks no program that does not ask for it), and
    asking for its name is an error naming it. A name registered by two files takes the later file, with a warning
    naming both."""
    _CONFIGS.clear()
    _CONFIG_FILES.clear()
    _BAD_CONFIGS.clear()
    files: List[Path] = []
    for path in _CONFIG_PATHS:
        if path.is_file() and path.suffix == ".json":
            files.append(path)
        elif path.is_dir():
            files.extend(sorted(path.glob("*.json")))
    for file in files:
        config, problem = _read_config_file(file)
        if config is None:
            _warn_once("model config %s is skipped: %s", file, problem)
            _BAD_CONFIGS[file.stem] = (file, problem)
            _CONFIGS.pop(file.stem, None)
            continue
        if file.stem in _CONFIG_FILES and _CONFIG_FILES[file.stem].resolve() != file.resolve():
            _warn_once("model config %s replaces %s (both name the model '%s')", file, _CONFIG_FILES[file.stem],
                       file.stem)
        _BAD_CONFIGS.pop(file.stem, None)
        _CONFIGS[file.stem] = config
        _CONFIG_FILES[file.stem] = file


def add_model_config(path: Union[str, Path]) -> None:
    """Register a config file, or every ``*.json`` in a folder, under its file stem (as open_clip does)."""
    _CONFIG_PATHS.append(Path(path))
    _rescan()


def list_memclip_models() -> List[str]:
    """Names of memclip's own configs (memory models and the tiny architectures)."""
    return sorted(_CONFIGS, key=_natural_key)


def list_models() -> List[str]:
    """open_clip's architectures plus memclip's, sorted naturally."""
    return sorted(set(_open_clip_list_models()) | set(_CONFIGS), key=_natural_key)


def is_saved_model_dir(path: Union[str, Path]) -> bool:
    return Path(path).is_dir() and (Path(path) / SAVED_CONFIG_NAME).is_file()


def read_saved_config(path: Union[str, Path]) -> Dict[str, Any]:
    """The ``memclip_config.json`` of a saved folder.

    Raises:
        InputError: the file is not valid JSON or lacks the model config (the message names the file).
    """
    file = Path(path) / SAVED_CONFIG_NAME
    try:
        with open(file, "r", encoding="utf-8") as f:
            saved = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{file} is not valid JSON ({error}): the saved model's config is damaged") from error
    if not isinstance(saved, dict) or not isinstance(saved.get("model_cfg"), dict):
        raise InputError(f"{file} has no 'model_cfg' dict: not a folder written by memclip.save_pretrained")
    return saved


def get_model_spec(name: str, cache_dir: Optional[str] = None) -> ModelSpec:
    """Find a model by registry name, saved memclip folder, open_clip name, or ``hf-hub:ORG/REPO[@REVISION]`` /
    ``local-dir:DIR`` (a memclip or open_clip model folder; see :mod:`memclip.hub`, which fetches a Hub repo's
    configs into ``cache_dir``, the Hub's cache by default).

    Raises:
        InputError: the name is unknown to memclip and open_clip, or its folder holds neither model.
    """
    if hub.has_schema(name):
        source = hub.resolve(name, cache_dir)
        if source.is_memclip:
            return get_model_spec(str(source.folder))
        return ModelSpec.from_config(name, source.open_clip_model_cfg())
    if is_saved_model_dir(name):
        saved = read_saved_config(name)
        return _spec_from_file(saved.get("name", Path(name).name), saved["model_cfg"], Path(name) / SAVED_CONFIG_NAME)
    for candidate in (name, name.replace("/", "-")):
        if candidate in _BAD_CONFIGS:
            file, problem = _BAD_CONFIGS[candidate]
            raise InputError(f"model '{candidate}': its config file {file} is {problem}")
        if candidate in _CONFIGS:
            return _spec_from_file(candidate, _CONFIGS[candidate], _CONFIG_FILES.get(candidate))
    try:
        open_clip_cfg = open_clip.get_model_config(name)
    except (OSError, ValueError):
        open_clip_cfg = None
    if open_clip_cfg is None:
        close = [m for m in list_models() if m.lower().startswith(name.lower().split("-")[0])][:8]
        hint = f" Similar names: {close}." if close else ""
        raise InputError(
            f"Unknown model '{name}': not a memclip config, a saved memclip folder or an open_clip model.{hint} "
            "See memclip.list_models()."
        )
    return ModelSpec.from_config(name, open_clip_cfg)


def _spec_from_file(name: str, config: Dict[str, Any], file: Optional[Path]) -> ModelSpec:
    """:meth:`ModelSpec.from_config`, its errors naming the file the config came from."""
    try:
        return ModelSpec.from_config(name, config)
    except (ValueError, TypeError, KeyError) as error:
        where = f" (file {file})" if file else ""
        raise InputError(f"model config '{name}'{where} is invalid: {error}") from error


def get_model_config(name: str) -> Dict[str, Any]:
    """The memclip JSON config of ``name`` (a copy)."""
    return get_model_spec(name).to_config()


_rescan()
