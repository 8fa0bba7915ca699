import json
import logging
import os
import shutil
import subprocess
import sys

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


def perturbed(model):
    """Random weights that differ from a fresh model's (so a load that silently keeps fresh weights shows)."""
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.02 * torch.randn_like(param))
    return model.eval()


@pytest.mark.parametrize("variant, kwargs, writes", [
    ("patch stem, 77 tokens", {}, True),
    ("patch stem, 248 tokens (Long-CLIP stretch)", {"text_tower": {"context_length": 248, "pos_stretch": "longclip"}},
     True),
    ("conv stem", {"name": "ViT-Tiny-8"}, False),
    ("RoPE text tower", {"text_tower": "rope"}, False),
    ("memory", {"name": "Test-Micro-mem"}, False),
])
def test_open_clip_config_is_written_only_when_open_clip_reproduces_the_model(variant, kwargs, writes, tmp_path):
    """The conv-stem teacher's open_clip_config.json failed in open_clip with missing keys, and a 248-token model
    loaded in open_clip as a 77-token one (cosine 0.82 with memclip's text features on a 5-word caption)."""
    kwargs = dict(kwargs)
    model = perturbed(memclip.create_model(kwargs.pop("name", "Test-Micro"), **kwargs))
    folder = memclip.save_pretrained(model, tmp_path / "saved")
    size = model.visual.image_size
    images = torch.randn(2, 3, *(size if isinstance(size, tuple) else (size, size)))
    captions = ["a red star", "a small blue ring at the top, " * 12]  # the second is longer than 77 tokens
    ours = memclip.get_tokenizer(model.memclip_spec)
    assert (folder / "open_clip_config.json").exists() == writes
    if not writes:
        with pytest.raises(Exception):
            open_clip.create_model(f"local-dir:{folder}")
        return
    plain = open_clip.create_model(f"local-dir:{folder}").eval()
    theirs = open_clip.get_tokenizer(f"local-dir:{folder}")
    assert theirs.context_length == ours.context_length == model.memclip_spec.context_length
    with torch.no_grad():
        assert torch.allclose(plain.encode_image(images), model.encode_image(images), atol=1e-5)
        assert torch.allclose(plain.encode_text(theirs(captions)), model.encode_text(ours(captions)), atol=1e-5)


def test_a_folder_saved_again_as_a_model_open_clip_cannot_build_loses_its_open_clip_config(tmp_path):
    folder = memclip.save_pretrained(memclip.create_model("Test-Micro"), tmp_path / "saved")
    assert (folder / "open_clip_config.json").exists()
    memclip.save_pretrained(memclip.create_model("Test-Micro", text_tower="rope"), folder)
    assert not (folder / "open_clip_config.json").exists(), "a stale file would describe the old model"


def test_weights_of_another_architecture_are_an_error_naming_both(tmp_path):
    """create_model('ViT-B-16', pretrained=<a ViT-Tiny-8 folder>) used to build the Tiny model labelled ViT-B-16."""
    folder = memclip.save_pretrained(memclip.create_model("ViT-Tiny-8"), tmp_path / "tiny")
    for name in ("Test-Micro", "Test-Micro-mem", "ViT-B-16"):  # the same architecture asked for, or a student of it
        with pytest.raises(memclip.InputError, match=rf"model '{name}' was asked for with pretrained {folder}.*"
                                                     r"another architecture \('ViT-Tiny-8'\).*vision_cfg.width 128"):
            memclip.create_model(name, pretrained=str(folder))
    assert memclip.create_model("ViT-Tiny-8-mem", pretrained=str(folder)).memclip_spec.name == "ViT-Tiny-8-mem"


@pytest.mark.parametrize("layout", ["saved folder", "plain state dict", "training checkpoint"])
def test_weights_whose_dtype_cannot_hold_the_parameters_are_an_error_naming_the_tensor(layout, tmp_path):
    """float weights stored as int8 used to load without a word, and every weight was then a whole number (zero)."""
    model = perturbed(memclip.create_model("Test-Micro"))
    state = {k: (v.to(torch.int8) if k == "visual.proj" else v) for k, v in model.state_dict().items()}
    if layout == "saved folder":
        folder = memclip.save_pretrained(model, tmp_path / "saved")
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "open_clip_model.safetensors"),
                  metadata={"memclip_config": json.dumps(model.memclip_spec.to_config())})
        source = str(folder)
    elif layout == "plain state dict":
        source = str(tmp_path / "int8.pt")
        torch.save(state, source)
    else:
        source = str(tmp_path / "epoch_1.pt")
        torch.save({"epoch": 1, "state_dict": state, "memclip_config": model.memclip_spec.to_config()}, source)
    with pytest.raises(memclip.InputError, match=rf"{source}.*visual.proj is int8, which cannot hold the model's "
                                                 "float32 weights"):
        memclip.create_model("Test-Micro", pretrained=source)


