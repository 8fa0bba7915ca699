"""`CapacityPipeline`: the slot probe from the teacher to the last grid point, resumable point by point.

Order (docs/capacity.md): cache the features of every render (chunked, resumable) and check the cached rebuild
against ``encode_image``; gate G1 on the cache; choose the MLP's lr on training renders; run the two grid points that
decide G2 and G3; stop there if a gate failed; run the grid, the primary contrast first, choosing each arm's lr by
the registered rule before its first grid point.
Each finished point leaves ``points/<key>.json`` (and its per-identity arrays in ``points/<key>.npz``); running the
command again reads it back instead of training it again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

import memclip
from memclip.atomic_io import atomic_write, atomic_write_json
from memory_layers import MemoryConfig
from memclip.errors import InputError
from memclip.names_text import random_names

from ...synth.render import RenderConfig
from ...synth.world import WorldConfig
from . import gates as gate_checks
from .features import SlotProbe, cache_features
from .identities import identity_order, name_separation, render_scenes
from .plan import PRIMARY, CapacityPlan
from .slots import Arm, arm_costs, build_slot
from .training import SlotModel, SlotRecipe, evaluate_slot, train_slot

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Point:
    """One training run: an arm at K identities, ``exposures`` per identity, one seed and its lrs.

    ``stage`` is ``grid`` for the experiment's points and ``lr`` for the lr selection's."""

    arm: str
    k: int
    exposures: int
    seed: int
    lr: float
    value_lr: Optional[float] = None
    stage: str = "grid"

    @property
    def key(self) -> str:
        value = "" if self.value_lr is None else f"-vlr{self.value_lr:g}"
        return f"{self.stage}-{self.arm}-K{self.k}-E{self.exposures}-s{self.seed}-lr{self.lr:g}{value}"


CLAIM_POLL_SECONDS = 30


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_point(claim: Path) -> Optional[Path]:
    """Claim a point for this process: create ``claim`` (holding the pid) unless a live process holds it; a claim
    left by a process that died is taken over. Returns the claim file, or None when another live worker holds it."""
    claim.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            descriptor = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = int(claim.read_text() or 0)
            except (OSError, ValueError):
                holder = 0
            if holder and holder != os.getpid() and _alive(holder):
                return None
            claim.unlink(missing_ok=True)
            continue
        with os.fdopen(descriptor, "w") as file:
            file.write(str(os.getpid()))
        return claim
    return None


def _save_arrays(path: str, arrays: Dict[str, np.ndarray]) -> None:
    with open(path, "wb") as file:
        np.savez(file, **arrays)


class CapacityPipeline:
    """Runs the slot probe under ``out``.

    Args:
        out: the experiment's folder.
        plan: the design.
        teacher: the pretrained teacher: a shipped tag (``synth``), a checkpoint file or a saved folder.
        log: where progress lines go.
    """

    def __init__(self, out: Path, plan: CapacityPlan, teacher: str, log: Callable[[str], None] = print) -> None:
        self.out = Path(out)
        self.plan = plan
        self.teacher = str(teacher)
        self.log = log
        if Path(self.teacher).is_dir():   # a saved folder knows its architecture
            model, _, preprocess = memclip.create_model_and_transforms(self.teacher)
        else:
            model, _, preprocess = memclip.create_model_and_transforms(plan.teacher_model, pretrained=self.teacher)
        self.probe = SlotProbe(model, preprocess)
        self.logit_scale = float(model.logit_scale.exp()) if hasattr(model, "logit_scale") else 100.0
        memory = dict(memclip.get_model_config(plan.memory_model)["memory"])
        self.memory = MemoryConfig.from_dict({**memory, "layers": []})
        self.arms = plan.arm_map()
        self.world = WorldConfig()
        size = model.visual.image_size
        self.render = RenderConfig(image_size=size if isinstance(size, int) else size[0])
        self._features: Optional[torch.Tensor] = None
        self.lr_choice: Dict[str, Dict[str, Any]] = {}

    # ------------------------------------------------------------------------------------------------ layout
    def fingerprint(self) -> str:
        """What the cached features depend on (teacher, identities, renders), hashed."""
        source = {"teacher": self.teacher, "model": self.plan.teacher_model, "k": self.plan.largest_k,
                  "renders": self.plan.renders, "identity_seed": self.plan.identity_seed,
                  "render_seed": self.plan.render_seed, "render": asdict(self.render),
                  "world": self.world.vocabularies()}
        return hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def feature_dir(self) -> Path:
        return self.out / "features" / self.fingerprint()

    def point_file(self, point: Point) -> Path:
        return self.out / ("points" if point.stage == "grid" else "lr") / f"{point.key}.json"

    # ------------------------------------------------------------------------------------------------ features
    def features(self) -> torch.Tensor:
        """(K_max, renders, width) cached features (computed once, then read back)."""
        if self._features is None:
            plan = self.plan
            identities = identity_order(self.world, plan.identity_seed)[:plan.largest_k]
            if len(identities) < plan.largest_k:
                raise InputError(f"capacity: the world holds {len(identities):,} identities, fewer than K = "
                                 f"{plan.largest_k:,}")
            scenes = render_scenes(self.world, identities, plan.renders, plan.render_seed)
            start, last = time.time(), [0.0]

            def progress(done: int) -> None:
                if time.time() - last[0] > 60 or done == len(scenes):
                    last[0] = time.time()
                    self.log(f"features: {done:,} / {len(scenes):,} renders ({time.time() - start:.0f}s)")

            flat = cache_features(self.probe, scenes, self.world, self.render, self.feature_dir, progress=progress)
            self._features = flat.view(plan.largest_k, plan.renders, -1)
            checks = self.out / "checks.json"
            if not checks.is_file():
                images = self.probe.images(scenes[:64], self.world, self.render)
                error = self.probe.rebuild_error(images)
                stored = flat[:64]
                cache_error = float((self.probe.features(images) - stored).abs().max())
                atomic_write_json(checks, {
                    "rebuild_max_abs_error": error, "cache_max_abs_error": cache_error,
                    "rebuild_tolerance": plan.rebuild_tolerance, "renders_checked": 64,
                    "identities": [asdict(identity) for identity in identities[:8]],
                    "feature_seconds": round(time.time() - start, 1),
                    "names": name_separation(random_names(plan.largest_k, self.probe.embed_dim, 0)),
                })
            recorded = json.loads(checks.read_text())
            worst = max(recorded["rebuild_max_abs_error"], recorded["cache_max_abs_error"])
            if worst > plan.rebuild_tolerance:
                raise RuntimeError(f"capacity: the embedding rebuilt from the cached features differs from "
                                   f"encode_image by {worst:.2e} (tolerance {plan.rebuild_tolerance:g}); the cache "
                                   "does not stand for the model")
        return self._features

    # ------------------------------------------------------------------------------------------------ points
    def recipe(self, point: Point) -> SlotRecipe:
        return SlotRecipe(lr=point.lr, exposures=point.exposures, batch_size=self.plan.batch_size,
                          warmup_fraction=self.plan.warmup_fraction, weight_decay=self.plan.weight_decay)

    def run_point(self, point: Point, wait: bool = True) -> Optional[Dict[str, Any]]:
        """Train and score one point, or read it back when it finished earlier.

        Several workers may share one folder (``--arms-to-run``): a worker claims a point before training it, and a
        point another live worker has claimed is waited for (``wait``) or skipped for now (returns None).
        """
        path = self.point_file(point)
        while not path.is_file():
            claim = claim_point(path.with_suffix(".claim"))
            if claim is not None:
                try:
                    if not path.is_file():
                        self._train_point(point, path)
                finally:
                    claim.unlink(missing_ok=True)
                break
            if not wait:
                return None
            time.sleep(CLAIM_POLL_SECONDS)
        return json.loads(path.read_text())

    def _train_point(self, point: Point, path: Path) -> None:
        features = self.features()[:point.k]
        names = random_names(point.k, self.probe.embed_dim, point.seed)
        arm = self.arms.get(point.arm) or self.plan.arm(point.arm)
        memory = self.memory if point.value_lr is None else self.memory.replace(value_lr=point.value_lr)
        torch.manual_seed(point.seed)
        slot = build_slot(arm, self.probe.teacher_mlp, memory, self.probe.width, {**self.arms, arm.key: arm})
        model = SlotModel(self.probe, slot, self.logit_scale)
        recipe = self.recipe(point)
        start, cpu = time.time(), time.process_time()
        self.log(f"[run] {point.key}: {recipe.steps(point.k):,} steps")
        try:
            training = train_slot(model, features, names, self.plan.train_renders, recipe, seed=point.seed)
        except FloatingPointError as error:
            training = {"steps": recipe.steps(point.k), "diverged": str(error)}
        path.parent.mkdir(parents=True, exist_ok=True)
        evaluated = None if "diverged" in training else evaluate_slot(
            model, features, names, self.plan.train_renders, recipe, seed=point.seed)
        result: Dict[str, Any] = {"key": point.key, **asdict(point), "log2k": math.log2(point.k), **training}
        if evaluated is None:
            result.update({"scale": None, "train": {"r1": 0.0, "bits": 0.0}, "heldout": {"r1": 0.0, "bits": 0.0}})
        else:
            result["scale"] = evaluated["scale"]
            for split in ("train", "heldout"):
                result[split] = {key: evaluated[split][key] for key in ("r1", "bits", "renders")}
            arrays = {f"{split}_{name}": evaluated[split][key].astype(np.float32)
                      for split in ("train", "heldout") for name, key in (("hit", "hit"), ("bits", "bits_per_identity"))}
            atomic_write(path.with_suffix(".npz"), lambda tmp: _save_arrays(tmp, arrays))
        result["wall_seconds"] = round(time.time() - start, 1)
        result["cpu_seconds"] = round(time.process_time() - cpu, 1)
        atomic_write_json(path, result)
        self.log(f"[done] {point.key}: held-out R@1 {result['heldout']['r1']:.1f}%, bits "
                 f"{result['heldout']['bits']:,.0f} of {point.k * math.log2(point.k):,.0f}, train R@1 "
                 f"{result['train']['r1']:.1f}% ({result['wall_seconds']:.0f}s wall, {result['cpu_seconds']:.0f}s cpu)")

    def arrays(self, point: Point) -> Dict[str, np.ndarray]:
        """The per-identity arrays of a finished point (empty for a diverged one)."""
        path = self.point_file(point).with_suffix(".npz")
        if not path.is_file():
            return {}
        with np.load(path) as data:
            return {name: data[name] for name in data.files}

    # ------------------------------------------------------------------------------------------------ lr rule
    def choose_lr(self, key: str, train: bool = True) -> Optional[Dict[str, Any]]:
        """The arm's lr (and a memory's value lr) by the registered rule: the grid point with the most bits on
        training renders at ``lr_k`` and ``lr_exposures`` (seed ``lr_seed``); a choice on the grid's edge grows
        that axis by one step beyond it (at most ``lr_extensions`` times per axis) and is chosen again.

        ``train`` off: only the lr points already on disk are read; None when the rule needs one that is not."""
        if key in self.lr_choice:
            return self.lr_choice[key]
        plan, arm = self.plan, self.plan.arm(key)
        lrs = list(plan.lr_grid)
        value_lrs: List[Optional[float]] = list(plan.value_lr_grid) if arm.kind == "memory" else [None]
        grown = {"lr": 0, "value_lr": 0}
        tried: Dict[Tuple[float, Optional[float]], float] = {}
        while True:
            for lr in lrs:
                for value_lr in value_lrs:
                    if (lr, value_lr) not in tried:
                        point = Point(key, plan.lr_k, plan.lr_exposures, plan.lr_seed, lr, value_lr, stage="lr")
                        if not train and not self.point_file(point).is_file():
                            return None
                        tried[(lr, value_lr)] = self.run_point(point)["train"]["bits"]
            best_lr, best_value = max(tried, key=lambda pair: (tried[pair], -pair[0]))
            changed = False
            for axis, grid, best in (("lr", lrs, best_lr), ("value_lr", value_lrs, best_value)):
                if best is None or len(grid) < 2 or grown[axis] >= plan.lr_extensions:
                    continue
                ordered = sorted(grid)
                if best in (ordered[0], ordered[-1]):
                    step = ordered[1] / ordered[0]
                    grid.append(best * step if best == ordered[-1] else best / step)
                    grown[axis] += 1
                    changed = True
            if not changed:
                break
        choice = {"lr": best_lr, "value_lr": best_value,
                  "grid": [{"lr": lr, "value_lr": value, "train_bits": bits} for (lr, value), bits in tried.items()]}
        self.lr_choice[key] = choice
        self.log(f"[lr] {key}: lr {best_lr:g}" + ("" if best_value is None else f", value lr {best_value:g}")
                 + f" ({len(tried)} points tried)")
        return choice

    def decided_lrs(self) -> Dict[str, Dict[str, Any]]:
        """Every arm's lr choice that this worker made or that the lr points on disk decide (none is trained): a
        worker that ran some arms (``--arms-to-run``) still reports every arm's lr."""
        choices = {key: self.choose_lr(key, train=False) for key in self.plan.arms}
        return {key: choice for key, choice in choices.items() if choice is not None}

    def grid_point(self, key: str, k: int, exposures: int, seed: int) -> Point:
        choice = self.choose_lr(key)
        return Point(key, k, exposures, seed, choice["lr"], choice["value_lr"])

    # ------------------------------------------------------------------------------------------------ gates
    def gates(self) -> List[gate_checks.Gate]:
        """G1, G2 and G3 (running the lr selection of the MLP and its two gate points if needed); written to
        gates.json whatever they say."""
        plan = self.plan
        accuracy = gate_checks.nearest_centroid_accuracy(self.features(), plan.train_renders)
        result = [gate_checks.visible(accuracy, plan.largest_k, plan.gate_visible)]
        small = self.run_point(self.grid_point("mlp", plan.ks[0], plan.exposures, plan.seeds[0]))
        result.append(gate_checks.learnable(small["heldout"]["r1"] / 100, plan.ks[0], plan.gate_learnable))
        large = self.run_point(self.grid_point("mlp", plan.largest_k, plan.exposures, plan.seeds[0]))
        result.append(gate_checks.binding(large["heldout"]["r1"] / 100, plan.largest_k, plan.gate_binding))
        atomic_write_json(self.out / "gates.json", {"gates": [gate.to_dict() for gate in result],
                                                    "passed": all(gate.passed for gate in result)})
        for line in gate_checks.sentences(result):
            self.log(f"[gate] {line}")
        return result

    # ------------------------------------------------------------------------------------------------ the grid
    def grid(self) -> List[Tuple[str, int, int, int]]:
        """Every grid point as (arm, K, exposures, seed), in the order they run: the primary arms at every K (first
        seed) and at the primary K (more seeds), the other arms at every K, the exposure check at ``check_k``, then
        more seeds of the other arms at the primary K."""
        plan = self.plan
        primary = [arm for arm in plan.arms if arm in PRIMARY]
        others = [arm for arm in plan.arms if arm not in PRIMARY]

        def every_k(arms: List[str]) -> List[Tuple[str, int, int, int]]:
            return [(arm, k, plan.exposures, seed) for seed in plan.seeds for k in plan.ks for arm in arms]

        def more_seeds(arms: List[str]) -> List[Tuple[str, int, int, int]]:
            return [(arm, k, plan.exposures, seed) for seed in plan.primary_seeds for k in plan.primary_ks
                    for arm in arms]

        check = [(arm, plan.check_k, exposures, plan.seeds[0]) for exposures in plan.exposure_check
                 for arm in primary + others]
        return every_k(primary) + more_seeds(primary) + every_k(others) + check + more_seeds(others)

    def run(self, stop_after_gates: bool = False, arms_to_run: Optional[List[str]] = None) -> List[Dict[str, Any]]:
        """Gates, then (if they passed and ``stop_after_gates`` is off) every grid point; returns the grid's
        finished points.

        ``arms_to_run`` limits this worker to some arms' points (another worker runs the rest in the same folder);
        points another worker holds are skipped on the first pass and waited for on the second.

        Raises:
            GateFailed: a gate failed (gates.json says which); no grid point beyond the gates' runs.
        """
        gates = self.gates()
        gate_checks.check(gates)
        if stop_after_gates:
            return self.finished()
        grid = [entry for entry in self.grid() if arms_to_run is None or entry[0] in arms_to_run]
        for wait in (False, True):
            for arm, k, exposures, seed in grid:
                self.run_point(self.grid_point(arm, k, exposures, seed), wait=wait)
        return self.finished()

    def finished(self) -> List[Dict[str, Any]]:
        """Every finished grid point's record (its arrays stay on disk)."""
        folder = self.out / "points"
        return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))] if folder.is_dir() else []

    def costs(self) -> Dict[str, Dict[str, Any]]:
        """Parameters and FLOPs per query of every arm's slot (and the extra arms that ran)."""
        ran = {record["arm"] for record in self.finished()}
        keys = list(self.plan.arms) + sorted(ran - set(self.plan.arms))
        arms: List[Arm] = [self.plan.arm(key) for key in keys]
        extra = {arm.matches for arm in arms if arm.kind == "wide"} - set(keys)
        arms += [self.plan.arm(key) for key in sorted(extra)]
        return arm_costs(arms, self.probe.teacher_mlp, self.memory, self.probe.width)
