"""`TextTowerConfig`: which text tower a model uses and how far its context reaches."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

from memory_layers.config import from_dict_strict

from .errors import InputError

TEXT_TOWER_KINDS = ("clip", "rope", "names")
POSITION_STRETCHES = ("longclip", "interpolate")
ACTIVATIONS = ("gelu", "quick_gelu")


def _fail(field_name: str, value: Any, why: str) -> None:
    raise InputError(f"TextTowerConfig.{field_name}={value!r}: {why}")


@dataclass(frozen=True)
class TextTowerConfig:
    """The text side of a model. The default is CLIP's own tower at its native context length.

    Three ways to handle long captions:
        - ``kind="clip"``, no context change: captions are truncated at 77 tokens (counted and logged);
        - ``kind="clip", context_length=248, pos_stretch="longclip"``: Long-CLIP's knowledge-preserved stretch of the
          absolute positional embedding (positions 0..keep-1 kept, the rest interpolated, the tail extrapolated);
          ``"interpolate"`` is open_clip's plain linear resize, for comparison;
        - ``kind="rope"``: TULIP-style rotary positions in every text block, initialised from the CLIP tower and
          distilled on <= 77-token captions; ``rope_ntk_factor`` > 1 extends it with NTK-aware scaling. TULIP's own
          released tower loads into it too (``text_pretrained="tulip:PATH"``, see :mod:`memclip.tulip_weights`).

    And one that reads no words: ``kind="names"`` maps captions that are name indices to ``names`` fixed random unit
    vectors drawn from ``names_seed`` (:mod:`memclip.names_text`; an ideal text side for capacity probes).

    Attributes:
        kind: ``"clip"`` (absolute positions), ``"rope"`` or ``"names"``.
        context_length: tokens the tower reads; None keeps the config's ``text_cfg.context_length``.
        pos_stretch: how a ``clip`` tower reaches a longer context (None: no change allowed).
        stretch_keep: leading positions the Long-CLIP stretch keeps exactly (20).
        rope_theta: RoPE base (10000).
        rope_ntk_factor: NTK-aware scaling factor (1 = none); the base becomes theta * factor^(d / (d - 2)).
        activation: the MLP activation of a ``rope`` tower's blocks when it differs from the model's (``gelu`` for
            TULIP's towers, which use exact GELU even on OpenAI's QuickGELU CLIP); None keeps the model's.
        names, names_seed: a ``names`` tower's number of names and the seed of their vectors.
    """

    kind: str = "clip"
    context_length: Optional[int] = None
    pos_stretch: Optional[str] = None
    stretch_keep: int = 20
    rope_theta: float = 10000.0
    rope_ntk_factor: float = 1.0
    activation: Optional[str] = None
    names: int = 0
    names_seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in TEXT_TOWER_KINDS:
            _fail("kind", self.kind, f"must be one of {TEXT_TOWER_KINDS}")
        if self.context_length is not None and (
            isinstance(self.context_length, bool) or not isinstance(self.context_length, int) or self.context_length < 2
        ):
            _fail("context_length", self.context_length, "must be an integer >= 2, or None for the config's")
        if self.pos_stretch is not None and self.pos_stretch not in POSITION_STRETCHES:
            _fail("pos_stretch", self.pos_stretch, f"must be one of {POSITION_STRETCHES} or None")
        if self.pos_stretch is not None and self.kind != "clip":
            _fail("pos_stretch", self.pos_stretch, "applies to the clip tower only (a rope tower has no positions)")
        if isinstance(self.stretch_keep, bool) or not isinstance(self.stretch_keep, int) or self.stretch_keep < 1:
            _fail("stretch_keep", self.stretch_keep, "must be a positive integer")
        if not isinstance(self.rope_theta, (int, float)) or self.rope_theta <= 1:
            _fail("rope_theta", self.rope_theta, "must be a number > 1")
        if not isinstance(self.rope_ntk_factor, (int, float)) or self.rope_ntk_factor < 1:
            _fail("rope_ntk_factor", self.rope_ntk_factor, "must be a number >= 1")
        if self.activation is not None and self.activation not in ACTIVATIONS:
            _fail("activation", self.activation, f"must be one of {ACTIVATIONS} or None (the model's)")
        if self.activation is not None and self.kind != "rope":
            _fail("activation", self.activation, "applies to a rope tower only (a clip tower keeps the model's)")
        for name in ("names", "names_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                _fail(name, value, "must be a non-negative integer")
        if (self.kind == "names") != (self.names > 0):
            _fail("names", self.names, "a names tower needs names >= 1, and only a names tower takes names")
        if self.kind == "names" and (self.context_length is not None or self.pos_stretch is not None):
            _fail("kind", self.kind, "a names tower reads one index per caption: no context_length or pos_stretch")

    @property
    def is_default(self) -> bool:
        return self == TextTowerConfig()

    def resolved_context_length(self, native: int) -> int:
        return self.context_length if self.context_length is not None else native

    def to_dict(self) -> Dict[str, Any]:
        """The fields as a dict; ``names`` and ``names_seed`` only for a names tower (so other towers record what
        they recorded before names towers existed)."""
        data = dataclasses.asdict(self)
        if self.kind != "names":
            del data["names"], data["names_seed"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TextTowerConfig":
        return from_dict_strict(cls, data)

    def replace(self, **changes: Any) -> "TextTowerConfig":
        return dataclasses.replace(self, **changes)
