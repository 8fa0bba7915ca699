"""TULIP's released text encoder, read in its own format: a small tower saved the way TULIP saves it loads into
memclip's RoPE tower and gives TULIP's text embedding."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

import memclip
from memclip.tulip_weights import interleaved_to_half_split, tulip_text_state_dict
from memclip_train.params import parse_args

LONG_TEXT = " ".join(["a small red square sits left of a large blue circle on a grey ground."] * 8)


@pytest.fixture(scope="module")
def quickgelu_micro(micro_configs, tmp_path_factory):
    """An OpenAI-style (QuickGELU) micro memory model, standing in for ViT-B-16-mem."""
    cfg = json.loads((micro_configs / "Test-Micro-mem.json").read_text())
    folder = tmp_path_factory.mktemp("tulip_configs")
    (folder / "Test-Micro-quickgelu-mem.json").write_text(json.dumps({**cfg, "quick_gelu": True}))
    memclip.add_model_config(folder)
    return "Test-Micro-quickgelu-mem", cfg["text_cfg"]


def tulip_weights(text_cfg, seed=5):
    """Random weights of a TULIP text tower, named as TULIP names them (open_clip CLIP's top-level text keys)."""
    generator = torch.Generator().manual_seed(seed)
    width, layers = text_cfg["width"], text_cfg["layers"]

    def rand(*shape, scale=0.2):
        return torch.randn(*shape, generator=generator) * scale

    state = {"token_embedding.weight": rand(text_cfg["vocab_size"], width), "ln_final.weight": 1 + rand(width),
             "ln_final.bias": rand(width), "text_projection": rand(width, 32)}
    for i in range(layers):
        block = f"transformer.resblocks.{i}."
        state.update({block + "ln_1.weight": 1 + rand(width), block + "ln_1.bias": rand(width),
                      block + "attn.in_proj_weight": rand(3 * width, width),
                      block + "attn.in_proj_bias": rand(3 * width),
                      block + "attn.out_proj.weight": rand(width, width), block + "attn.out_proj.bias": rand(width),
                      block + "ln_2.weight": 1 + rand(width), block + "ln_2.bias": rand(width),
                      block + "mlp.c_fc.weight": rand(4 * width, width), block + "mlp.c_fc.bias": rand(4 * width),
                      block + "mlp.c_proj.weight": rand(width, 4 * width), block + "mlp.c_proj.bias": rand(width)})
    return state


def tulip_encode_text(state, text_cfg, tokens, theta=10000.0):
    """TULIP's encode_text, written from its description: token embeddings (no positions), causal blocks whose
    queries and keys are rotated as complex pairs (2i, 2i + 1) by position, exact GELU MLPs, the final norm, the EOT
    token's feature, projected."""
    width, heads = text_cfg["width"], text_cfg["heads"]
    head_dim = width // heads
    batch, length = tokens.shape
    angles = torch.outer(torch.arange(length, dtype=torch.float32),
                         1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim))
    rotation = torch.polar(torch.ones_like(angles), angles)  # (L, head_dim / 2)
    mask = torch.full((length, length), float("-inf")).triu(1)
    x = state["token_embedding.weight"][tokens]
    for i in range(text_cfg["layers"]):
        p = lambda name: state[f"transformer.resblocks.{i}.{name}"]  # noqa: E731
        h = F.layer_norm(x, (width,), p("ln_1.weight"), p("ln_1.bias"))
        q, k, v = F.linear(h, p("attn.in_proj_weight"), p("attn.in_proj_bias")).chunk(3, dim=-1)
        q, k, v = (t.reshape(batch, length, heads, head_dim) for t in (q, k, v))
        q, k = (torch.view_as_real(torch.view_as_complex(t.reshape(batch, length, heads, -1, 2))
                                   * rotation[None, :, None, :]).flatten(3) for t in (q, k))
        scores = torch.einsum("blhd,bmhd->bhlm", q, k) / math.sqrt(head_dim) + mask
        out = torch.einsum("bhlm,bmhd->blhd", scores.softmax(-1), v).reshape(batch, length, width)
        x = x + F.linear(out, p("attn.out_proj.weight"), p("attn.out_proj.bias"))
        h = F.layer_norm(x, (width,), p("ln_2.weight"), p("ln_2.bias"))
        x = x + F.linear(F.gelu(F.linear(h, p("mlp.c_fc.weight"), p("mlp.c_fc.bias"))), p("mlp.c_proj.weight"),
                         p("mlp.c_proj.bias"))
    x = F.layer_norm(x, (width,), state["ln_final.weight"], state["ln_final.bias"])
    return x[torch.arange(batch), tokens.argmax(dim=-1)] @ state["text_projection"]


