"""Long-CLIP's released checkpoints: two position tables mixed by fixed masks, loaded as one 248-row table."""
import json

import open_clip
import pytest
import torch

import memclip
from memclip.longclip_weights import from_longclip_state_dict, is_longclip_state_dict
from memclip_train.eval.models import ModelRef, load_model
from memclip_train.eval.__main__ import main as eval_main

LONG_TEXT = " ".join(["a small red square sits left of a large blue circle on a grey ground."] * 8)


@pytest.fixture(scope="module")
def micro_cfg(micro_configs):
    return memclip.get_model_spec("Test-Micro").model_cfg


@pytest.fixture(scope="module")
def micro_quickgelu(micro_cfg, tmp_path_factory):
    """An OpenAI-style micro config (QuickGELU, 77 tokens), standing in for ViT-B-16-quickgelu."""
    folder = tmp_path_factory.mktemp("longclip_configs")
    (folder / "Test-Micro-quickgelu.json").write_text(json.dumps({**micro_cfg, "quick_gelu": True}))
    memclip.add_model_config(folder)
    return "Test-Micro-quickgelu"


@pytest.fixture(scope="module")
def longclip_checkpoint(micro_quickgelu, micro_cfg, tmp_path_factory):
    """A checkpoint in Long-CLIP's key layout: OpenAI CLIP keys, two (248, width) position tables."""
    torch.manual_seed(3)
    model = long_context_clip(micro_cfg)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    width = micro_cfg["text_cfg"]["width"]
    state["positional_embedding"] = torch.randn(248, width) * 0.5
    state["positional_embedding_res"] = torch.randn(248, width) * 0.5
    path = tmp_path_factory.mktemp("longclip") / "longclip-micro.pt"
    torch.save(state, path)
    return path, state


def long_context_clip(cfg):
    return open_clip.CLIP(**{**cfg, "text_cfg": {**cfg["text_cfg"], "context_length": 248}}, quick_gelu=True)


def longclip_text_embedding(cfg, state, tokens):
    """Long-CLIP's encode_text, written from its forward: token embeddings plus pe * mask1 + pe_res * mask2
    (mask1 = rows 0-19, mask2 = rows 20-247), a 248-token causal transformer, the EOT token's feature, projected."""
    reference = long_context_clip(cfg)
    reference.load_state_dict({k: v for k, v in state.items() if k != "positional_embedding_res"})
    mask1 = torch.zeros(248, 1)
    mask1[:20] = 1
    mask2 = torch.zeros(248, 1)
    mask2[20:] = 1
    with torch.no_grad():
        x = reference.token_embedding(tokens)
        x = x + state["positional_embedding"] * mask1 + state["positional_embedding_res"] * mask2
        x = reference.ln_final(reference.transformer(x, attn_mask=reference.attn_mask))
        return x[torch.arange(len(tokens)), tokens.argmax(dim=-1)] @ reference.text_projection


def test_mixed_table_takes_20_rows_from_one_and_the_rest_from_the_other(longclip_checkpoint):
    _, state = longclip_checkpoint
    assert is_longclip_state_dict(state) and not is_longclip_state_dict({"positional_embedding": 0})
    converted, length = from_longclip_state_dict(state)
    assert length == 248 and "positional_embedding_res" not in converted
    table = converted["positional_embedding"]
    assert torch.equal(table[:20], state["positional_embedding"][:20])
    assert torch.equal(table[20:], state["positional_embedding_res"][20:])


def test_longclip_checkpoint_loads_with_248_tokens_and_matches_longclip(longclip_checkpoint, micro_quickgelu,
                                                                         micro_cfg):
    path, state = longclip_checkpoint
    model = memclip.create_model(micro_quickgelu, pretrained=str(path))
    tokenizer = memclip.get_tokenizer(model.memclip_spec)
    assert tokenizer.context_length == 248 and model.memclip_spec.context_length == 248
    tokens = tokenizer([LONG_TEXT, "a red square.", LONG_TEXT[:300]])
    assert int((tokens[0] != 0).sum()) > 77  # the long caption is read past CLIP's 77 tokens
    with torch.no_grad():
        ours = model.encode_text(tokens)
    torch.testing.assert_close(ours, longclip_text_embedding(micro_cfg, state, tokens), rtol=1e-5, atol=1e-5)
    plain = state["positional_embedding"]  # without the masks the answer differs: the test can fail
    assert not torch.allclose(model.positional_embedding, plain)
    saved = memclip.save_pretrained(model, path.parent / "saved")
    again = memclip.create_model(str(saved))
    assert again.memclip_spec.context_length == 248
    assert torch.equal(again.positional_embedding, model.positional_embedding)


def test_longclip_is_a_row_of_the_eval_table(longclip_checkpoint, micro_quickgelu, tiny_world, tmp_path):
    path, _ = longclip_checkpoint
    loaded = load_model(ModelRef(micro_quickgelu, str(path)), torch.device("cpu"))
    assert loaded.tokenizer.context_length == 248
    out = tmp_path / "results"
    assert eval_main(["retrieval", "--model", micro_quickgelu, "--pretrained", str(path), "--label", "Long-CLIP",
                      "--model", micro_quickgelu, "--label", "CLIP", "--dataset", "synth-long", "--data-root",
                      str(tiny_world), "--out", str(out), "--no-progress"]) == 0
    table = (out / "retrieval_table.md").read_text()
    assert "| Long-CLIP |" in table and "| CLIP |" in table
    results = {json.loads(p.read_text())["pretrained"]: json.loads(p.read_text())
               for p in (out / "retrieval" / "synth-long").glob("*.json")}
    assert results[str(path)]["context_length"] == 248 and results[""]["context_length"] == 77
    assert results[str(path)]["captions_cut"] < results[""]["captions_cut"]
