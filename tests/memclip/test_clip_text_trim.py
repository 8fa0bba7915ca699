"""memclip's CLIP skips the padding after a batch's longest caption: same features and gradients as open_clip's."""
import open_clip
import pytest
import torch

import memclip
from memclip.clip_model import CLIP, used_length

CAPTIONS = ["a red star", "two blue rings on a grey background, one of them small", "a large striped purple chevron"]


def full_length(model, text):
    """open_clip's own encode_text, which runs every position."""
    return open_clip.CLIP.encode_text(model, text)


def test_used_length():
    text = torch.tensor([[5, 6, 0, 0, 0], [7, 8, 9, 0, 0]])
    assert used_length(text) == 3
    assert used_length(torch.zeros(2, 4, dtype=torch.long)) == 1


@pytest.mark.parametrize("stretch", [None, 248])
def test_trimmed_text_features_and_gradients_match_open_clip(stretch):
    text_tower = {"context_length": stretch, "pos_stretch": "longclip"} if stretch else None
    model = memclip.create_model("Test-Micro", text_tower=text_tower).train()
    assert isinstance(model, CLIP) and isinstance(model, open_clip.CLIP)
    tokens = memclip.get_tokenizer(model.memclip_spec)(CAPTIONS)
    assert used_length(tokens) < tokens.shape[1]
    trimmed = model.encode_text(tokens)
    trimmed.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    full = full_length(model, tokens)
    full.square().sum().backward()
    assert torch.allclose(trimmed, full, atol=1e-5, rtol=1e-5)
    for name, param in model.named_parameters():
        if param.grad is not None:
            assert torch.allclose(grads[name], param.grad, atol=1e-5, rtol=1e-4), name


def test_a_pooling_that_reads_the_padding_is_not_trimmed():
    model = memclip.create_model("Test-Micro").eval()
    model.text_pool_type = "last"
    tokens = memclip.get_tokenizer("Test-Micro")(CAPTIONS)
    with torch.no_grad():
        assert torch.equal(model.encode_text(tokens), full_length(model, tokens))
