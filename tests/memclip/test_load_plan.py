"""memclip.factory.plan_load: how a checkpoint loads is decided once, from the spec and the checkpoint alone."""
import pytest
import torch

import memclip
from memclip.weights_io import Checkpoint
from memclip.factory import plan_load
from memclip.registry import get_model_spec


def weights(name):
    torch.manual_seed(0)
    return memclip.create_model(name).state_dict()


def test_no_checkpoint_means_random_weights():
    spec = get_model_spec("ViT-Tiny-8-mem")
    plan = plan_load(spec, None)
    assert plan.stage is None and plan.spec == spec and plan.checkpoint is None


def test_plain_state_dicts_load_before_the_surgery_unless_they_hold_memory_keys():
    student = get_model_spec("ViT-Tiny-8-mem")
    teacher = Checkpoint("teacher.pt", weights("ViT-Tiny-8"))
    plan = plan_load(student, teacher)
    assert plan.stage == "open_clip" and plan.spec == student and not plan.longclip
    saved_student = Checkpoint("student.pt", weights("ViT-Tiny-8-mem"))
    keys = set(saved_student.state_dict)
    plan = plan_load(student, saved_student)
    assert plan.stage == "final" and plan.checkpoint is saved_student
    assert set(saved_student.state_dict) == keys, "planning leaves the checkpoint as it was"


def test_recorded_configs_are_adopted_unless_the_spec_grows_them():
    student = get_model_spec("ViT-Tiny-8-mem").replace(name="x")
    teacher_config = get_model_spec("ViT-Tiny-8").to_config()
    plan = plan_load(student, Checkpoint("teacher", {}, teacher_config))
    assert plan.stage == "teacher" and plan.spec.has_memory and plan.spec.model_cfg == student.model_cfg
    recorded = get_model_spec("ViT-Tiny-8-mem").to_config()
    recorded["memory"]["knn"] = 8
    plan = plan_load(student, Checkpoint("student", {}, recorded))
    assert plan.stage == "final" and plan.spec.memory.knn == 8 and plan.loaded_text == plan.spec.text


def test_a_student_saved_as_a_plain_state_dict_loads_after_the_surgery(tmp_path):
    path = tmp_path / "student.pt"
    saved = weights("ViT-Tiny-8-mem")
    torch.save(saved, path)
    loaded = memclip.create_model("ViT-Tiny-8-mem", pretrained=str(path)).state_dict()
    assert loaded.keys() == saved.keys() and all(torch.equal(loaded[k], saved[k]) for k in saved)


def test_a_recorded_config_of_another_architecture_is_refused_not_adopted():
    """plan_load used to adopt the recorded config whatever the name asked for: a ViT-Tiny-8 labelled ViT-B-16."""
    tiny = Checkpoint("runs/tiny/final", {}, get_model_spec("ViT-Tiny-8").to_config())
    for asked in ("ViT-B-16", "ViT-B-16-mem", "Test-Micro"):
        with pytest.raises(memclip.InputError, match=f"model '{asked}' was asked for with pretrained runs/tiny/final"):
            plan_load(get_model_spec(asked), tiny)
    stretched = get_model_spec("ViT-Tiny-8").replace(model_cfg=dict(get_model_spec("ViT-Tiny-8").model_cfg,
                                                                    vision_cfg={**get_model_spec("ViT-Tiny-8")
                                                                                .model_cfg["vision_cfg"],
                                                                                "image_size": 96}))
    plan = plan_load(get_model_spec("ViT-Tiny-8"), Checkpoint("big", {}, stretched.to_config()))
    assert plan.spec.model_cfg["vision_cfg"]["image_size"] == 96, "a resized position table is the same architecture"


def test_the_eval_program_takes_the_same_path(tmp_path):
    from memclip_train.eval.models import ModelRef, load_model

    folder = memclip.save_pretrained(memclip.create_model("ViT-Tiny-8"), tmp_path / "tiny")
    with pytest.raises(memclip.InputError, match="another architecture"):
        load_model(ModelRef("Test-Micro", str(folder)), torch.device("cpu"))


def test_memory_added_by_an_override_grows_a_saved_teacher(tmp_path):
    teacher = memclip.create_model("Test-Micro")
    memclip.save_pretrained(teacher, tmp_path / "teacher")
    memory = {"layers": [2], "n_keys": 8, "heads": 2, "knn": 4, "k_dim": 16, "v_dim": 24}
    for pretrained in (str(tmp_path / "teacher"), str(tmp_path / "teacher" / "open_clip_model.safetensors")):
        student = memclip.create_model("Test-Micro", pretrained=pretrained, memory=memory)
        assert list(memclip.memory_layers_of(student)) == [2]
        assert torch.equal(student.visual.transformer.resblocks[0].mlp.c_fc.weight,
                           teacher.visual.transformer.resblocks[0].mlp.c_fc.weight)
