import json

import open_clip
import pytest
import torch

import memclip
from memclip.parallel import ParallelMemoryMLP
from memory_layers import MemoryConfig, ProductKeyMemory

CLIP_KEYS = ("embed_dim", "vision_cfg", "text_cfg", "quick_gelu")


def micro_inputs(batch=2, size=32):
    images = torch.randn(batch, 3, size, size)
    text = memclip.get_tokenizer("Test-Micro")(["a red star", "two blue rings"][:batch])
    return images, text


def test_list_models_has_ours_and_open_clips():
    names = memclip.list_models()
    for name in ("ViT-B-16-mem", "ViT-B-32-mem", "ViT-L-14-mem", "ViT-Tiny-8", "ViT-Tiny-8-mem", "ViT-B-16", "RN50"):
        assert name in names


@pytest.mark.parametrize("name", ["ViT-B-16-mem", "ViT-B-32-mem", "ViT-L-14-mem"])
def test_big_configs_are_their_teachers_plus_memory(name):
    ours = memclip.get_model_config(name)
    teacher = open_clip.get_model_config(ours["teacher"])
    assert {k: ours[k] for k in ours if k not in ("memory", "teacher")} == teacher
    assert "openai" in open_clip.list_pretrained_tags_by_model(ours["teacher"])


def test_vit_b_16_mem_has_thesis_memory():
    model = memclip.create_model("ViT-B-16-mem")
    layers = memclip.memory_layers_of(model)
    assert sorted(layers) == [4, 6, 8, 10, 11]
    config = model.memclip_spec.memory
    assert (config.n_keys, config.heads, config.knn, config.k_dim, config.v_dim) == (64, 4, 64, 256, 1024)
    assert config.share_values and config.value_lr == 1e-3
    tables = {id(m.values.weight) for m in layers.values()}
    assert len(tables) == 1
    assert "ProductKeyMemory" in repr(model)


def test_placement_and_text_tower_untouched():
    model = memclip.create_model("Test-Micro-mem")
    blocks = model.visual.transformer.resblocks
    assert [i for i, b in enumerate(blocks) if isinstance(b.mlp, ProductKeyMemory)] == [1, 2]
    assert isinstance(blocks[0].mlp, torch.nn.Sequential)
    assert not any(isinstance(m, ProductKeyMemory) for m in model.transformer.modules())
    values = [m.values.weight for m in memclip.memory_layers_of(model).values()]
    assert values[0] is values[1]
    assert sum(1 for p in model.parameters() if p is values[0]) == 1


def test_unshared_values_are_separate():
    model = memclip.create_model("Test-Micro-mem", memory={"share_values": False})
    layers = memclip.memory_layers_of(model)
    assert layers[1].values.weight is not layers[2].values.weight


def test_empty_layers_equals_open_clip_model(tmp_path):
    teacher = memclip.create_model("Test-Micro")
    path = tmp_path / "teacher.pt"
    torch.save({"state_dict": teacher.state_dict()}, path)
    student = memclip.create_model("Test-Micro-mem", pretrained=str(path), memory={"layers": []})
    assert not memclip.memory_layers_of(student)
    images, text = micro_inputs()
    teacher.eval(), student.eval()
    with torch.no_grad():
        for a, b in zip(teacher(images, text), student(images, text)):
            assert torch.equal(a, b)


def test_student_equals_teacher_outside_replaced_mlps(tmp_path):
    teacher = memclip.create_model("Test-Micro")
    path = tmp_path / "teacher.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in teacher.state_dict().items()}}, path)
    student = memclip.create_model("Test-Micro-mem", pretrained=str(path))
    t_state, s_state = teacher.state_dict(), student.state_dict()
    replaced = [k for k in t_state if any(k.startswith(f"visual.transformer.resblocks.{i}.mlp.") for i in (1, 2))]
    assert replaced, "the teacher has MLP weights in blocks 1 and 2"
    for key, value in t_state.items():
        if key in replaced:
            assert key not in s_state
        else:
            assert torch.equal(value, s_state[key]), key
    new = set(s_state) - set(t_state)
    assert new and all(".mlp." in k for k in new)


