"""hf-hub: names where the programs take a model: training from a Hub model and evaluating one, offline, from a Hub
cache laid out as huggingface_hub lays it out."""
import huggingface_hub
import huggingface_hub.constants
import pytest
import torch
from train_helpers import train_args

import memclip
from memclip_train.eval.models import ModelRef
from memclip_train.main import main as train_main

from hub_cache import lay_out_repo


@pytest.fixture
def hub_model(monkeypatch, tmp_path):
    """Test-Micro-mem with trained-looking weights as hf-hub:me/tiny-mem in an offline Hub cache."""
    torch.manual_seed(4)
    model = memclip.create_model("Test-Micro-mem")
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    cache = tmp_path / "hub-cache"
    lay_out_repo(cache, "me/tiny-mem", memclip.save_pretrained(model, tmp_path / "saved"), "e" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return model


@pytest.mark.slow
def test_training_starts_from_a_hub_model(hub_model, micro_world, tmp_path):
    assert train_main(train_args(micro_world, tmp_path, "from-hub", "--model", "hf-hub:me/tiny-mem",
                                 "--epochs", "1")) == 0
    trained = memclip.create_model(str(tmp_path / "from-hub" / "final"))
    assert trained.memclip_spec.memory == hub_model.memclip_spec.memory
    assert train_main(train_args(micro_world, tmp_path, "pretrained-from-hub", "--model", "Test-Micro-mem",
                                 "--pretrained", "hf-hub:me/tiny-mem", "--epochs", "1", "--lr", "0")) == 0
    kept = memclip.create_model(str(tmp_path / "pretrained-from-hub" / "final")).state_dict()
    fixed = [k for k in kept if ".mlp.values." not in k]  # lr 0 freezes all but the values (their own fixed lr)
    assert all(torch.equal(kept[k], hub_model.state_dict()[k]) for k in fixed)


def test_eval_names_a_hub_model_by_its_name_and_its_snapshot(hub_model):
    ref = ModelRef("hf-hub:me/tiny-mem")
    assert ref.label == "hf-hub:me/tiny-mem" and ref.tag == "hf-hub_me_tiny-mem"
    assert ("e" * 40) in ref.identity()["model_folder"]  # a new revision is a new cache key
