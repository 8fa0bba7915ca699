"""The Hugging Face Hub both ways: push_to_hub up to huggingface_hub's upload call, and hf-hub: / local-dir: names
loaded from a Hub cache laid out as huggingface_hub lays it out, offline."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import open_clip
import pytest
import torch
from open_clip.push_to_hf_hub import save_for_hf

import memclip
from memclip import InputError

import repo_paths
from hub_cache import lay_out_repo

SRC = str(repo_paths.SRC)
COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


def trained_micro(seed: int = 1) -> torch.nn.Module:
    """A memory model whose weights differ from a fresh one's (so a load that silently re-initialises fails)."""
    torch.manual_seed(seed)
    model = memclip.create_model("Test-Micro-mem").eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


def embeddings(model: torch.nn.Module) -> torch.Tensor:
    torch.manual_seed(123)
    images = torch.randn(2, 3, 32, 32)
    text = memclip.get_tokenizer("Test-Micro")(["a red star", "two blue rings"])
    with torch.no_grad():
        return torch.cat([model.encode_image(images), model.encode_text(text)])


@pytest.fixture
def uploads(monkeypatch, tmp_path):
    """Replace the three HfApi calls that talk to the Hub; record their arguments and a copy of the folder that
    upload_folder would upload. Returns the list of recorded calls."""
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs))
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_branch(self, repo_id, **kwargs):
        calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        copy = tmp_path / f"uploaded{len(calls)}"
        shutil.copytree(kwargs["folder_path"], copy)
        calls.append(("upload_folder", kwargs["repo_id"], dict(kwargs, folder_path=copy)))
        return huggingface_hub.CommitInfo(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/{'c' * 40}",
                                          commit_message=kwargs["commit_message"], commit_description="",
                                          oid="c" * 40)

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_branch", create_branch)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return calls


@pytest.fixture
def offline_cache(monkeypatch, tmp_path):
    """huggingface_hub in offline mode, reading an empty cache of its own."""
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def pushed_folder(uploads, model, repo_id="me/tiny-mem", **kwargs) -> Path:
    info = memclip.push_to_hub(model, repo_id, **kwargs)
    assert isinstance(info, huggingface_hub.CommitInfo)
    return uploads[-1][2]["folder_path"]


def test_push_to_hub_uploads_a_saved_folder_and_a_card(uploads):
    model = trained_micro()
    info = memclip.push_to_hub(model, "me/tiny-mem", private=True, revision="v1", commit_message="first")
    assert info.oid == "c" * 40
    (_, repo, create), (_, _, branch), (_, _, upload) = uploads
    assert repo == "me/tiny-mem" and create == {"private": True, "exist_ok": True}
    assert branch == {"branch": "v1", "exist_ok": True}
    assert upload["repo_id"] == "me/tiny-mem" and upload["revision"] == "v1"
    assert upload["commit_message"] == "first" and upload["create_pr"] is False
    folder = upload["folder_path"]
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "memclip_config.json",
                                                        "open_clip_model.safetensors"]
    card = huggingface_hub.ModelCard.load(folder / "README.md")
    assert card.data.library_name == "memclip" and card.data.license == "mit"
    assert card.data.pipeline_tag == "zero-shot-image-classification"
    assert {"clip", "memclip", "product-key-memory"} <= set(card.data.tags)
    assert "| memory blocks | 1, 2 |" in card.text and "64 (8² product keys)" in card.text
    assert 'memclip.create_model_and_transforms("hf-hub:me/tiny-mem")' in card.text
    saved = json.loads((folder / "memclip_config.json").read_text())
    assert saved["memclip_version"] == memclip.__version__ and "memclip_git_commit" in saved
    loaded = memclip.create_model(str(folder)).eval()
    assert torch.equal(embeddings(loaded), embeddings(model))


def test_open_clips_own_push_fails_where_ours_does_not(tmp_path):
    """The reason push_to_hub exists: open_clip's save for the Hub refuses the shared value table."""
    model = trained_micro()
    with pytest.raises(RuntimeError, match="share memory"):
        save_for_hf(model, tokenizer=memclip.get_tokenizer("Test-Micro"), model_config=model.memclip_spec.model_cfg,
                    save_directory=tmp_path)


@pytest.mark.slow
def test_a_pushed_model_loads_from_an_offline_hub_cache_with_the_same_embeddings(uploads, tmp_path):
    """The Hub cache is laid out as huggingface_hub lays it out (its own scan_cache_dir reads it) and read by a fresh
    process with HF_HUB_OFFLINE=1, through memclip and through open_clip after register_open_clip()."""
    model = trained_micro()
    cache = tmp_path / "cache"
    lay_out_repo(cache, "me/tiny-mem", pushed_folder(uploads, model), COMMIT_A)
    scanned = huggingface_hub.scan_cache_dir(cache)
    assert not scanned.warnings
    (repo,) = scanned.repos
    assert repo.repo_id == "me/tiny-mem" and {r.commit_hash for r in repo.revisions} == {COMMIT_A}
    expected = tmp_path / "expected.pt"
    torch.save(embeddings(model), expected)
    # The same thread count as this process (an earlier test may have changed it): bit-equal sums need the same order.
    script = f"""
import sys, torch, open_clip, memclip
torch.set_num_threads({torch.get_num_threads()})
sys.path[:0] = [{str(Path(__file__).parent)!r}, {str(Path(repo_paths.__file__).parent)!r}]
from test_hub import embeddings
expected = torch.load({str(expected)!r}, weights_only=True)
model = memclip.create_model("hf-hub:me/tiny-mem").eval()
assert torch.equal(embeddings(model), expected), "memclip"
memclip.register_open_clip()
model, preprocess = open_clip.create_model_from_pretrained("hf-hub:me/tiny-mem")
assert torch.equal(embeddings(model.eval()), expected), "open_clip"
print("same embeddings")
"""
    environment = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), PYTHONPATH=SRC)
    done = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "same embeddings" in done.stdout