def test_parallel_mode_starts_exactly_at_the_teacher(tmp_path):
    teacher = memclip.create_model("Test-Micro").eval()
    path = tmp_path / "teacher.safetensors"
    memclip.save_pretrained(teacher, tmp_path / "saved")
    student = memclip.create_model(
        "Test-Micro-mem", pretrained=str(tmp_path / "saved"), memory={"mode": "parallel"}
    ).eval()
    assert all(isinstance(student.visual.transformer.resblocks[i].mlp, ParallelMemoryMLP) for i in (1, 2))
    images, _ = micro_inputs()
    with torch.no_grad():
        assert torch.equal(teacher.encode_image(images), student.encode_image(images))
    assert not path.exists()


def test_memory_in_block_zero_runs():
    model = memclip.create_model("Test-Micro-mem", memory={"layers": [0]})
    images, text = micro_inputs()
    image_features, text_features, _ = model(images, text)
    assert image_features.shape == (2, 32) and torch.isfinite(image_features).all()


def test_two_models_share_nothing():
    a = memclip.create_model("Test-Micro-mem")
    b = memclip.create_model("Test-Micro-mem")
    a_ids = {id(p) for p in a.parameters()}
    assert not a_ids & {id(p) for p in b.parameters()}
    with torch.no_grad():
        memclip.memory_layers_of(a)[1].values.weight.add_(1.0)
    assert not torch.equal(memclip.memory_layers_of(a)[1].values.weight, memclip.memory_layers_of(b)[1].values.weight)


def test_freeze_except_memory_and_value_lr_group():
    model = memclip.create_model("Test-Micro-mem")
    trainable = memclip.freeze_except_memory(model)
    assert trainable == sum(p.numel() for p in memclip.memory_parameters(model))
    images, text = micro_inputs()
    image_features, text_features, scale = model(images, text)
    (image_features.sum() + text_features.sum()).backward()
    memory_ids = {id(p) for p in memclip.memory_parameters(model)}
    for name, param in model.named_parameters():
        if id(param) in memory_ids:
            assert param.grad is not None, name
        else:
            assert param.grad is None, name
    groups = {g["name"]: g for g in memclip.param_groups(model, lr=5e-4, weight_decay=0.1)}
    assert groups["values"]["lr"] == 0.01
    counted = sum(p.numel() for g in groups.values() for p in g["params"])
    assert counted == trainable


def test_freeze_without_memory_is_an_error():
    with pytest.raises(ValueError, match="no memory layers"):
        memclip.freeze_except_memory(memclip.create_model("Test-Micro"))


def test_save_pretrained_round_trip(tmp_path):
    model = memclip.create_model("Test-Micro-mem", memory={"gated": True})
    with torch.no_grad():
        for param in memclip.memory_parameters(model):
            param.add_(torch.randn_like(param))
    folder = memclip.save_pretrained(model, tmp_path / "student")
    saved = json.loads((folder / "memclip_config.json").read_text())
    assert saved["model_cfg"]["memory"]["gated"] is True
    assert saved["model_cfg"]["teacher"] == "Test-Micro"
    for loaded in (memclip.create_model(str(folder)), memclip.create_model("Test-Micro-mem", pretrained=str(folder),
                                                                            memory={"gated": True})):
        a, b = model.state_dict(), loaded.state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
        layers = memclip.memory_layers_of(loaded)
        assert layers[1].values.weight is layers[2].values.weight
    # The recorded config wins over the registry's; explicit overrides win over both, and must match the weights.
    assert memclip.create_model("Test-Micro-mem", pretrained=str(folder)).memclip_spec.memory.gated
    with pytest.raises(RuntimeError, match="unexpected keys"):
        memclip.create_model("Test-Micro-mem", pretrained=str(folder), memory={"gated": False})
    with pytest.raises(RuntimeError, match="unexpected keys"):
        memclip.create_model("Test-Micro-mem", pretrained=str(folder), memory={"layers": [1]})
    with pytest.raises(RuntimeError, match="missing keys"):
        memclip.create_model("Test-Micro-mem", pretrained=str(folder), memory={"layers": [0, 1, 2]})


