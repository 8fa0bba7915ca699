"""Stage 2 with TULIP's released text encoder (the thesis's "Ours+TULIP"): the tower is read in TULIP's format, stays
frozen, and the fine-tuned model reloads with it."""
import pytest
import torch
from train_helpers import train_args

import memclip
from memclip.tulip_weights import tulip_text_state_dict
from memclip_train.main import main


@pytest.mark.slow
def test_stage2_with_a_frozen_tulip_text_tower(micro_world, tmp_path, micro_configs):
    donor = memclip.create_model("Test-Micro")  # open_clip CLIP keys: the text tower at the top level, as TULIP's
    state = {k: v.clone() + 0.01 * torch.randn_like(v) for k, v in donor.state_dict().items()}
    path = tmp_path / "tulip.pt"
    torch.save({"epoch": 1, "name": "tulip", "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    args = train_args(micro_world, tmp_path, "tulip", "--model", "Test-Micro-mem", "--long-short-alpha", "0.8",
                      "--caption-key", "txt", "--long-caption-key", "json.long", "--text-tower", f"tulip:{path}",
                      "--trainable", "memory,visual", "--epochs", "1", "--warmup", "1")
    assert main(args) == 0
    model = memclip.create_model(str(tmp_path / "tulip" / "final"))
    text = model.memclip_spec.text
    assert (text.kind, text.activation, text.context_length) == ("rope", "gelu", 248)
    expected = tulip_text_state_dict(state, heads=2)
    for key, value in model.text.state_dict().items():
        assert torch.equal(value, expected[key]), f"{key} moved: the TULIP tower must stay frozen"
