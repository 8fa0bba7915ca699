import pytest
import torch

import memclip
from memclip.position_stretch import longclip_stretch
from memclip.rope_text import RopeTextTransformer, apply_rope, rope_base, rope_tables
from memclip.truncation import token_lengths, tokenize_counting_truncation


def test_longclip_stretch_matches_the_published_table():
    old = torch.randn(77, 16)
    new = longclip_stretch(old, 248)
    assert new.shape == (248, 16)
    assert torch.equal(new[:20], old[:20])
    for i in range(56):
        for j in range(4):
            expected = (1 - j / 4) * old[20 + i].double() + (j / 4) * old[21 + i].double()
            torch.testing.assert_close(new[20 + 4 * i + j].double(), expected, rtol=0, atol=1e-6)
    for j in range(4):
        expected = old[76].double() + (j / 4) * (old[76].double() - old[75].double())
        torch.testing.assert_close(new[244 + j].double(), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("new_length", [100, 200, 77])
def test_stretched_rows_lie_on_segments_between_neighbours(new_length):
    old = torch.randn(77, 8, dtype=torch.float64)
    new = longclip_stretch(old, new_length)
    assert torch.equal(new[:20], old[:20])
    ratio = (new_length - 20) / 57
    for p in range(20, new_length):
        s = 20 + (p - 20) / ratio
        lower = min(int(s), 75)
        t = s - lower
        expected = old[lower] + t * (old[lower + 1] - old[lower])
        torch.testing.assert_close(new[p], expected)


def test_stretch_rejects_bad_lengths():
    with pytest.raises(ValueError, match="shorter"):
        longclip_stretch(torch.randn(77, 4), 50)
    with pytest.raises(ValueError, match="keep=80"):
        longclip_stretch(torch.randn(77, 4), 100, keep=80)


def long_captions(tokenizer, differ: bool):
    """Two captions equal in their first ~100 tokens; the second differs in tokens 100-200 when ``differ``."""
    head = " ".join(["red star"] * 50)
    tail_a = " ".join(["blue ring"] * 50)
    tail_b = " ".join(["green cross"] * 50) if differ else tail_a
    return tokenizer([f"{head} {tail_a}", f"{head} {tail_b}"])


def test_stretched_tower_sees_tokens_past_77():
    model = memclip.create_model("Test-Micro", text_tower={"context_length": 248, "pos_stretch": "longclip"}).eval()
    assert model.positional_embedding.shape[0] == 248 and model.attn_mask.shape == (248, 248)
    tokenizer = memclip.get_tokenizer(model.memclip_spec)
    tokens = long_captions(tokenizer, differ=True)
    assert tokens.shape == (2, 248)
    assert torch.equal(tokens[0, :100], tokens[1, :100]) and not torch.equal(tokens[0, 100:200], tokens[1, 100:200])
    with torch.no_grad():
        features = model.encode_text(tokens)
        assert not torch.allclose(features[0], features[1])
        same = model.encode_text(long_captions(tokenizer, differ=False))
        torch.testing.assert_close(same[0], same[1])
    short_model = memclip.create_model("Test-Micro").eval()
    truncated = long_captions(memclip.get_tokenizer("Test-Micro"), differ=True)
    assert truncated.shape == (2, 77) and torch.equal(truncated[0], truncated[1])
    with torch.no_grad():
        features = short_model.encode_text(truncated)
    torch.testing.assert_close(features[0], features[1])


def test_stretch_applies_to_teacher_weights_and_round_trips(tmp_path):
    teacher = memclip.create_model("Test-Micro")
    torch.save({"state_dict": teacher.state_dict()}, tmp_path / "teacher.pt")
    stretched = memclip.create_model("Test-Micro-mem", pretrained=str(tmp_path / "teacher.pt"),
                                     text_tower={"context_length": 248, "pos_stretch": "longclip"})
    assert torch.equal(stretched.positional_embedding[:20], teacher.positional_embedding[:20])
    torch.testing.assert_close(stretched.positional_embedding[24], teacher.positional_embedding[21])
    folder = memclip.save_pretrained(stretched, tmp_path / "stretched")
    reloaded = memclip.create_model(str(folder))
    assert reloaded.memclip_spec.text.pos_stretch == "longclip" and reloaded.memclip_spec.context_length == 248
    assert torch.equal(reloaded.positional_embedding, stretched.positional_embedding)
    assert memclip.get_tokenizer(str(folder))(["x"]).shape == (1, 248)


def test_longer_context_needs_a_stretch_method():
    with pytest.raises(ValueError, match="pos_stretch='longclip'"):
        memclip.create_model("Test-Micro", text_tower={"context_length": 248})


def test_rope_rotation_depends_only_on_relative_offset():
    head_dim, length = 8, 40
    cos, sin = rope_tables(length, head_dim, 10000.0, torch.device("cpu"), torch.float64)
    q, k = torch.randn(head_dim, dtype=torch.float64), torch.randn(head_dim, dtype=torch.float64)
    rotated_q = apply_rope(q.expand(1, 1, length, head_dim), cos, sin)[0, 0]
    rotated_k = apply_rope(k.expand(1, 1, length, head_dim), cos, sin)[0, 0]
    torch.testing.assert_close(rotated_q[3] @ rotated_k[10], rotated_q[20] @ rotated_k[27])
    assert not torch.allclose(rotated_q[3] @ rotated_k[10], rotated_q[3] @ rotated_k[11])
    assert rope_base(10000.0, 1.0, 64) == 10000.0
    assert rope_base(10000.0, 4.0, 64) == pytest.approx(10000.0 * 4 ** (64 / 62))


def test_rope_tower_reuses_clip_weights_and_runs_at_248(tmp_path):
    teacher = memclip.create_model("Test-Micro")
    torch.save({"state_dict": teacher.state_dict()}, tmp_path / "teacher.pt")
    model = memclip.create_model("Test-Micro-mem", pretrained=str(tmp_path / "teacher.pt"),
                                 text_tower={"kind": "rope", "context_length": 248, "rope_ntk_factor": 2.0})
    assert isinstance(model.text, RopeTextTransformer)
    assert "text.positional_embedding" not in model.state_dict()
    assert torch.equal(model.text.token_embedding.weight, teacher.token_embedding.weight)
    assert torch.equal(model.text.transformer.resblocks[0].attn.in_proj_weight,
                       teacher.transformer.resblocks[0].attn.in_proj_weight)
    assert sorted(memclip.memory_layers_of(model)) == [1, 2]
    tokenizer = memclip.get_tokenizer(model.memclip_spec)
    tokens = long_captions(tokenizer, differ=True)
    features = model.encode_text(tokens)
    assert features.shape == (2, 32) and not torch.allclose(features[0], features[1])
    features.sum().backward()
    assert model.text.transformer.resblocks[0].attn.in_proj_weight.grad is not None

    folder = memclip.save_pretrained(model, tmp_path / "rope")
    reloaded = memclip.create_model(str(folder))
    assert reloaded.memclip_spec.text.kind == "rope" and reloaded.text.ntk_factor == 2.0
    with torch.no_grad():
        torch.testing.assert_close(reloaded.encode_text(tokens), model.encode_text(tokens))


def test_text_pretrained_loads_a_distilled_tower(tmp_path):
    donor = memclip.create_model("Test-Micro", text_tower="rope")
    with torch.no_grad():
        donor.text.ln_final.weight.add_(1.0)
    folder = memclip.save_pretrained(donor, tmp_path / "rope-text")
    student = memclip.create_model("Test-Micro-mem", text_tower="rope", text_pretrained=str(folder))
    assert torch.equal(student.text.ln_final.weight, donor.text.ln_final.weight)
    with pytest.raises(RuntimeError, match="no text.\\* weights"):
        plain = memclip.save_pretrained(memclip.create_model("Test-Micro"), tmp_path / "plain")
        memclip.create_model("Test-Micro-mem", text_tower="rope", text_pretrained=str(plain))


def test_text_tower_config_errors():
    with pytest.raises(ValueError, match="TextTowerConfig.kind='bert'"):
        memclip.TextTowerConfig(kind="bert")
    with pytest.raises(ValueError, match="TextTowerConfig.pos_stretch='longclip': applies to the clip tower only"):
        memclip.TextTowerConfig(kind="rope", pos_stretch="longclip")
    with pytest.raises(ValueError, match="rope_ntk_factor"):
        memclip.TextTowerConfig(kind="rope", rope_ntk_factor=0.5)
    with pytest.raises(ValueError, match="context_length"):
        memclip.TextTowerConfig(context_length=1)


def test_truncation_is_counted():
    tokenizer = memclip.get_tokenizer("Test-Micro")
    texts = ["a red star", " ".join(["word"] * 75), " ".join(["word"] * 76), " ".join(["blue ring"] * 60)]
    lengths = token_lengths(tokenizer, texts)
    assert lengths.tolist() == [5, 77, 78, 122]
    tokens, cut = tokenize_counting_truncation(tokenizer, texts)
    assert tokens.shape == (4, 77) and cut == 2


def test_finished_checkpoints_load_before_their_text_tower_changes(tmp_path):
    student = memclip.create_model("Test-Micro-mem")
    folder = memclip.save_pretrained(student, tmp_path / "student")
    longer = memclip.create_model(str(folder), text_tower={"context_length": 248, "pos_stretch": "longclip"})
    assert torch.equal(longer.positional_embedding[:20], student.positional_embedding[:20])
    assert torch.equal(longer.visual.conv1.weight, student.visual.conv1.weight)
    rope = memclip.create_model(str(folder), text_tower={"kind": "rope", "context_length": 248})
    assert torch.equal(rope.text.token_embedding.weight, student.token_embedding.weight)
    rope_folder = memclip.save_pretrained(rope, tmp_path / "rope")
    extended = memclip.create_model(str(rope_folder), text_tower={"rope_ntk_factor": 4.0, "context_length": 512})
    assert extended.text.ntk_factor == 4.0 and extended.memclip_spec.context_length == 512
    with pytest.raises(ValueError, match="back into absolute positions"):
        memclip.create_model(str(rope_folder), text_tower="clip")
    with pytest.raises(ValueError, match="cannot shorten"):
        memclip.create_model(str(memclip.save_pretrained(longer, tmp_path / "long")), text_tower={"context_length": 77})


def test_a_names_tower_reads_name_indices_as_fixed_unit_vectors(tmp_path):
    from memclip.names_text import NameTokenizer, random_names
    model = memclip.create_model("Test-Micro", text_tower={"kind": "names", "names": 50, "names_seed": 3})
    tokenizer = memclip.get_tokenizer(model.memclip_spec)
    assert isinstance(tokenizer, NameTokenizer)
    text = tokenizer(["7", " 49 "])
    assert text.tolist() == [[7], [49]]
    assert torch.equal(model.encode_text(text), random_names(50, 32, 3)[[7, 49]])
    image, text_features, _ = model(torch.randn(2, 3, 32, 32), text)
    assert torch.allclose(text_features.norm(dim=1), torch.ones(2))
    with pytest.raises(ValueError, match="not a name index"):
        tokenizer(["a red star"])
    with pytest.raises(ValueError, match="not a name index"):
        tokenizer(["50"])
    memclip.save_pretrained(model, tmp_path / "named")
    loaded = memclip.create_model(str(tmp_path / "named"))
    assert torch.equal(loaded.encode_text(text), model.encode_text(text))
    assert isinstance(memclip.get_tokenizer(str(tmp_path / "named")), NameTokenizer)
    with pytest.raises(ValueError, match="names >= 1"):
        memclip.TextTowerConfig(kind="names")
    with pytest.raises(ValueError, match="only a names tower takes names"):
        memclip.create_model(str(tmp_path / "named"), text_tower={"kind": "clip"})


def test_the_trainer_asks_for_both_names_flags():
    from memclip_train.params import parse_args
    common = ["--train-data", "x.tar", "--model", "Test-Micro"]
    config = parse_args(common + ["--text-tower", "names", "--text-names", "64", "--text-names-seed", "2"])
    from memclip_train.tasks.build import text_tower_overrides
    assert text_tower_overrides(config) == {"kind": "names", "names": 64, "names_seed": 2}
    with pytest.raises(SystemExit):
        parse_args(common + ["--text-tower", "names"])
    with pytest.raises(SystemExit):
        parse_args(common + ["--text-names", "64"])