@pytest.fixture(scope="module")
def tulip_checkpoint(quickgelu_micro, tmp_path_factory):
    """A checkpoint saved as TULIP's context-extension stage saves it: the whole CLIP under DDP ('module.' keys),
    its vision tower, logit scale and unused 77-row position table beside the RoPE text tower."""
    _, text_cfg = quickgelu_micro
    text = tulip_weights(text_cfg)
    whole = {**text, "visual.proj": torch.randn(32, 32), "logit_scale": torch.tensor(4.6),
             "positional_embedding": torch.randn(77, text_cfg["width"])}
    path = tmp_path_factory.mktemp("tulip") / "tulip-micro.pt"
    torch.save({"epoch": 1, "name": "tulip-micro", "state_dict": {f"module.{k}": v for k, v in whole.items()},
                "optimizer": {}}, path)
    return path, text


def test_pairs_move_from_interleaved_to_half_split():
    rows = torch.arange(8)[:, None].float()  # two heads of width 4: pairs (0, 1), (2, 3) | (4, 5), (6, 7)
    assert interleaved_to_half_split(rows, heads=2).flatten().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    with pytest.raises(KeyError, match="no TULIP text tower"):
        tulip_text_state_dict({"visual.proj": torch.zeros(1)}, heads=2)


def test_tulip_checkpoint_loads_and_matches_tulips_text_embedding(tulip_checkpoint, quickgelu_micro, tmp_path):
    path, state = tulip_checkpoint
    name, text_cfg = quickgelu_micro
    model = memclip.create_model(name, text_pretrained=f"tulip:{path}")
    spec = model.memclip_spec.text
    assert (spec.kind, spec.activation, spec.context_length, spec.rope_theta, spec.rope_ntk_factor) == (
        "rope", "gelu", 248, 10000.0, 1.0)
    tokenizer = memclip.get_tokenizer(model.memclip_spec)
    tokens = tokenizer([LONG_TEXT, "a red square.", LONG_TEXT[:300]])
    assert tokenizer.context_length == 248 and int((tokens[0] != 0).sum()) > 77
    with torch.no_grad():
        ours = model.encode_text(tokens)
    expected = tulip_encode_text(state, text_cfg, tokens)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)
    # each convention matters, so the test can fail: pairs taken as they are, or OpenAI's QuickGELU kept
    unpermuted = memclip.create_model(name, text_tower={"kind": "rope", "activation": "gelu", "context_length": 248})
    unpermuted.text.load_state_dict({k: v for k, v in state.items()})
    quick = memclip.create_model(name, text_tower={"kind": "rope", "context_length": 248})
    quick.text.load_state_dict(tulip_text_state_dict(state, text_cfg["heads"]))
    with torch.no_grad():
        assert not torch.allclose(unpermuted.encode_text(tokens), expected, atol=1e-3)
        assert not torch.allclose(quick.encode_text(tokens), expected, atol=1e-3)
    # saved and reloaded, the tower keeps its GELU blocks and its answer
    again = memclip.create_model(str(memclip.save_pretrained(model, tmp_path / "saved")))
    assert again.memclip_spec.text.activation == "gelu"
    with torch.no_grad():
        torch.testing.assert_close(again.encode_text(tokens), ours)


def test_bad_tulip_requests_are_named(tulip_checkpoint, quickgelu_micro, tmp_path):
    path, _ = tulip_checkpoint
    name, _ = quickgelu_micro
    with pytest.raises(ValueError, match="needs text_tower kind 'rope'"):
        memclip.create_model(name, text_tower={"kind": "clip"}, text_pretrained=f"tulip:{path}")
    with pytest.raises(FileNotFoundError, match="TULIP text-tower checkpoint not found"):
        memclip.create_model(name, text_pretrained=f"tulip:{tmp_path / 'nope.pt'}")
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": {"visual.proj": torch.zeros(2)}}, plain)
    with pytest.raises(memclip.InputError, match="is it TULIP's checkpoint"):
        memclip.create_model(name, text_pretrained=f"tulip:{plain}")
    wider = tmp_path / "wider.pt"  # a tower of another width (ViT-L-14's TULIP into a ViT-B-16 model)
    torch.save({"state_dict": tulip_weights({"width": 48, "layers": 1, "vocab_size": 49408})}, wider)
    with pytest.raises(memclip.InputError, match="a TULIP tower of another size"):
        memclip.create_model(name, text_pretrained=f"tulip:{wider}")


def test_the_trainer_takes_tulip_text_towers(tulip_checkpoint):
    path, _ = tulip_checkpoint
    config = parse_args(["--train-data", "x.tar", "--long-short-alpha", "0.8", "--text-tower", f"tulip:{path}",
                         "--trainable", "memory,visual"])
    assert config.model.text_tower_kind == "rope" and config.model.text_tower_path == f"tulip:{path}"
    with pytest.raises(SystemExit):
        parse_args(["--train-data", "x.tar", "--text-tower", "tulip"])
