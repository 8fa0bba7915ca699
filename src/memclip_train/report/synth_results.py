"""`SynthResults`: the results of ``python -m memclip_train.eval synth`` (``synth_results.json``), read once with
typed accessors instead of digging into nested dicts at each use.

The file holds, per model label: ``retrieval[label][dataset]`` (``synth-short``/``synth-long``: metrics, per-query
ranks, captions cut, context length, memory usage), ``semantics[label]`` (metrics and per-query hits),
``zeroshot[label][dataset]`` (top-1 and per-image ranks), ``pairs[label]`` (strict scores and per-pattern shares) and
``segmentation["label [method]"][world]`` (mIoU, overlays, per-image accuracy; ``[method, linear probe]`` for the
probe fitted with ``--probe-world``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List

from ..eval.runner import PROBE_SUFFIX

RETRIEVAL_SETS = ("synth-short", "synth-long")


@dataclass(frozen=True)
class SynthResults:
    """The sections of ``synth_results.json``, keyed by model label (segmentation by ``"label [method]"``)."""

    retrieval: Dict[str, Dict[str, Any]]
    semantics: Dict[str, Dict[str, Any]]
    zeroshot: Dict[str, Dict[str, Any]]
    pairs: Dict[str, Dict[str, Any]]
    segmentation: Dict[str, Dict[str, Any]]

    @classmethod
    def from_json(cls, path: Path) -> "SynthResults":
        """Read ``synth_results.json`` (or the folder that holds it)."""
        path = Path(path)
        data = json.loads((path / "synth_results.json" if path.is_dir() else path).read_text())
        return cls(**{name: data.get(name, {}) for name in cls.__dataclass_fields__})

    def retrieval_metric(self, label: str, dataset: str, key: str) -> float:
        """``t2i_R@1`` (and the other recalls, in %) of ``label`` on ``synth-short`` or ``synth-long``."""
        return self.retrieval[label][dataset]["metrics"][key]

    def retrieval_ranks(self, label: str, dataset: str, direction: str) -> List[int]:
        """The rank of each query's match (1 = first), ``direction`` ``t2i`` or ``i2t``."""
        return self.retrieval[label][dataset]["ranks"][direction]

    def retrieval_detail(self, label: str, dataset: str, key: str) -> Any:
        """``captions_cut``, ``context_length`` or ``memory_usage`` of one retrieval set."""
        return self.retrieval[label][dataset][key]

    def semantic_metrics(self, label: str) -> Dict[str, float]:
        """Semantic retrieval and zero-shot attribute scores (%): ``semantic_t2i_R@1``, ``zeroshot_shape``, ..."""
        return self.semantics[label]["metrics"]

    def semantic_hits(self, label: str, key: str) -> List[bool]:
        return list(self.semantics[label]["hits"][key])

    def zeroshot_datasets(self, label: str) -> List[str]:
        return list(self.zeroshot[label])

    def zeroshot_top1(self, label: str, dataset: str) -> float:
        return self.zeroshot[label][dataset]["metrics"]["top1"]

    def zeroshot_ranks(self, label: str, dataset: str) -> List[int]:
        """The rank of each image's true class (0 = first)."""
        return self.zeroshot[label][dataset]["ranks"]

    def pair_scores(self, label: str) -> Dict[str, Any]:
        """Blind pairs: ``i2t`` (strict, %), ``i2t_single`` and ``per_pattern``."""
        return self.pairs[label]

    def segmentation_result(self, label: str, probe: bool = False, world: str = "synth") -> Dict[str, Any]:
        """The model's zero-shot segmentation (``mIoU``, ``overlays``, ``image_accuracy``), or its linear probe's."""
        for key, value in self.segmentation.items():
            if key.startswith(label + " [") and key.endswith(PROBE_SUFFIX + "]") == probe:
                return value[world]
        raise KeyError(f"no {'linear-probe ' if probe else ''}segmentation result of {label!r} "
                       f"(results hold {sorted(self.segmentation)})")
