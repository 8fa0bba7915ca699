"""memclip: product-key memory for open_clip vision transformers, trained cheaply by distillation.

    >>> import memclip
    >>> model = memclip.create_model("ViT-B-16-mem", pretrained="openai")   # OpenAI weights + memory in 5 blocks
    >>> tokenizer = memclip.get_tokenizer("ViT-B-16-mem")
    >>> memclip.memory_layers_of(model).keys()
    dict_keys([4, 6, 8, 10, 11])
"""
from memory_layers import MemoryConfig, param_groups, track_usage

from .errors import InputError
from .factory import create_model, create_model_and_transforms, create_model_from_pretrained, get_tokenizer
from .open_clip_hook import register_open_clip, unregister_open_clip
from .pretrained import list_pretrained, list_pretrained_tags_by_model
from .push import push_to_hub
from .registry import ModelSpec, add_model_config, get_model_config, get_model_spec, list_models
from .surgery import attach_memory, freeze_except_memory, memory_layers_of, memory_parameters
from .text_tower import TextTowerConfig
from .version import __version__
from .weights_io import load_model_state_dict, save_pretrained

__all__ = [
    "InputError",
    "MemoryConfig",
    "ModelSpec",
    "TextTowerConfig",
    "__version__",
    "add_model_config",
    "attach_memory",
    "create_model",
    "create_model_and_transforms",
    "create_model_from_pretrained",
    "freeze_except_memory",
    "get_model_config",
    "get_model_spec",
    "get_tokenizer",
    "list_models",
    "list_pretrained",
    "list_pretrained_tags_by_model",
    "load_model_state_dict",
    "memory_layers_of",
    "memory_parameters",
    "param_groups",
    "push_to_hub",
    "register_open_clip",
    "save_pretrained",
    "track_usage",
    "unregister_open_clip",
]