def test_memclip_reads_pickles_only_in_torch_load_s_safe_mode(tmp_path):
    torch.save(memclip.create_model("Test-Micro").state_dict(), tmp_path / "w.pt")
    with pytest.raises(memclip.InputError, match="weights_only=True"):
        memclip.create_model("Test-Micro", pretrained=str(tmp_path / "w.pt"), weights_only=False)


@pytest.fixture
def config_folder(tmp_path, monkeypatch):
    """A config folder registered for one test (the registry is rescanned without it afterwards)."""
    from memclip import registry

    folder = tmp_path / "configs"
    folder.mkdir()
    monkeypatch.setattr(registry, "_CONFIG_PATHS", list(registry._CONFIG_PATHS))
    yield folder
    monkeypatch.undo()
    registry._rescan()


def test_a_malformed_config_file_is_skipped_until_its_model_is_asked_for(config_folder, caplog):
    """One malformed JSON in a config folder used to crash `import memclip`, and every program with it."""
    caplog.set_level(logging.WARNING, logger="memclip.registry")
    (config_folder / "Test-Broken.json").write_text('{"embed_dim": 32, "vision_cfg": ')
    (config_folder / "Test-List.json").write_text("[1, 2]")
    (config_folder / "Test-Fine.json").write_text(json.dumps(memclip.get_model_config("Test-Micro")))
    memclip.add_model_config(config_folder)
    assert "Test-Broken.json is skipped: not readable JSON" in caplog.text
    assert "Test-Fine" in memclip.list_models() and "Test-Broken" not in memclip.list_models()
    with pytest.raises(memclip.InputError, match=r"model 'Test-Broken': its config file .*Test-Broken.json is not "
                                                 "readable JSON"):
        memclip.create_model("Test-Broken")
    with pytest.raises(memclip.InputError, match="Test-List.json is a JSON list, not a model config"):
        memclip.get_model_spec("Test-List")
    (config_folder / "Test-Bad-Memory.json").write_text(json.dumps(
        {**memclip.get_model_config("Test-Micro"), "memory": {"knn": 99}, "teacher": "Test-Micro"}))
    memclip.add_model_config(config_folder)
    with pytest.raises(memclip.InputError, match=r"model config 'Test-Bad-Memory' \(file .*Test-Bad-Memory.json\)"):
        memclip.get_model_spec("Test-Bad-Memory")


@pytest.mark.slow
def test_a_malformed_file_in_memclip_model_configs_breaks_no_program(tmp_path):
    (tmp_path / "Broken.json").write_text("{not json")
    env = dict(os.environ, MEMCLIP_MODEL_CONFIGS=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "memclip_train.eval", "--help"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and "usage:" in done.stdout
    assert f"model config {tmp_path / 'Broken.json'} is skipped" in done.stderr


def test_a_damaged_saved_config_is_an_error_naming_the_file(tmp_path):
    folder = memclip.save_pretrained(memclip.create_model("Test-Micro"), tmp_path / "saved")
    (folder / "memclip_config.json").write_text('{"name": "Test-Micro", "model_cfg": ')
    with pytest.raises(memclip.InputError, match=f"{folder / 'memclip_config.json'} is not valid JSON"):
        memclip.create_model(str(folder))
    (folder / "memclip_config.json").write_text('{"name": "Test-Micro"}')
    with pytest.raises(memclip.InputError, match="has no 'model_cfg'"):
        memclip.create_model("Test-Micro", pretrained=str(folder))


def test_a_damaged_record_of_shipped_weights_is_an_error_naming_it(tmp_path, monkeypatch):
    from memclip import pretrained

    shipped = tmp_path / "pretrained"
    shutil.copytree(pretrained.PRETRAINED_DIR, shipped)
    (shipped / "ViT-Tiny-8-synth.json").write_text('{"model": "ViT-Tiny-8", ')
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", shipped)
    with pytest.raises(memclip.InputError, match=f"record for ViT-Tiny-8 is damaged: {shipped}/ViT-Tiny-8-synth.json"):
        memclip.create_model("ViT-Tiny-8", pretrained="synth")
    assert memclip.create_model("ViT-Tiny-8").memclip_spec.name == "ViT-Tiny-8", "other models are not affected"
