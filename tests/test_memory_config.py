import pytest

from memory_layers import MemoryConfig


def test_defaults_are_valid_and_round_trip():
    config = MemoryConfig(layers=[4, 6])
    assert config.layers == (4, 6)
    assert config.n_slots == config.n_keys ** 2
    assert MemoryConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"k_dim": 7}, "k_dim"),
        ({"knn": 0}, "knn"),
        ({"knn": 65, "n_keys": 64}, "knn"),
        ({"heads": 0}, "heads"),
        ({"n_keys": -3}, "n_keys"),
        ({"layers": [1, 1]}, "layers"),
        ({"layers": [-1]}, "layers"),
        ({"layers": "4,6"}, "layers"),
        ({"layers": [1.5]}, "layers"),
        ({"v_dim": 0}, "v_dim"),
        ({"v_dim": -2}, "v_dim"),
        ({"value_lr": -1.0}, "value_lr"),
        ({"value_lr": float("nan")}, "value_lr"),
        ({"value_lr": float("inf")}, "value_lr"),
        ({"gate_lr": float("nan")}, "gate_lr"),
        ({"query_dropout": 1.0}, "query_dropout"),
        ({"mode": "sideways"}, "mode"),
        ({"gated": "yes"}, "gated"),
        ({"values_parallel_group_size": 0}, "values_parallel_group_size"),
    ],
)
def test_each_bad_knob_names_its_field_and_value(changes, field):
    with pytest.raises(ValueError) as info:
        MemoryConfig(**changes)
    message = str(info.value)
    assert f"MemoryConfig.{field}=" in message
    assert repr(changes[field]).strip("[]'") in message or str(changes[field]) in message


def test_layers_outside_depth_are_rejected():
    config = MemoryConfig(layers=[2, 12])
    config.check_layers(13)
    with pytest.raises(ValueError, match=r"MemoryConfig.layers=\[2, 12\].*\[12\].*depth 12"):
        config.check_layers(12)


def test_unknown_keys_are_named():
    with pytest.raises(ValueError, match="unknown keys \\['nkeys'\\]"):
        MemoryConfig.from_dict({"nkeys": 8})


def test_value_dim_resolves_block_width():
    assert MemoryConfig(v_dim=-1).value_dim(768) == 768
    assert MemoryConfig(v_dim=1024).value_dim(768) == 1024


def test_every_config_refuses_unknown_keys_through_one_check():
    from memclip.stem import VisionStemConfig
    from memclip.text_tower import TextTowerConfig
    from memclip.wide_mlp import WideMLPConfig

    for cls, noun in ((MemoryConfig, "keys"), (TextTowerConfig, "keys"), (VisionStemConfig, "fields"),
                      (WideMLPConfig, "fields")):
        with pytest.raises(ValueError, match=rf"^{cls.__name__}: unknown {noun} \['bogus'\]; known {noun} are"):
            cls.from_dict({"bogus": 1})
        assert cls.from_dict({}) == cls()