def test_revisions_and_local_dir(uploads, offline_cache):
    old, new = trained_micro(1), trained_micro(2)
    lay_out_repo(offline_cache, "me/tiny-mem", pushed_folder(uploads, old), COMMIT_A, refs=("v1",))
    lay_out_repo(offline_cache, "me/tiny-mem", pushed_folder(uploads, new), COMMIT_B, refs=("main",))
    assert torch.equal(embeddings(memclip.create_model("hf-hub:me/tiny-mem").eval()), embeddings(new))
    for name in ("hf-hub:me/tiny-mem@v1", f"hf-hub:me/tiny-mem@{COMMIT_A}"):
        assert torch.equal(embeddings(memclip.create_model(name).eval()), embeddings(old))
    assert memclip.get_model_spec("hf-hub:me/tiny-mem@v1").memory == old.memclip_spec.memory
    assert memclip.get_tokenizer("hf-hub:me/tiny-mem")(["a"]).shape == (1, 77)
    folder = pushed_folder(uploads, old)
    assert torch.equal(embeddings(memclip.create_model(f"local-dir:{folder}").eval()), embeddings(old))
    # A Hub model as `pretrained` of an architecture (the trainer's --pretrained hf-hub:...).
    assert torch.equal(embeddings(memclip.create_model("Test-Micro-mem", pretrained="hf-hub:me/tiny-mem@v1").eval()),
                       embeddings(old))


def test_an_open_clip_repo_is_built_by_open_clip_and_can_be_a_teacher(tmp_path, offline_cache):
    torch.manual_seed(3)
    teacher = memclip.create_model("Test-Micro").eval()
    folder = memclip.save_pretrained(teacher, tmp_path / "plain")
    (folder / "memclip_config.json").unlink()  # what open_clip's own push_to_hf_hub leaves: open_clip files only
    lay_out_repo(offline_cache, "org/plain-clip", folder, COMMIT_A)
    plain = memclip.create_model("hf-hub:org/plain-clip").eval()
    assert type(plain) is open_clip.CLIP  # open_clip's class: memclip's own trims padded text, to float rounding
    assert torch.allclose(embeddings(plain), embeddings(teacher), atol=1e-5)
    assert memclip.get_tokenizer("hf-hub:org/plain-clip")(["a"]).shape == (1, 77)
    student = memclip.create_model("hf-hub:org/plain-clip", memory={"layers": [1], "n_keys": 8, "knn": 4,
                                                                    "k_dim": 16, "heads": 2})
    assert sorted(memclip.memory_layers_of(student)) == [1]
    kept = teacher.state_dict()
    assert all(torch.equal(kept[k], v) for k, v in student.state_dict().items() if k in kept and ".mlp." not in k)


def test_names_that_hold_no_model_say_which_files_were_looked_for(tmp_path, offline_cache):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.md").write_text("no model here")
    lay_out_repo(offline_cache, "org/notes", tmp_path / "notes", COMMIT_A)
    for name in ("hf-hub:org/notes", f"local-dir:{tmp_path / 'notes'}"):
        with pytest.raises(InputError, match="holds neither memclip_config.json .* nor open_clip_config.json"):
            memclip.create_model(name)
    with pytest.raises(InputError, match=r"org/absent is not in the Hub cache .*HF_HUB_OFFLINE=1"):
        memclip.create_model("hf-hub:org/absent")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        memclip.create_model(f"local-dir:{tmp_path / 'nowhere'}")
    with pytest.raises(InputError, match="names no Hub repo"):
        memclip.create_model("hf-hub:")


def test_the_shipped_weights_card_is_made_from_their_record():
    """The card committed beside the synth weights is what their JSON record gives today (regenerate it with
    memclip.pretrained.shipped_card when the record changes)."""
    from memclip.pretrained import card_path, shipped_card, shipped_record

    made = shipped_card("ViT-Tiny-8", "synth")
    assert card_path("ViT-Tiny-8", "synth").read_text() == made
    card = huggingface_hub.ModelCard(made)
    assert card.data.library_name == "memclip" and card.data.license == "mit"  # open_clip cannot build its stem
    record = shipped_record("ViT-Tiny-8", "synth")
    assert record["training_command"] in made and record["sha256"][:12] in made
    assert f"| synth-shapes_top1 | {record['metrics']['synth-shapes_top1']} |" in made
    assert 'create_model_and_transforms("hf-hub:me/tiny")' in shipped_card("ViT-Tiny-8", "synth", repo_id="me/tiny")
    assert shipped_card("ViT-Tiny-8", "laion") is None
