"""memclip.surgery.usage_by_block: track_usage's trackers named by vision block, as training and eval report them."""
import torch

import memclip
from memclip.surgery import usage_by_block


def test_usage_is_keyed_by_block_index():
    torch.manual_seed(0)
    model = memclip.create_model("ViT-Tiny-8-mem").eval()
    with torch.no_grad(), memclip.track_usage(model) as usage:
        model.encode_image(torch.randn(2, 3, 64, 64))
    summaries = usage_by_block(model, usage)
    assert sorted(summaries) == sorted(memclip.memory_layers_of(model)) == [2, 3]
    tokens = 2 * (64 // 8) ** 2 + 2  # patches plus the class token, per image
    assert all(s.tokens == tokens and 0 < s.fraction_read <= 1 for s in summaries.values())
    assert usage_by_block(torch.nn.Sequential(), usage).keys() == usage.keys(), "no blocks: module names stay"
