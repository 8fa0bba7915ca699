"""`python -m memclip_train.push_to_hub` and the model card a run writes: what the card says is the run's."""
import shutil

import huggingface_hub
import pytest
import torch
from train_helpers import train_args

import memclip
from memclip.pretrained import shipped_card
from memclip_train.main import main as train_main
from memclip_train.push_to_hub import main as push_main


@pytest.fixture(scope="module")
def trained_run(micro_world, tmp_path_factory):
    logs = tmp_path_factory.mktemp("push")
    assert train_main(train_args(micro_world, logs, "student", "--model", "Test-Micro-mem", "--val-data",
                                 str(micro_world / "val" / "000000.tar"))) == 0
    return logs / "student"


def test_a_finished_run_writes_a_model_card_into_its_final_folder(trained_run):
    card = huggingface_hub.ModelCard.load(trained_run / "final" / "README.md")
    assert card.data.library_name == "memclip" and "product-key-memory" in card.data.tags
    assert "--model Test-Micro-mem" in card.text and "| task | contrastive |" in card.text
    assert "Validation after epoch 2 (step 12)" in card.text and "| val_t2i_R@1 |" in card.text
    assert f'create_model_and_transforms("{trained_run / "final"}")' in card.text


def test_dry_run_of_a_run_folder_and_of_a_checkpoint(trained_run, tmp_path, capsys):
    assert push_main([str(trained_run), "--repo-id", "me/student", "--dry-run", str(tmp_path / "staged")]) == 0
    assert "README.md, memclip_config.json, open_clip_model.safetensors" in capsys.readouterr().out
    card = (tmp_path / "staged" / "README.md").read_text()
    assert 'create_model_and_transforms("hf-hub:me/student")' in card and "| val_t2i_R@1 |" in card
    final = memclip.create_model(str(trained_run / "final")).state_dict()
    staged = memclip.create_model(str(tmp_path / "staged")).state_dict()
    assert all(torch.equal(final[k], staged[k]) for k in final)
    checkpoint = trained_run / "checkpoints" / "epoch_1.pt"
    assert push_main([str(checkpoint), "--repo-id", "me/e1", "--dry-run", str(tmp_path / "e1")]) == 0
    card = (tmp_path / "e1" / "README.md").read_text()
    assert "--model Test-Micro-mem" in card and "| epochs | 2 |" in card


def test_push_of_the_shipped_weights_uploads_their_card(tmp_path, monkeypatch, capsys):
    uploaded = {}

    def upload_folder(self, **kwargs):
        shutil.copytree(kwargs["folder_path"], tmp_path / "up")
        uploaded.update(kwargs)
        return huggingface_hub.CommitInfo(commit_url="https://huggingface.co/me/tiny/commit/" + "d" * 40,
                                          commit_message="m", commit_description="", oid="d" * 40)

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kwargs: None)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    assert push_main(["--model", "ViT-Tiny-8", "--pretrained", "synth", "--repo-id", "me/tiny"]) == 0
    assert uploaded["repo_id"] == "me/tiny" and "hf-hub:me/tiny" in capsys.readouterr().out
    assert (tmp_path / "up" / "README.md").read_text() == shipped_card("ViT-Tiny-8", "synth", repo_id="me/tiny")


def test_push_errors_are_one_line(tmp_path, capsys):
    assert push_main([str(tmp_path), "--repo-id", "me/x", "--dry-run", str(tmp_path / "o")]) == 2
    assert "neither a run folder" in capsys.readouterr().err
    assert push_main(["--model", "ViT-Tiny-8", "--pretrained", "laion", "--repo-id", "me/x"]) == 2
    assert "not a tag of ViT-Tiny-8 that ships with memclip" in capsys.readouterr().err
