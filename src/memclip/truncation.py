"""Explicit truncation: how many captions a tokenizer cuts at its context length."""
from __future__ import annotations

from typing import Callable, Sequence, Tuple

import torch


def token_lengths(tokenizer: Callable, texts: Sequence[str]) -> torch.Tensor:
    """Untruncated token counts (with start and end tokens) of each text: (N,) int64.

    Uses the tokenizer's ``encode`` (open_clip's SimpleTokenizer) when it has one; otherwise tokenizes at a large
    context length and counts non-padding tokens.
    """
    encode = getattr(tokenizer, "encode", None)
    if callable(encode) and hasattr(tokenizer, "sot_token_id"):
        return torch.tensor([len(encode(t)) + 2 for t in texts], dtype=torch.long)
    tokens = tokenizer(list(texts), context_length=4096)
    return (tokens != 0).sum(dim=1)


def tokenize_counting_truncation(tokenizer: Callable, texts: Sequence[str]) -> Tuple[torch.Tensor, int]:
    """Tokenize ``texts`` at the tokenizer's context length and count the captions that were cut.

    Returns:
        (tokens (N, context_length) int64, number of captions longer than the context).
    """
    tokens = tokenizer(list(texts))
    cut = int((token_lengths(tokenizer, texts) > tokens.shape[1]).sum())
    return tokens, cut
