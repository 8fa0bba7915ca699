"""Opt-in: let open_clip's own functions build and list memclip models in this process.

open_clip has no plugin mechanism for new model classes, so :func:`register_open_clip` replaces some of its public
functions, in the ``open_clip`` namespace and in the modules that define them, with versions that send memclip's
names (its configs, saved folders, and ``hf-hub:``/``local-dir:`` memclip models) to memclip and everything else to
the original:

- ``create_model``, ``create_model_and_transforms``, ``create_model_from_pretrained``, ``get_tokenizer``: routed.
  They take the arguments open_clip's callers pass (open_clip_train's main passes ``jit`` and ``pretrained_image``,
  its tokenizer call ``cache_dir``); a value that would change a memclip model stops with the reason.
- ``get_model_config``: memclip's config (open_clip's keys plus ``teacher`` and ``memory``) for memclip names.
- ``list_models``, ``list_pretrained``, ``list_pretrained_tags_by_model``: open_clip's entries plus memclip's.

Nothing happens at import time; :func:`unregister_open_clip` restores the originals. Code that binds a function
with ``from open_clip import create_model`` keeps the one it found, so register before importing it (the launcher
:mod:`memclip.clip_benchmark` does).
"""
from __future__ import annotations

import functools
from types import ModuleType
from typing import Any, Callable, Dict, Tuple

import open_clip
import open_clip.factory
import open_clip.pretrained

from . import factory, hub, pretrained, registry
from .errors import InputError

_ROUTED: Dict[str, Callable] = {
    "create_model": factory.create_model,
    "create_model_and_transforms": factory.create_model_and_transforms,
    "create_model_from_pretrained": factory.create_model_from_pretrained,
    "get_tokenizer": factory.get_tokenizer,
    "get_model_config": registry.get_model_config,
}
_REPLACED: Dict[str, Callable] = {
    "list_models": registry.list_models,
    "list_pretrained": pretrained.list_pretrained,
    "list_pretrained_tags_by_model": pretrained.list_pretrained_tags_by_model,
}
_MODULES: Tuple[ModuleType, ...] = (open_clip, open_clip.factory, open_clip.pretrained)
_originals: Dict[Tuple[str, str], Callable] = {}


def is_memclip_name(name: Any) -> bool:
    """Whether memclip builds ``name``: one of its configs, a saved folder, or an ``hf-hub:``/``local-dir:`` model
    holding a memclip config. A schema name that cannot be resolved counts too, so that memclip reports why."""
    if not isinstance(name, str):
        return False
    if hub.has_schema(name):
        try:
            return hub.resolve(name).is_memclip
        except (InputError, FileNotFoundError):
            return True
    return name in registry.list_memclip_models() or registry.is_saved_model_dir(name)


def _route(original: Callable, ours: Callable) -> Callable:
    @functools.wraps(original)
    def routed(model_name: str = "", *args: Any, **kwargs: Any) -> Any:
        if is_memclip_name(model_name):
            return ours(model_name, *args, **kwargs)
        return original(model_name, *args, **kwargs)

    routed.__memclip_routed__ = True
    return routed


def register_open_clip() -> None:
    """Route memclip model names given to open_clip's functions to memclip, and list memclip's models and weights in
    open_clip's listings (idempotent)."""
    if _originals:
        return
    for module in _MODULES:
        for name, ours in {**_ROUTED, **_REPLACED}.items():
            if not hasattr(module, name):
                continue
            original = getattr(module, name)
            _originals[(module.__name__, name)] = original
            setattr(module, name, _route(original, ours) if name in _ROUTED else ours)


def unregister_open_clip() -> None:
    """Undo :func:`register_open_clip`."""
    modules = {module.__name__: module for module in _MODULES}
    for (module_name, name), original in _originals.items():
        setattr(modules[module_name], name, original)
    _originals.clear()
