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


@pytest.mark.parametrize("text, parsed", [
    ("layers=2,3", ("layers", (2, 3))), ("layers=", ("layers", ())), ("knn=32", ("knn", 32)),
    ("value_lr=1e-3", ("value_lr", 1e-3)), ("gated=True", ("gated", True)), ("swilu=false", ("swilu", False)),
    ("mode=parallel", ("mode", "parallel")),
])
def test_one_override_grammar(text, parsed):
    assert MemoryConfig.parse_override(text) == parsed


@pytest.mark.parametrize("text, message", [
    ("knn", "expected KEY=VALUE"), ("=3", "expected KEY=VALUE"), ("layers=a,b", "layers are block indices"),
    ("value_lr=nan", "value_lr must be a finite number"), ("gate_lr=1e999", "gate_lr must be a finite number"),
])
def test_malformed_overrides_are_refused_naming_the_text(text, message):
    with pytest.raises(ValueError, match=message):
        MemoryConfig.parse_override(text)


def test_overrides_merge_over_a_base_or_the_defaults():
    base = MemoryConfig(layers=[1], n_keys=16, knn=8)
    assert MemoryConfig.with_overrides(base, {"knn": 4}) == base.replace(knn=4)
    assert MemoryConfig.with_overrides(None, {"layers": (2, 3)}) == MemoryConfig(layers=[2, 3])
    with pytest.raises(ValueError, match=r"unknown keys \['n_kees'\]"):
        MemoryConfig.with_overrides(base, {"n_kees": 3})


def test_the_benchmark_and_the_trainer_read_memory_flags_alike():
    """One grammar: ``layers=2,3`` (the trainer's) means block indices in the benchmark too (it was JSON there)."""
    from memclip_train.params import build_parser
    from memory_layers.tools.bench import parse_memory_overrides

    items = ["layers=2,3", "knn=8", "gated=true", "mode=parallel"]
    trainer = build_parser().parse_args(["--model", "ViT-Tiny-8-mem", *[a for i in items for a in ("--memory", i)]])
    assert parse_memory_overrides(items) == dict(trainer.memory) == {"layers": (2, 3), "knn": 8, "gated": True,
                                                                       "mode": "parallel"}
