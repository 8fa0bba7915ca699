"""The convolutional vision stem: config validation, factory support, weights round trip, surgery and dense features."""
import json

import pytest
import torch

import memclip
from memclip.stem import ConvStem, VisionStemConfig, attach_stem
from memclip_train.eval.segmentation.dense import dense_features
from memory_layers import ProductKeyMemory

STEM = {"kind": "conv", "channels": [8, 16, 16], "norm": "group"}


@pytest.fixture(scope="module")
def stem_configs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stem_configs")
    micro = {k: v for k, v in memclip.get_model_config("Test-Micro").items() if k != "teacher"}
    memory = memclip.get_model_config("Test-Micro-mem")["memory"]
    (folder / "Test-Stem.json").write_text(json.dumps({**micro, "vision_stem": STEM}))
    (folder / "Test-Stem-mem.json").write_text(json.dumps(
        {"teacher": "Test-Stem", **micro, "vision_stem": STEM, "memory": memory}))
    memclip.add_model_config(folder)
    return folder


@pytest.mark.parametrize("fields, message", [
    ({"kind": "dense"}, "kind"),
    ({"kind": "conv"}, "at least one"),
    ({"kind": "patch", "channels": [8]}, "only a conv stem"),
    ({"kind": "conv", "channels": [12]}, "multiples of 8"),
    ({"kind": "conv", "channels": [8], "norm": "batch"}, "norm"),
])
def test_bad_stem_configs_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        VisionStemConfig.from_dict(fields)


def test_unknown_stem_field_is_refused():
    with pytest.raises(ValueError, match="unknown fields"):
        VisionStemConfig.from_dict({"kind": "conv", "channels": [8], "stride": 2})


def test_stem_must_downsample_like_the_patch():
    model = memclip.create_model("Test-Micro")
    with pytest.raises(ValueError, match="patch size is 8"):
        attach_stem(model.visual, VisionStemConfig("conv", (8, 16)))


def test_conv_stem_keeps_the_token_grid():
    stem = ConvStem(32, VisionStemConfig("conv", (8, 16, 16)))
    assert stem(torch.randn(2, 3, 32, 32)).shape == (2, 32, 4, 4)


def test_factory_builds_the_stem_and_the_model_runs(stem_configs):
    model = memclip.create_model("Test-Stem")
    assert isinstance(model.visual.conv1, ConvStem)
    assert model.memclip_spec.stem == VisionStemConfig.from_dict(STEM)
    assert memclip.get_model_config("Test-Stem")["vision_stem"] == STEM
    images = torch.randn(2, 3, 32, 32)
    assert model.encode_image(images).shape == (2, 32)
    patch = memclip.create_model("Test-Micro")
    assert isinstance(patch.visual.conv1, torch.nn.Conv2d)
    assert "vision_stem" not in memclip.get_model_config("Test-Micro")


def test_stem_round_trips_through_save_pretrained(stem_configs, tmp_path):
    model = memclip.create_model("Test-Stem")
    memclip.save_pretrained(model, tmp_path / "saved")
    loaded = memclip.create_model(str(tmp_path / "saved"))
    assert isinstance(loaded.visual.conv1, ConvStem)
    images = torch.randn(2, 3, 32, 32)
    model.eval(), loaded.eval()
    assert torch.equal(model.encode_image(images), loaded.encode_image(images))


def test_student_of_a_stem_teacher_keeps_the_teachers_stem(stem_configs, tmp_path):
    teacher = memclip.create_model("Test-Stem")
    memclip.save_pretrained(teacher, tmp_path / "teacher")
    student = memclip.create_model("Test-Stem-mem", pretrained=str(tmp_path / "teacher"))
    assert isinstance(student.visual.conv1, ConvStem)
    assert len(memclip.memory_layers_of(student)) == 2
    assert any(isinstance(m, ProductKeyMemory) for m in student.visual.modules())
    for (name, a), b in zip(teacher.visual.conv1.state_dict().items(), student.visual.conv1.state_dict().values()):
        assert torch.equal(a, b), name


def test_dense_features_work_with_the_stem(stem_configs):
    model = memclip.create_model("Test-Stem").eval()
    features = dense_features(model.visual, torch.randn(2, 3, 32, 32), "sclip")
    assert features.shape == (2, 4, 4, 32)
    assert torch.allclose(features.norm(dim=-1), torch.ones(2, 4, 4), atol=1e-5)


def test_patch_checkpoint_does_not_load_into_a_stem_model(stem_configs, tmp_path):
    torch.save(memclip.create_model("Test-Micro").state_dict(), tmp_path / "patch.pt")   # open_clip layout, no config
    with pytest.raises(RuntimeError, match="conv1"):
        memclip.create_model("Test-Stem", pretrained=str(tmp_path / "patch.pt"))
