"""A fixed-names text tower: each caption is a name index, and its text feature is a fixed random unit vector.

An ideal text side for capacity probes: the K names are well separated (random directions of the joint space) and
fixed, so whatever a model learns about them it learns in its image tower. A trained text tower would hold the facts
on the text side, and a frozen CLIP tower gives made-up names nearly one embedding. Captions are the names' indices
written as decimal integers ("0" .. "K-1"); :class:`NameTokenizer` turns them into (B, 1) index tensors and the
model's ``encode_text`` looks them up in its ``name_table`` buffer ((K, embed_dim), saved with the model).

    >>> model = memclip.create_model("ViT-Tiny-8", pretrained="synth",
    ...                              text_tower={"kind": "names", "names": 1024, "names_seed": 0})
    >>> tokenizer = memclip.get_tokenizer(model.memclip_spec)        # a NameTokenizer
    >>> model.encode_text(tokenizer(["7", "1023"])).shape
    torch.Size([2, 128])
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import nn

from .errors import InputError

NAME_TABLE = "name_table"


def random_names(count: int, dim: int, seed: int) -> torch.Tensor:
    """(count, dim) random unit vectors drawn from ``seed``: name ``i`` is row ``i``."""
    generator = torch.Generator().manual_seed(seed)
    names = torch.randn(count, dim, generator=generator)
    return names / names.norm(dim=1, keepdim=True)


class NameTokenizer:
    """Captions that are name indices -> (B, 1) int64 tensors.

    Args:
        names: how many names the tower holds (captions must be integers in ``0 .. names - 1``).
    """

    context_length = 1

    def __init__(self, names: int) -> None:
        self.names = names

    def __call__(self, texts: Union[str, Sequence[str]], context_length: Optional[int] = None) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        indices = []
        for text in texts:
            stripped = text.strip()
            if not stripped.isdigit() or int(stripped) >= self.names:
                raise InputError(f"caption {text!r} is not a name index: a names text tower reads captions that are "
                                 f"integers from 0 to {self.names - 1}")
            indices.append(int(stripped))
        return torch.tensor(indices, dtype=torch.long)[:, None]


def text_width(model: nn.Module) -> int:
    """The joint embedding width of a CLIP model (its text projection's output)."""
    projection = model.text_projection
    return projection.out_features if isinstance(projection, nn.Linear) else projection.shape[-1]


def install_name_table(model: nn.Module, names: int, seed: int) -> None:
    """Give ``model`` a fixed name table (a buffer its ``encode_text`` reads instead of the text transformer)."""
    model.register_buffer(NAME_TABLE, random_names(names, text_width(model), seed))


def encode_names(table: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """(B, 1) name indices -> (B, embed_dim) unit text features."""
    return table[text[:, 0].long()]