def test_training_checkpoint_with_memory_keys_loads_as_student(tmp_path):
    model = memclip.create_model("Test-Micro-mem")
    path = tmp_path / "epoch_1.pt"
    torch.save({"epoch": 1, "state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, path)
    loaded = memclip.create_model("Test-Micro-mem", pretrained=str(path))
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


def test_non_memory_model_folder_is_also_an_open_clip_local_dir(tmp_path):
    model = memclip.create_model("Test-Micro").eval()
    folder = memclip.save_pretrained(model, tmp_path / "teacher")
    plain = open_clip.create_model(f"local-dir:{folder}").eval()
    images, _ = micro_inputs()
    with torch.no_grad():
        assert torch.equal(model.encode_image(images), plain.encode_image(images))


def test_clear_errors():
    with pytest.raises(RuntimeError, match="Unknown model 'ViT-Q-99-mem'"):
        memclip.create_model("ViT-Q-99-mem")
    with pytest.raises(FileNotFoundError, match="not found: /no/such/ckpt.pt"):
        memclip.create_model("Test-Micro-mem", pretrained="/no/such/ckpt.pt")
    with pytest.raises(RuntimeError, match="neither a file.*teacher 'Test-Micro'"):
        memclip.create_model("Test-Micro-mem", pretrained="openai")
    with pytest.raises(ValueError, match="MemoryConfig.knn=99"):
        memclip.create_model("Test-Micro-mem", memory={"knn": 99})
    with pytest.raises(ValueError, match=r"MemoryConfig.layers=\[1, 7\]: block indices \[7\] are outside"):
        memclip.create_model("Test-Micro-mem", memory={"layers": [1, 7]})
    with pytest.raises(ValueError, match="precision"):
        memclip.create_model("Test-Micro-mem", precision="fp8")


def test_memory_added_to_a_saved_model_without_memory_keeps_its_weights(tmp_path):
    """The memory override makes the saved weights a teacher's: loaded before the surgery, not after it."""
    teacher = memclip.create_model("Test-Micro")
    folder = memclip.save_pretrained(teacher, tmp_path / "teacher")
    student = memclip.create_model("Test-Micro", pretrained=str(folder), memory={"layers": [2], "n_keys": 8,
                                                                                  "knn": 4, "k_dim": 16, "heads": 2})
    assert sorted(memclip.memory_layers_of(student)) == [2]
    kept = teacher.state_dict()
    assert all(torch.equal(kept[k], v) for k, v in student.state_dict().items() if k in kept)


def test_memory_can_be_added_to_an_open_clip_architecture():
    model = memclip.create_model("ViT-B-32", memory=MemoryConfig(layers=[11], n_keys=8, knn=4, k_dim=16, heads=1))
    assert sorted(memclip.memory_layers_of(model)) == [11]
    assert model.memclip_spec.teacher == "ViT-B-32"


def test_plain_open_clip_models_pass_through():
    model = memclip.create_model("RN50")
    assert type(model).__name__ == "CLIP" and model.memclip_spec.memory is None
    tokenizer = memclip.get_tokenizer("ViT-B-16-mem")
    assert tokenizer(["hello"]).shape == (1, 77)


def test_create_model_and_transforms_uses_model_size():
    model, train, val = memclip.create_model_and_transforms("Test-Micro-mem")
    from PIL import Image

    image = Image.new("RGB", (50, 40))
    assert val(image).shape == (3, 32, 32)
    assert train(image).shape == (3, 32, 32)


def test_register_open_clip_is_opt_in_and_reversible():
    assert "Test-Micro-mem" not in open_clip.list_models()
    with pytest.raises(RuntimeError):
        open_clip.create_model("Test-Micro-mem")
    memclip.register_open_clip()
    try:
        model = open_clip.create_model("Test-Micro-mem")
        assert sorted(memclip.memory_layers_of(model)) == [1, 2]
        assert "Test-Micro-mem" in open_clip.list_models()
        assert type(open_clip.create_model("RN50")).__name__ == "CLIP"
    finally:
        memclip.unregister_open_clip()
    assert "Test-Micro-mem" not in open_clip.list_models()
