"""Opt-in: let ``open_clip.create_model("ViT-B-16-mem")`` build memclip models in this process.

open_clip has no plugin mechanism for new model classes, so :func:`register_open_clip` wraps four of its public
functions (``create_model``, ``create_model_and_transforms``, ``get_tokenizer``, ``list_models``) with versions that
send memclip's names to memclip and everything else to the original. Nothing happens at import time;
:func:`unregister_open_clip` restores the originals.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict

import open_clip
import open_clip.factory

from . import factory, registry

_WRAPPED = ("create_model", "create_model_and_transforms", "get_tokenizer", "list_models")
_originals: Dict[str, Callable] = {}


def _is_memclip_name(name: Any) -> bool:
    return isinstance(name, str) and (name in registry.list_memclip_models() or registry.is_saved_model_dir(name))


def _route(name: str, original: Callable, ours: Callable) -> Callable:
    @functools.wraps(original)
    def routed(model_name: str = "", *args: Any, **kwargs: Any) -> Any:
        if _is_memclip_name(model_name):
            return ours(model_name, *args, **kwargs)
        return original(model_name, *args, **kwargs)

    routed.__memclip_routed__ = True
    return routed


def register_open_clip() -> None:
    """Route memclip model names given to open_clip's factory functions to memclip (idempotent)."""
    if _originals:
        return
    for name in _WRAPPED:
        _originals[name] = getattr(open_clip.factory, name)
    for module in (open_clip, open_clip.factory):
        module.create_model = _route("create_model", _originals["create_model"], factory.create_model)
        module.create_model_and_transforms = _route(
            "create_model_and_transforms", _originals["create_model_and_transforms"],
            factory.create_model_and_transforms,
        )
        module.get_tokenizer = _route("get_tokenizer", _originals["get_tokenizer"], factory.get_tokenizer)
        module.list_models = registry.list_models


def unregister_open_clip() -> None:
    """Undo :func:`register_open_clip`."""
    if not _originals:
        return
    for module in (open_clip, open_clip.factory):
        for name, original in _originals.items():
            setattr(module, name, original)
    _originals.clear()

