"""A model card from what a run folder knows: its params.txt (or a checkpoint's recorded config), the last
validation and zero-shot records of its metrics.jsonl, and the retrieval and zero-shot results evaluated into it
(``python -m memclip_train.eval ... --out RUN/eval``). The trainer writes it as ``RUN/final/README.md``;
``python -m memclip_train.push_to_hub`` writes it for the Hub repo.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from torch import nn

from memclip.atomic_io import atomic_write_text
from memclip.model_card import CardFacts, render_card
from memclip.model_files import MODEL_CARD_NAME
from memclip.provenance import software_versions

from .report.run_metrics import read_metrics

SETTINGS = (("optim.epochs", "epochs"), ("optim.batch_size", "batch size per process"), ("optim.lr", "learning rate"),
            ("optim.wd", "weight decay"), ("optim.warmup", "warmup steps"), ("model.precision", "precision"),
            ("task.long_short_alpha", "long/short alpha"), ("task.distill_loss", "distillation loss"),
            ("model.memory", "memory overrides"), ("seed", "seed"))
"""params.txt keys worth a line in the card's training table, and their labels."""


def read_params(run_dir: Path) -> Dict[str, str]:
    """params.txt as {key: value} strings; {} without the file."""
    path = Path(run_dir) / "params.txt"
    if not path.is_file():
        return {}
    pairs = (line.partition(": ") for line in path.read_text(encoding="utf-8").splitlines())
    return {key: value for key, sep, value in pairs if sep}


def flatten_config(config: Mapping[str, Any]) -> Dict[str, str]:
    """A checkpoint's recorded TrainConfig (``args``) in params.txt's ``section.field`` form."""
    flat: Dict[str, str] = {}
    for section, values in config.items():
        if isinstance(values, Mapping):
            flat.update({f"{section}.{key}": str(value) for key, value in values.items()})
        else:
            flat[section] = str(values)
    return flat


def _given(value: Optional[str]) -> Optional[str]:
    return None if value in (None, "", "None", "()") else value


def _task(params: Mapping[str, str]) -> Optional[str]:
    if not params:
        return None
    if params.get("task.distill") == "True":
        return "distill"
    if params.get("task.distill_text") == "True":
        return "distill_text"
    if _given(params.get("task.long_short_alpha")):
        return "long_short"
    return "contrastive"


def _last(records: List[dict], kind: str) -> Optional[dict]:
    rows = [r for r in records if r.get("kind") == kind]
    return rows[-1] if rows else None


def _of_this_run(result: Mapping[str, Any], run_dir: Path) -> bool:
    """Whether an evaluation result is of a model saved in ``run_dir`` (its final folder or a checkpoint)."""
    inside = Path(run_dir).resolve()
    for key in ("model", "pretrained"):
        value = result.get(key)
        if value and Path(value).exists() and inside in Path(value).resolve().parents:
            return True
    return False


def run_results(run_dir: Path) -> List[Tuple[str, Dict[str, Any]]]:
    """(heading, metrics) tables: the last validation and zero-shot records of metrics.jsonl, and each retrieval or
    zero-shot result of this run's model evaluated into the run folder."""
    results = []
    records = read_metrics(run_dir)
    for kind, heading in (("val", "Validation"), ("zeroshot", "Zero-shot")):
        last = _last(records, kind)
        if last is not None:
            metrics = {k: v for k, v in last.items() if isinstance(v, (int, float))
                       and k not in ("step", "epoch", "time", "seconds") and not k.endswith("-skipped")}
            results.append((f"{heading} after epoch {last['epoch']} (step {last['step']}), from metrics.jsonl:",
                            metrics))
    evaluated = sorted(Path(run_dir).glob("**/retrieval/*/*.json")) + sorted(Path(run_dir).glob("**/zeroshot/*/*.json"))
    for path in evaluated:
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not _of_this_run(result, run_dir):
            continue
        keys = ("t2i_R@1", "t2i_R@5", "i2t_R@1", "i2t_R@5", "top1", "top5")
        metrics = {k: result.get("metrics", {}).get(k) for k in keys if k in result.get("metrics", {})}
        if metrics:
            results.append((f"`{result.get('dataset')}` ({result.get('variant') or 'default'}), "
                            f"{path.relative_to(run_dir)}, in %:", metrics))
    return results


def run_card_facts(model: nn.Module, run_dir: Optional[Path], params: Optional[Mapping[str, str]] = None,
                   repo_id: Optional[str] = None, license: str = "mit") -> CardFacts:
    """The card facts of ``model`` trained in ``run_dir`` (its params.txt unless ``params`` is given)."""
    model = getattr(model, "module", model)
    params = dict(params if params is not None else (read_params(run_dir) if run_dir is not None else {}))
    software = {key[len("software."):]: value for key, value in params.items() if key.startswith("software.")}
    return CardFacts(
        spec=model.memclip_spec, repo_id=repo_id, license=license,
        parameters=sum(p.numel() for p in model.parameters()),
        teacher_weights=_given(params.get("task.distill_teacher")) or _given(params.get("model.pretrained")),
        task=_task(params), training_command=_given(params.get("command")),
        training_data=_given(params.get("data.train_data")),
        settings={label: params[key] for key, label in SETTINGS if _given(params.get(key))
                  and (key != "task.distill_loss" or _task(params) == "distill")},
        results=run_results(run_dir) if run_dir is not None else [],
        software=software or software_versions())


def write_run_card(model: nn.Module, run_dir: Path, folder: Path) -> Path:
    """Write the run's model card as ``folder/README.md`` (the saved model's folder), its load snippet naming that
    folder. Returns the card's path."""
    facts = run_card_facts(model, run_dir)
    facts.load_snippet = ("import memclip\n\n"
                          f"model, _, preprocess = memclip.create_model_and_transforms(\"{folder}\")\n"
                          f"tokenizer = memclip.get_tokenizer(\"{folder}\")")
    path = Path(folder) / MODEL_CARD_NAME
    atomic_write_text(path, render_card(facts))
    return path
