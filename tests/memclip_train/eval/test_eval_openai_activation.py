"""OpenAI's weights were trained with QuickGELU: the eval program builds them with it even on a GELU config name."""
import logging

import torch

import memclip
from memclip_train.eval.models import ModelRef, load_model
from memclip_train.eval import models as eval_models


def test_openai_tag_on_a_gelu_config_is_built_with_quick_gelu(monkeypatch, caplog, tmp_path):
    assert ModelRef("ViT-B-16", "openai").needs_quick_gelu
    assert not ModelRef("ViT-B-16-quickgelu", "openai").needs_quick_gelu
    assert not ModelRef("ViT-B-16-mem", "openai").needs_quick_gelu  # memclip's configs use QuickGELU
    assert not ModelRef("ViT-B-16", "laion2b_s34b_b88k").needs_quick_gelu  # trained with GELU
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    assert not ModelRef("ViT-B-16", str(weights)).needs_quick_gelu  # a file says nothing about its activation
    assert ModelRef("ViT-B-16", "openai").identity() != ModelRef("ViT-B-16", "laion2b_s34b_b88k").identity()
    assert ModelRef("ViT-B-16", "openai").identity()["force_quick_gelu"] is True  # old GELU results are not reused

    built = {}
    real = memclip.create_model_and_transforms

    def create(name, pretrained=None, **kwargs):  # no download: build a micro architecture the same way
        built.update(kwargs, name=name, pretrained=pretrained)
        return real("Test-Micro", force_quick_gelu=kwargs["force_quick_gelu"])

    monkeypatch.setattr(eval_models.memclip, "create_model_and_transforms", create)
    with caplog.at_level(logging.WARNING):
        loaded = load_model(ModelRef("ViT-B-16", "openai"), torch.device("cpu"))
    assert built["force_quick_gelu"] is True and built["pretrained"] == "openai"
    assert "evaluating with QuickGELU" in caplog.text and "ViT-B-16-quickgelu" in caplog.text
    assert loaded.model.memclip_spec.model_cfg["quick_gelu"]
