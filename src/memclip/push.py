"""`push_to_hub`: a model to a Hugging Face Hub repo, as the folder :func:`memclip.save_pretrained` writes plus a
model card, uploaded with huggingface_hub (so its tokens, ``HF_ENDPOINT`` and proxies apply).

open_clip's own ``push_to_hf_hub`` stops on a memory model (``Some tensors share memory``: one value table serves
several blocks); ``save_pretrained`` stores a shared table once and loads it back shared.

    >>> memclip.push_to_hub(model, "me/vit-b-16-mem", private=True)
    >>> memclip.create_model("hf-hub:me/vit-b-16-mem")      # anyone with access, or offline from the cache
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Optional, Union

from torch import nn

from .atomic_io import atomic_write_text
from .model_card import CardFacts, render_card
from .model_files import MODEL_CARD_NAME
from .provenance import software_versions
from .weights_io import save_pretrained


def write_hub_folder(model: nn.Module, folder: Union[str, Path], card: Optional[str] = None,
                     repo_id: Optional[str] = None, license: str = "mit") -> Path:
    """Write what :func:`push_to_hub` uploads into ``folder``: the :func:`memclip.save_pretrained` files and the
    model card ``README.md`` (``card``, or one made from the model's spec). Returns the folder."""
    model = getattr(model, "module", model)
    folder = save_pretrained(model, folder)
    if card is None:
        facts = CardFacts(spec=model.memclip_spec, repo_id=repo_id, license=license,
                          parameters=sum(p.numel() for p in model.parameters()), software=software_versions())
        card = render_card(facts)
    atomic_write_text(folder / MODEL_CARD_NAME, card)
    return folder


def push_to_hub(model: nn.Module, repo_id: str, *, card: Optional[str] = None, license: str = "mit",
                private: Optional[bool] = None, token: Optional[str] = None, revision: Optional[str] = None,
                commit_message: Optional[str] = None, create_pr: bool = False) -> Any:
    """Upload ``model`` to the Hub repo ``repo_id`` (created if missing), as :func:`write_hub_folder` writes it.

    Args:
        model: a model made by :func:`memclip.create_model` (it carries ``memclip_spec``).
        repo_id: ``ORG/NAME``.
        card: the model card's Markdown (default: one made from the model; the command line
            ``python -m memclip_train.push_to_hub`` adds the run's command, data and results).
        license: the weights' licence for the default card.
        private: create the repo private (None: the Hub's default).
        token: a Hub token (default: ``HF_TOKEN`` or the stored login).
        revision: the branch to push to (created from the default branch if missing).
        commit_message: default ``"Upload <model name> with memclip"``.
        create_pr: open a pull request instead of committing.
    Returns:
        huggingface_hub's ``CommitInfo`` of the upload.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="memclip-push-") as folder:
        write_hub_folder(model, folder, card=card, repo_id=repo_id, license=license)
        return api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision, create_pr=create_pr,
                                 commit_message=commit_message or f"Upload {model.memclip_spec.name} with memclip")
