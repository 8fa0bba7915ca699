"""Models named as open_clip names them outside its registry: ``hf-hub:ORG/REPO[@REVISION]`` and ``local-dir:DIR``.

Such a name is resolved to a folder on this machine. A Hub repo goes through ``huggingface_hub.snapshot_download``,
which fetches only the files of a model folder, so the Hub's cache (``HF_HUB_CACHE``, or ``cache_dir``), offline mode
(``HF_HUB_OFFLINE=1``) and tokens (``HF_TOKEN``, ``hf auth login``) behave as they do for every other Hub model. The
folder then holds either a memclip model (``memclip_config.json``: what :func:`memclip.save_pretrained` and
:func:`memclip.push_to_hub` write), which memclip builds, or an open_clip model (``open_clip_config.json``), which
open_clip builds from the same folder (``local-dir:``), so a revision works for both.

    >>> source = resolve("hf-hub:me/tiny-mem@v1")
    >>> source.kind, source.folder   # ('memclip', PosixPath('~/.cache/huggingface/hub/models--me--tiny-mem/...'))
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from .errors import InputError
from .model_files import (MODEL_CARD_NAME, OPEN_CLIP_CONFIG_NAME, OPEN_CLIP_WEIGHTS_NAMES, SAVED_CONFIG_NAME,
                          WEIGHTS_NAME)

HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"
MEMCLIP_FILES = (SAVED_CONFIG_NAME, WEIGHTS_NAME, OPEN_CLIP_CONFIG_NAME, MODEL_CARD_NAME)
"""What is downloaded of a memclip repo: the files of a saved folder and its card."""


def has_schema(name: Any) -> bool:
    """Whether ``name`` is an ``hf-hub:`` or ``local-dir:`` name."""
    return isinstance(name, str) and name.startswith((HF_HUB_PREFIX, LOCAL_DIR_PREFIX))


def parse_hub_name(name: str) -> Tuple[str, Optional[str]]:
    """``hf-hub:ORG/REPO@REVISION`` -> (``ORG/REPO``, ``REVISION``); the revision is None when not given.

    Raises:
        InputError: nothing names the repo.
    """
    repo_id, _, revision = name[len(HF_HUB_PREFIX):].partition("@")
    if not repo_id:
        raise InputError(f"'{name}' names no Hub repo: write hf-hub:ORG/REPO or hf-hub:ORG/REPO@REVISION")
    return repo_id, revision or None


@dataclass(frozen=True)
class ModelFolder:
    """A resolved ``hf-hub:``/``local-dir:`` name.

    Attributes:
        name: the name as given.
        folder: the local folder (a Hub snapshot in the cache, or the ``local-dir:`` folder).
        kind: ``memclip`` (the folder holds ``memclip_config.json``) or ``open_clip`` (``open_clip_config.json``).
    """

    name: str
    folder: Path
    kind: str

    @property
    def is_memclip(self) -> bool:
        return self.kind == "memclip"

    @property
    def open_clip_name(self) -> str:
        """The name open_clip builds this folder from."""
        return f"{LOCAL_DIR_PREFIX}{self.folder}"

    @property
    def weights(self) -> Optional[Path]:
        """The weights file in the folder (open_clip's order of preference), or None."""
        names = (WEIGHTS_NAME,) if self.is_memclip else OPEN_CLIP_WEIGHTS_NAMES
        return next((self.folder / n for n in names if (self.folder / n).is_file()), None)

    def open_clip_model_cfg(self) -> Dict[str, Any]:
        """The ``model_cfg`` of an open_clip folder's ``open_clip_config.json``."""
        path = self.folder / OPEN_CLIP_CONFIG_NAME
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InputError(f"{path}: not valid JSON ({error})") from error
        return config.get("model_cfg", config)


def _kind_of(folder: Path, where: str, name: str) -> str:
    if (folder / SAVED_CONFIG_NAME).is_file():
        return "memclip"
    if (folder / OPEN_CLIP_CONFIG_NAME).is_file():
        return "open_clip"
    raise InputError(f"'{name}': {where} holds neither {SAVED_CONFIG_NAME} (a memclip model, as "
                     f"memclip.save_pretrained and memclip.push_to_hub write it) nor {OPEN_CLIP_CONFIG_NAME} (an "
                     "open_clip model)")


def _snapshot(repo_id: str, revision: Optional[str], cache_dir: Optional[str], files: Tuple[str, ...],
              name: str) -> Path:
    """``snapshot_download`` of ``files`` (those the repo has), with its errors turned into one-line InputErrors."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=list(files)))
    except RevisionNotFoundError as error:
        raise InputError(f"'{name}': the Hub repo {repo_id} has no revision '{revision}'") from error
    except GatedRepoError as error:
        raise InputError(f"'{name}': the Hub repo {repo_id} is gated: accept its terms on the Hub, then log in "
                         "(hf auth login) or set HF_TOKEN") from error
    except RepositoryNotFoundError as error:
        raise InputError(f"'{name}': no Hub model repo {repo_id} (or it is private: log in with hf auth login or "
                         "set HF_TOKEN)") from error
    except LocalEntryNotFoundError as error:
        raise InputError(f"'{name}': {repo_id}{'@' + revision if revision else ''} is not in the Hub cache "
                         f"({cache_dir or 'HF_HUB_CACHE'}) and the Hub cannot be reached (HF_HUB_OFFLINE=1 or no "
                         "network): download it once online, or give its folder as local-dir:DIR") from error


def resolve(name: str, cache_dir: Optional[str] = None, weights: bool = False) -> ModelFolder:
    """The local folder of an ``hf-hub:`` or ``local-dir:`` name, and what kind of model it holds.

    Args:
        name: ``hf-hub:ORG/REPO[@REVISION]`` or ``local-dir:DIR``.
        cache_dir: the Hub cache to use (default: huggingface_hub's, ``HF_HUB_CACHE``).
        weights: also fetch the weights (else only the configs, enough to know the architecture).
    Raises:
        InputError: the name has no schema, the repo or revision does not exist or cannot be reached, or the folder
            holds neither a memclip nor an open_clip model (the message names the files looked for).
        FileNotFoundError: a ``local-dir:`` folder that does not exist.
    """
    if name.startswith(LOCAL_DIR_PREFIX):
        folder = Path(name[len(LOCAL_DIR_PREFIX):]).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"'{name}': no such folder {folder}")
        return ModelFolder(name, folder, _kind_of(folder, f"the folder {folder}", name))
    if not name.startswith(HF_HUB_PREFIX):
        raise InputError(f"'{name}' is neither an {HF_HUB_PREFIX} nor a {LOCAL_DIR_PREFIX} name")
    repo_id, revision = parse_hub_name(name)
    folder = _snapshot(repo_id, revision, cache_dir, (SAVED_CONFIG_NAME, OPEN_CLIP_CONFIG_NAME), name)
    where = f"the Hub repo {repo_id}{' at revision ' + revision if revision else ''}"
    source = ModelFolder(name, folder, _kind_of(folder, where, name))
    if not weights:
        return source
    if source.is_memclip:
        _snapshot(repo_id, revision, cache_dir, MEMCLIP_FILES, name)
    else:
        for candidate in OPEN_CLIP_WEIGHTS_NAMES:
            if source.weights is not None:
                break
            _snapshot(repo_id, revision, cache_dir, (candidate,), name)
    if source.weights is None:
        looked_for = (WEIGHTS_NAME,) if source.is_memclip else OPEN_CLIP_WEIGHTS_NAMES
        raise InputError(f"'{name}': {where} has no weights file (looked for {', '.join(looked_for)})")
    return source


def local_weights(pretrained: Optional[str], cache_dir: Optional[str] = None) -> Optional[str]:
    """A ``pretrained`` value as memclip reads it: an ``hf-hub:``/``local-dir:`` memclip model becomes its folder,
    an open_clip one its weights file; anything else (tags, paths, None) is returned unchanged."""
    if not has_schema(pretrained):
        return pretrained
    source = resolve(pretrained, cache_dir, weights=True)
    return str(source.folder if source.is_memclip else source.weights)
