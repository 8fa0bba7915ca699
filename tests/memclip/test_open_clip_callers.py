"""open_clip's own callers after memclip.register_open_clip(): open_clip_train's main and clip_benchmark's model
loader, as installed, make their own calls (with open_clip's default arguments) and get memclip models."""
import os
import subprocess
import sys

import open_clip
import pytest
import torch

import repo_paths

import memclip

SRC = str(repo_paths.SRC)


@pytest.fixture
def registered():
    memclip.register_open_clip()
    try:
        yield
    finally:
        memclip.unregister_open_clip()


def test_listings_name_memclips_models_and_shipped_weights(registered):
    assert ("ViT-Tiny-8", "synth") in open_clip.list_pretrained()
    assert "ViT-Tiny-8:synth" in open_clip.list_pretrained(as_str=True)
    assert ("RN50", "openai") in open_clip.list_pretrained()
    assert open_clip.list_pretrained_tags_by_model("ViT-Tiny-8") == ["synth"]
    assert "openai" in open_clip.list_pretrained_tags_by_model("ViT-B-16")
    assert open_clip.get_model_config("ViT-Tiny-8-mem")["memory"]["layers"] == [2, 3]
    assert open_clip.get_model_config("ViT-B-16")["vision_cfg"]["patch_size"] == 16
    assert "Test-Micro-mem" in open_clip.list_models()


def test_listings_are_open_clips_again_after_unregister():
    assert ("ViT-Tiny-8", "synth") in memclip.list_pretrained()
    memclip.register_open_clip()
    memclip.unregister_open_clip()
    assert ("ViT-Tiny-8", "synth") not in open_clip.list_pretrained()
    assert open_clip.get_model_config("ViT-Tiny-8-mem") is None


def test_create_model_from_pretrained(registered):
    model, preprocess = open_clip.create_model_from_pretrained("ViT-Tiny-8-mem", pretrained="synth")
    assert sorted(memclip.memory_layers_of(model)) == [2, 3]
    teacher = memclip.create_model("ViT-Tiny-8", pretrained="synth")
    assert torch.equal(model.visual.conv1.weight, teacher.visual.conv1.weight)
    from PIL import Image

    assert preprocess(Image.new("RGB", (80, 50))).shape == (3, 64, 64)
    with pytest.raises(RuntimeError, match="require_pretrained"):
        open_clip.create_model_from_pretrained("ViT-Tiny-8-mem")


def test_clip_benchmarks_loader(registered):
    """clip_benchmark's own loader (clip_benchmark.models.load_clip, its calls unchanged)."""
    from clip_benchmark.models import load_clip

    model, transform, tokenizer = load_clip(model_type="open_clip", model_name="ViT-Tiny-8-mem", pretrained="synth",
                                            cache_dir=None, device="cpu")
    assert sorted(memclip.memory_layers_of(model)) == [2, 3]
    assert tokenizer(["a red star"]).shape == (1, 77)


def test_values_that_would_change_the_model_are_refused_with_the_reason(registered):
    with pytest.raises(ValueError, match="jit=True.*TorchScript"):
        open_clip.create_model("Test-Micro-mem", jit=True)
    with pytest.raises(ValueError, match="pretrained_image=True.*timm"):
        open_clip.create_model_and_transforms("Test-Micro-mem", pretrained_image=True)
    with pytest.raises(TypeError, match=r"only open_clip models take: \['init_logit_bias'\]"):
        open_clip.create_model("Test-Micro-mem", init_logit_bias=-10.0)
    model = open_clip.create_model("Test-Micro-mem", jit=False, pretrained_image=False, pretrained_text=True,
                                   load_weights=True, cache_dir="/nowhere")
    assert sorted(memclip.memory_layers_of(model)) == [1, 2]
    assert open_clip.get_tokenizer("Test-Micro-mem", cache_dir="/nowhere")(["x"]).shape == (1, 77)


@pytest.mark.slow
def test_open_clip_trains_a_memory_model_with_its_own_main(tmp_path, micro_configs):
    """open_clip_train's main, unchanged: its create_model_and_transforms(jit=, pretrained_image=, output_dict=,
    cache_dir=) and get_tokenizer(cache_dir=, context_length=) calls build the memory model, it trains two steps on
    its synthetic data and saves a checkpoint that memclip loads."""
    script = ("import memclip; memclip.register_open_clip()\n"
              "from open_clip_train.main import main\n"
              f"main(['--model', 'Test-Micro-mem', '--dataset-type', 'synthetic', '--train-num-samples', '16', "
              f"'--batch-size', '8', '--epochs', '1', '--workers', '0', '--logs', {str(tmp_path)!r}, '--name', 'run', "
              f"'--precision', 'fp32', '--lr', '1e-3', '--warmup', '1'])\n")
    environment = dict(os.environ, PYTHONPATH=SRC, MEMCLIP_MODEL_CONFIGS=str(micro_configs))
    done = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = tmp_path / "run" / "checkpoints" / "epoch_1.pt"
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert any(".mlp.values.weight" in key for key in state)
    model = memclip.create_model("Test-Micro-mem", pretrained=str(checkpoint))
    assert torch.equal(model.state_dict()["visual.conv1.weight"], state["module.visual.conv1.weight"]
                       if "module.visual.conv1.weight" in state else state["visual.conv1.weight"])
