"""Model cards: the ``README.md`` of a model folder on the Hugging Face Hub, made from what memclip knows of a model.

The front matter (``library_name``, ``license``, ``tags``, ``pipeline_tag`` and, for a teacher on the Hub,
``base_model``) is written by huggingface_hub's ``ModelCardData``. The body gives the architecture and its memory
block, the teacher and tag it was distilled from, the training command and data, the evaluation results and a load
snippet. :class:`CardFacts` holds these facts; the training programs gather them from a run folder
(:mod:`memclip_train.run_card`) and :func:`facts_from_shipped_record` from the JSON record of shipped weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import open_clip

from .hub import HF_HUB_PREFIX
from .registry import ModelSpec

PIPELINE_TAG = "zero-shot-image-classification"
CITATION = """```bibtex
@software{memclip,
  title  = {memclip: product-key memory for CLIP vision transformers, trained by distillation},
  author = {{memclip contributors}},
  year   = {2026},
  note   = {An open\\_clip extension}
}
@mastersthesis{ibrahimi2025finegrained,
  title  = {Fine-grained image understanding with {VLMs}},
  author = {Ibrahimi, Anesa},
  school = {University of Amsterdam},
  year   = {2025},
  type   = {{MSc} thesis}
}
```"""


@dataclass
class CardFacts:
    """What a model card says about a model.

    Attributes:
        spec: the model's architecture (``model.memclip_spec``).
        repo_id: the Hub repo the card is written for (the load snippet uses ``hf-hub:<repo_id>``), or None.
        license: the weights' licence (an SPDX id the Hub knows, e.g. ``mit``).
        parameters: the model's parameter count, or None.
        teacher_weights: the weights the model started from or was distilled from (an open_clip tag of the
            teacher, a checkpoint), or None (trained from scratch).
        task: what the run trained (contrastive, distill, long_short, distill_text), or None.
        training_command: the command that trained it, or None.
        training_data: the training data (``--train-data``), or None.
        settings: other training settings worth a line (epochs, batch size, lr, precision, ...).
        results: (title, {metric: value}) tables of evaluation results.
        software: versions (:func:`memclip.provenance.software_versions`).
        load_snippet: Python that loads the model; by default from ``hf-hub:<repo_id>``.
        notes: paragraphs added at the end of the description.
    """

    spec: ModelSpec
    repo_id: Optional[str] = None
    license: str = "mit"
    parameters: Optional[int] = None
    teacher_weights: Optional[str] = None
    task: Optional[str] = None
    training_command: Optional[str] = None
    training_data: Optional[str] = None
    settings: Dict[str, Any] = field(default_factory=dict)
    results: List[Tuple[str, Dict[str, Any]]] = field(default_factory=list)
    software: Dict[str, Any] = field(default_factory=dict)
    load_snippet: Optional[str] = None
    notes: List[str] = field(default_factory=list)


def teacher_hub_repo(spec: ModelSpec, tag: Optional[str]) -> Optional[str]:
    """The Hub repo of the teacher's open_clip weights ``tag`` (e.g. ``timm/vit_base_patch16_clip_224.openai``), or
    None when the tag is not an open_clip tag held on the Hub."""
    if not tag or not spec.teacher:
        return None
    hf_hub = open_clip.get_pretrained_cfg(spec.teacher, tag).get("hf_hub", "")
    return hf_hub.strip("/") or None


def open_clip_builds(spec: ModelSpec) -> bool:
    """Whether open_clip alone builds the architecture: no memory, no widened MLPs, open_clip's patchify stem and
    CLIP's own text tower. Otherwise the card's ``library_name`` is memclip."""
    return spec.memory is None and spec.wide_mlp.is_default and spec.stem.is_default and spec.text.is_default


def _front_matter(facts: CardFacts) -> str:
    from huggingface_hub import ModelCardData

    tags = ["clip", "open_clip", "memclip", "vision-language", PIPELINE_TAG]
    if facts.spec.memory is not None:
        tags.insert(3, "product-key-memory")
    base_model = teacher_hub_repo(facts.spec, facts.teacher_weights)
    data = ModelCardData(library_name="open_clip" if open_clip_builds(facts.spec) else "memclip",
                         license=facts.license, tags=tags, pipeline_tag=PIPELINE_TAG, base_model=base_model)
    return f"---\n{data.to_yaml()}\n---\n"


def _table(rows: Sequence[Tuple[str, Any]], header: Tuple[str, str] = ("", "")) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines.extend(f"| {key} | {_format(value)} |" for key, value in rows)
    return "\n".join(lines)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def architecture_rows(spec: ModelSpec, parameters: Optional[int] = None) -> List[Tuple[str, Any]]:
    """The architecture as (what, value) rows: towers, embedding, context, stem, memory block."""
    vision = spec.model_cfg.get("vision_cfg", {})
    text = spec.model_cfg.get("text_cfg", {})
    rows: List[Tuple[str, Any]] = [("memclip config", spec.name), ("teacher architecture", spec.teacher)]
    if "width" in vision:
        rows.append(("image tower", f"ViT, {vision.get('layers')} blocks of width {vision['width']}, patch "
                                    f"{vision.get('patch_size')}, {vision.get('image_size')} px"))
    if "width" in text:
        rows.append(("text tower", f"{text.get('layers')} blocks of width {text['width']}, {spec.context_length} "
                                   f"tokens ({spec.text.kind} positions)"))
    rows.append(("embedding", spec.model_cfg.get("embed_dim")))
    if not spec.stem.is_default:
        rows.append(("image stem", spec.stem.kind))
    if not spec.wide_mlp.is_default:
        rows.append(("widened MLPs (dense control)", spec.wide_mlp.to_dict()))
    memory = spec.memory
    if memory is not None:
        rows += [("memory blocks", list(memory.layers)), ("memory mode", memory.mode),
                 ("memory slots", f"{memory.n_keys ** 2:,} ({memory.n_keys}² product keys)"),
                 ("memory reads", f"{memory.heads} heads x top-{memory.knn}"),
                 ("key / value width", f"{memory.k_dim} / {memory.v_dim}"),
                 ("values shared across blocks", memory.share_values), ("gated", memory.gated)]
    if parameters is not None:
        rows.append(("parameters", f"{parameters:,}"))
    return rows


def default_load_snippet(facts: CardFacts) -> str:
    name = f"{HF_HUB_PREFIX}{facts.repo_id}" if facts.repo_id else "path/to/this/folder"
    return (f"import memclip\n\n"
            f"model, _, preprocess = memclip.create_model_and_transforms(\"{name}\")\n"
            f"tokenizer = memclip.get_tokenizer(\"{name}\")\n"
            f"model.eval()")


def render_card(facts: CardFacts) -> str:
    """The model card (``README.md``) for ``facts``: Hub front matter and a Markdown body."""
    spec = facts.spec
    title = facts.repo_id.split("/")[-1] if facts.repo_id else spec.name
    what = ("a CLIP model whose vision tower reads a trainable product-key memory" if spec.memory is not None
            else "a CLIP model")
    parts = [_front_matter(facts), f"# {title}\n",
             f"{what[0].upper()}{what[1:]}, made with memclip, an extension of "
             "[open_clip](https://github.com/mlfoundations/open_clip)."]
    if facts.teacher_weights:
        verb = "distilled from" if facts.task == "distill" else "started from"
        parts.append(f"It was {verb} the teacher `{spec.teacher}` with the weights `{facts.teacher_weights}`.")
    parts.extend(facts.notes)
    parts += ["\n## Architecture\n", _table(architecture_rows(spec, facts.parameters), ("", "value"))]
    training = [("task", facts.task), ("data", facts.training_data), *facts.settings.items()]
    training = [(key, value) for key, value in training if value not in (None, "")]
    if facts.training_command or training:
        parts.append("\n## Training\n")
        if facts.training_command:
            parts.append(f"```bash\n{facts.training_command}\n```\n")
        if training:
            parts.append(_table(training, ("setting", "value")))
    if facts.results:
        parts.append("\n## Evaluation\n")
        for heading, metrics in facts.results:
            parts += [f"{heading}\n", _table(list(metrics.items()), ("metric", "value")), ""]
    parts += ["\n## Use\n", "With memclip installed:\n",
              f"```python\n{facts.load_snippet or default_load_snippet(facts)}\n```"]
    if not open_clip_builds(spec):
        parts.append("\nopen_clip builds it too once memclip is registered: `memclip.register_open_clip()`, then "
                     "`open_clip.create_model_and_transforms(...)` with the same name.")
    if facts.software:
        parts += ["\n## Software\n", _table(list(facts.software.items()), ("package", "version"))]
    parts += ["\n## Citation\n", CITATION, ""]
    return "\n".join(parts)


def facts_from_shipped_record(spec: ModelSpec, record: Mapping[str, Any], repo_id: Optional[str] = None,
                              parameters: Optional[int] = None) -> CardFacts:
    """The card facts of weights that ship with memclip, from their JSON record (:mod:`memclip.pretrained`)."""
    plan = record.get("plan", {})
    world = record.get("metrics_world", {})
    settings = {key: plan[key] for key in ("epochs", "samples_per_epoch", "batch_size", "lr", "warmup", "wd")
                if key in plan}
    settings.update({"seed": record.get("seed"), "training time (s)": record.get("training_seconds"),
                     "weights": f"{record['weights']} ({record.get('dtype', '')}, sha256 {record['sha256'][:12]}...)"})
    load = (f"import memclip\n\nmodel, _, preprocess = memclip.create_model_and_transforms(\"{record['model']}\", "
            f"pretrained=\"{record['tag']}\")   # ships inside the memclip package\n"
            f"tokenizer = memclip.get_tokenizer(\"{record['model']}\")")
    if repo_id:
        load += (f"\n# or from the Hub:\nmodel, _, preprocess = memclip.create_model_and_transforms("
                 f"\"{HF_HUB_PREFIX}{repo_id}\")")
    notes = [f"These are the `{record['tag']}` weights of `{record['model']}` that ship inside memclip, re-created by "
             f"`{record.get('command', '')}`."]
    results = []
    if record.get("metrics"):
        scope = ", ".join(f"{k} {v}" for k, v in world.items())
        results.append((f"On the synthetic world ({scope}); retrieval and zero-shot in %:", dict(record["metrics"])))
    return CardFacts(spec=spec, repo_id=repo_id, license="mit", parameters=parameters, task="contrastive",
                     training_command=record.get("training_command"),
                     training_data="synth-stream: fresh scenes of memclip's synthetic world (memclip_train.synth)",
                     settings=settings, results=results, software=dict(record.get("software", {})), load_snippet=load,
                     notes=notes)
