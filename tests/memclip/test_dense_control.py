"""The capacity study's dense control (memory blocks' MLPs widened to the memory's parameter count) and the cost
counter (parameters and forward FLOPs per image)."""
import json

import pytest
import torch

import memclip
from memclip.cost import model_cost
from memclip.wide_mlp import WideMLPConfig, equal_parameter_hidden, mlp_parameters, widen_mlps

MICRO_WIDTH, MICRO_HIDDEN = 32, 128   # Test-Micro: width 32, mlp_ratio 4


DENSE_HIDDEN = 200


@pytest.fixture(scope="module")
def dense_micro(tmp_path_factory, micro_configs):
    """``Test-Micro-dense``: Test-Micro with the MLPs of Test-Micro-mem's memory blocks widened from 128 to 200
    hidden units (the micro memory is smaller than its MLPs, so here the width is not the equal-parameter one)."""
    folder = tmp_path_factory.mktemp("dense_configs")
    config = {**memclip.get_model_config("Test-Micro"), "teacher": "Test-Micro",
              "wide_mlp": {"layers": list(memclip.get_model_spec("Test-Micro-mem").memory.layers),
                           "hidden": DENSE_HIDDEN}}
    (folder / "Test-Micro-dense.json").write_text(json.dumps(config))
    memclip.add_model_config(folder)
    return DENSE_HIDDEN


def test_the_shipped_dense_control_holds_the_memory_students_parameters():
    student = memclip.create_model("ViT-Tiny-8-mem")
    dense = memclip.create_model("ViT-Tiny-8-dense")
    memory = sum(p.numel() for p in memclip.memory_parameters(student))
    spec = dense.memclip_spec.wide_mlp
    assert spec == WideMLPConfig(layers=(2, 3), hidden=equal_parameter_hidden(128, memory, 2))
    added = sum(mlp_parameters(128, spec.hidden) for _ in spec.layers)
    assert abs(added - memory) <= 2 * (2 * 128 + 1)          # exact to one hidden unit per block
    student_visual = sum(p.numel() for p in student.visual.parameters())
    dense_visual = sum(p.numel() for p in dense.visual.parameters())
    assert abs(dense_visual - student_visual) / student_visual < 1e-3
    assert dense.visual.transformer.resblocks[2].mlp.c_fc.out_features == spec.hidden
    assert dense.visual.transformer.resblocks[1].mlp.c_fc.out_features == 512


def test_the_dense_control_starts_exactly_at_its_teacher_and_round_trips(dense_micro, tmp_path):
    teacher = memclip.create_model("Test-Micro")
    memclip.save_pretrained(teacher, tmp_path / "teacher")
    dense = memclip.create_model("Test-Micro-dense", pretrained=str(tmp_path / "teacher"))
    images = torch.randn(3, 3, 32, 32)
    texts = torch.randint(1, 1000, (3, 77))
    with torch.no_grad():
        assert torch.allclose(dense.encode_image(images), teacher.encode_image(images), atol=1e-6)
        assert torch.equal(dense.encode_text(texts), teacher.encode_text(texts))
    block = dense.visual.transformer.resblocks[1].mlp
    old = teacher.visual.transformer.resblocks[1].mlp
    assert block.c_fc.out_features == dense_micro > MICRO_HIDDEN
    assert torch.equal(block.c_fc.weight[:MICRO_HIDDEN], old.c_fc.weight)
    assert torch.equal(block.c_proj.weight[:, :MICRO_HIDDEN], old.c_proj.weight)
    assert torch.count_nonzero(block.c_proj.weight[:, MICRO_HIDDEN:]) == 0
    assert torch.count_nonzero(block.c_fc.weight[MICRO_HIDDEN:]) > 0
    # The new units are live: their output columns get a gradient at the first step.
    dense.encode_image(images).square().sum().backward()
    assert block.c_proj.weight.grad[:, MICRO_HIDDEN:].abs().sum() > 0

    memclip.save_pretrained(dense, tmp_path / "dense")
    again = memclip.create_model(str(tmp_path / "dense"))
    assert again.memclip_spec.wide_mlp == dense.memclip_spec.wide_mlp
    with torch.no_grad():
        assert torch.equal(again.encode_image(images), dense.encode_image(images))


@pytest.mark.parametrize("settings, message", [
    ({"layers": [1, 1], "hidden": 64}, "repeated"),
    ({"layers": [1], "hidden": 0}, "hidden width"),
    ({"layers": [-1], "hidden": 64}, "non-negative"),
])
def test_bad_wide_mlp_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        WideMLPConfig(**settings)


def test_a_narrower_or_misplaced_widening_is_refused():
    with pytest.raises(ValueError, match="narrower"):
        widen_mlps(memclip.create_model("Test-Micro"), WideMLPConfig(layers=(0,), hidden=16))
    with pytest.raises(ValueError, match="outside"):
        widen_mlps(memclip.create_model("Test-Micro"), WideMLPConfig(layers=(7,), hidden=256))


def test_forward_flops_match_a_count_by_hand(dense_micro):
    """Test-Micro: 16 patches + 1 class token = 17 tokens of width 32, 3 blocks, 2 heads, MLP 128."""
    tokens, width = 17, 32
    attention = 2 * tokens * width * 3 * width + 2 * 2 * tokens * tokens * width + 2 * tokens * width * width
    mlp = 2 * 2 * tokens * width * MICRO_HIDDEN
    patchify, projection = 2 * 16 * width * 3 * 8 * 8, 2 * width * 32
    teacher = model_cost(memclip.create_model("Test-Micro"))
    assert teacher.vision_flops == patchify + 3 * (attention + mlp) + projection
    assert teacher.memory_parameters == 0 and teacher.memory_bag_flops == 0

    m = memclip.get_model_spec("Test-Micro-mem").memory   # 2 heads, k_dim 16, n_keys 8, knn 4, v_dim 24
    bag = 2 * tokens * m.heads * m.knn * m.v_dim
    memory = (2 * tokens * width * m.heads * m.k_dim + 2 * tokens * m.heads * m.n_keys * m.k_dim
              + 2 * 2 * tokens * width * m.v_dim + bag)
    student = model_cost(memclip.create_model("Test-Micro-mem"))
    assert student.vision_flops == teacher.vision_flops + 2 * (memory - mlp)
    assert student.memory_bag_flops == 2 * bag
    assert student.memory_parameters == sum(p.numel() for p in
                                            memclip.memory_parameters(memclip.create_model("Test-Micro-mem")))

    dense = model_cost(memclip.create_model("Test-Micro-dense"))
    assert dense.vision_flops == teacher.vision_flops + 2 * 2 * 2 * tokens * width * (dense_micro - MICRO_HIDDEN)
    assert dense.vision_parameters == teacher.vision_parameters + 2 * (
        mlp_parameters(width, dense_micro) - mlp_parameters(width, MICRO_HIDDEN))
