"""Stage B of the capacity experiment: the same question through the real trainer (docs/capacity.md).

A world whose captions name the identities: each training sample is one render of one identity (the slot probe's
identities and renders) captioned with its name index, read by the ``names`` text tower
(:mod:`memclip.names_text`), whose vectors are the slot probe's names. Each shard holds one batch of distinct
identities (a batch never holds two renders of one identity, which CLIP's loss would treat as a negative), and one
epoch shows every training render once (3 exposures per identity). Then the project's own commands: the memory
student is distilled (stage 1, only the memory trains, on the world's images) and fine-tuned (stage 2, memory and
vision tower), the control (the teacher) is fine-tuned with the same recipe, both by ``python -m memclip_train.main``;
each is scored like a slot-probe point: held-out renders against all K names, R@1 and bits stored.
"""
from __future__ import annotations

import io
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import memclip
from memclip.atomic_io import atomic_write_json
from memclip.errors import InputError

from ...data.shard_writer import ShardWriter
from ...stages import Stage, run_stages
from ...synth.render import RenderConfig, render_scene
from ...synth.world import WorldConfig
from .identities import identity_order, nuisances
from .metrics import calibrate_scale, score_queries

STUDENT, CONTROL = "memory-student", "control"


@dataclass(frozen=True)
class EndToEndPlan:
    """Stage B's design (validated when built).

    Attributes:
        k: identities (a multiple of ``batch_size``); exposures: per identity (a multiple of ``train_renders``).
        seed: the names' seed and every training seed.
        n_keys: the memory student's sub-keys per half (its slots: ``n_keys ** 2``), taken from stage A.
        layers: the blocks that get the memory (empty: the last block, the slot probe's).
        value_lr: the memory values' fixed lr (stage A's choice for that memory).
        batch_size, lr, wd, warmup: stage 2's recipe (both models).
        distill_epochs, distill_lr: stage 1's recipe (the memory student only).
        teacher_model, memory_model: the teacher's architecture and the memory student's config.
        train_renders: renders per identity that train (the rest are held out); identity_seed, render_seed: as
            stage A's, so the identities and renders are the slot probe's.
        precision, workers: the trainer's ``--precision`` and ``--workers`` (fp32 and 1 on a CPU; amp_bf16 and
            8 or more on a GPU).
    """

    k: int = 512
    exposures: int = 30
    seed: int = 0
    n_keys: int = 32
    layers: tuple = ()
    value_lr: float = 1e-2
    batch_size: int = 64
    lr: float = 1e-3
    wd: float = 0.05
    warmup: int = 20
    distill_epochs: int = 3
    distill_lr: float = 2e-3
    teacher_model: str = "ViT-Tiny-8"
    memory_model: str = "ViT-Tiny-8-mem"
    train_renders: int = 3
    identity_seed: int = 0
    render_seed: int = 0
    precision: str = "fp32"
    workers: int = 1

    def __post_init__(self) -> None:
        if self.k < self.batch_size or self.k % self.batch_size:
            raise InputError(f"EndToEndPlan.k={self.k}: must be a multiple of the batch size ({self.batch_size}), so "
                             "that each shard is one batch of distinct identities")
        if self.exposures < self.train_renders or self.exposures % self.train_renders:
            raise InputError(f"EndToEndPlan.exposures={self.exposures}: must be a multiple of the training renders "
                             f"({self.train_renders}); one epoch shows each once")

    @property
    def epochs(self) -> int:
        return self.exposures // self.train_renders

    @classmethod
    def quick(cls) -> "EndToEndPlan":
        return cls(k=32, exposures=6, n_keys=8, batch_size=16, warmup=1, distill_epochs=1)


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def write_world(folder: Path, plan: EndToEndPlan, render: RenderConfig, world: WorldConfig = WorldConfig()) -> Path:
    """Write the training shards (PNG + name index) once; returns ``folder`` (``sizes.json`` marks it done)."""
    train = folder / "train"
    if (train / "sizes.json").is_file():
        return folder
    identities = identity_order(world, plan.identity_seed)[:plan.k]
    renders = plan.train_renders + 1
    rng = np.random.default_rng(plan.seed)
    with ShardWriter(train, samples_per_shard=plan.batch_size) as writer:
        for render_index in range(plan.train_renders):
            for index in rng.permutation(plan.k):
                nuisance = nuisances(world, plan.render_seed, int(index), renders)[render_index]
                scene = identities[index].scene(nuisance)
                writer.write(f"r{render_index}-{index:06d}",
                             {"png": _png(render_scene(scene, world, render).image), "txt": str(int(index))})
    atomic_write_json(folder / "world.json", {"plan": asdict(plan), "render": asdict(render),
                                              "identities": plan.k, "samples": plan.k * plan.train_renders})
    return folder


@torch.no_grad()
def score(model_dir: Path, plan: EndToEndPlan, render: RenderConfig, world: WorldConfig = WorldConfig(),
          batch_size: int = 256) -> Dict[str, Any]:
    """A trained model's K-way R@1 and bits stored on held-out renders (and R@1 on training render 0), at a logit
    scale fitted on training renders, against its own name table: the slot probe's metric."""
    model, _, preprocess = memclip.create_model_and_transforms(str(model_dir))
    model.eval()
    identities = identity_order(world, plan.identity_seed)[:plan.k]
    renders = plan.train_renders + 1

    def embed(render_index: int) -> torch.Tensor:
        scenes = [identity.scene(nuisances(world, plan.render_seed, i, renders)[render_index])
                  for i, identity in enumerate(identities)]
        out = []
        for start in range(0, len(scenes), batch_size):
            images = torch.stack([preprocess(Image.fromarray(render_scene(s, world, render).image))
                                  for s in scenes[start:start + batch_size]])
            out.append(F.normalize(model.encode_image(images), dim=-1))
        return torch.cat(out)

    names = model.name_table
    targets = torch.arange(plan.k)
    train, heldout = embed(0), embed(plan.train_renders)
    scale = calibrate_scale(train[:2048], targets[:2048], names)
    held, seen = score_queries(heldout, targets, names, scale), score_queries(train, targets, names, scale)
    return {"scale": scale, "heldout_r1": float(held["hit"].float().mean() * 100),
            "heldout_bits": float(held["bits"].sum()), "train_r1": float(seen["hit"].float().mean() * 100),
            "capacity_bits": plan.k * math.log2(plan.k), "heldout_hit": held["hit"].int().tolist(),
            "heldout_bits_per_identity": [round(float(b), 4) for b in held["bits"]]}


class EndToEndPipeline:
    """World, distillation, fine-tuning and scoring of stage B under ``out`` (each step skipped once done)."""

    def __init__(self, out: Path, plan: EndToEndPlan, teacher: str, log: Callable[[str], None] = print,
                 progress: bool = False) -> None:
        self.out = Path(out)
        self.plan = plan
        self.teacher = str(teacher)
        self.log = log
        self.progress = progress
        self.teacher_model = plan.teacher_model
        vision = memclip.get_model_config(plan.teacher_model)["vision_cfg"]
        size = vision["image_size"]
        self.render = RenderConfig(image_size=size if isinstance(size, int) else size[0])
        depth = vision["layers"]
        self.layers = tuple(plan.layers) or (depth - 1,)

    @property
    def world_dir(self) -> Path:
        return self.out / "world"

    def run_dir(self, name: str) -> Path:
        return self.out / "logs" / name

    def _train_data(self) -> str:
        shards = len(json.loads((self.world_dir / "train" / "sizes.json").read_text()))
        return str(self.world_dir / "train" / ("{000000..%06d}.tar" % (shards - 1)))

    def _memory_flags(self) -> List[str]:
        """The memory of ``memory_model`` (every knob, so a teacher without memory gets it), in ``layers`` with
        ``n_keys``, and the value lr."""
        p = self.plan
        knobs = dict(memclip.get_model_config(p.memory_model)["memory"])
        knobs.update(layers=",".join(str(i) for i in self.layers), n_keys=p.n_keys, knn=min(knobs["knn"], p.n_keys))
        flags = []
        for name in ("layers", "n_keys", "heads", "knn", "k_dim", "v_dim", "mode"):
            flags += ["--memory", f"{name}={knobs[name]}"]
        return flags + ["--value-lr", str(p.value_lr)]

    def _stage(self, name: str, flags: List[str], epochs: int, lr: float, batch_size: int) -> Stage:
        run = self.run_dir(name)
        p = self.plan
        args = ["--train-data", self._train_data(), "--shuffle-buffer", "1", "--precision", p.precision, "--workers",
                str(p.workers),
                "--seed", str(p.seed), "--logs", str(run.parent), "--name", run.name, "--log-every-n-steps", "10",
                "--save-every-n-steps", "50", "--epochs", str(epochs), "--lr", str(lr), "--batch-size",
                str(batch_size), "--warmup", str(p.warmup), "--wd", str(p.wd), *flags,
                *([] if self.progress else ["--no-progress"])]
        return Stage(name, "memclip_train.main", args, run / "final" / "memclip_config.json", [run], run_dir=run)

    def stages(self) -> Dict[str, Stage]:
        """The training stages, by name (the world must exist: their shard list is read from it)."""
        p = self.plan
        names = ["--text-tower", "names", "--text-names", str(p.k), "--text-names-seed", str(p.seed),
                 "--caption-key", "txt"]
        memory_model = self.teacher_model
        distill = self._stage("distill", ["--model", memory_model, *self._memory_flags(), "--distill",
                                          "--pretrained", self.teacher], p.distill_epochs, p.distill_lr, 64)
        student = self._stage(STUDENT, ["--model", memory_model, *self._memory_flags(), "--pretrained",
                                        str(self.run_dir("distill") / "final"), "--trainable",
                                        "memory,visual,logit_scale", *names], p.epochs, p.lr, p.batch_size)
        control = self._stage(CONTROL, ["--model", self.teacher_model, "--pretrained", self.teacher, "--trainable",
                                        "visual,logit_scale", *names], p.epochs, p.lr, p.batch_size)
        return {"distill": distill, STUDENT: student, CONTROL: control}

    def run(self) -> Dict[str, Any]:
        """Everything not done yet; returns the results (also written to ``e2e_results.json``)."""
        start = time.time()
        write_world(self.world_dir, self.plan, self.render)
        stages = self.stages()
        timings = run_stages(list(stages.values()), self.out / "timings.json", log=self.log)
        results: Dict[str, Any] = {"plan": {**asdict(self.plan), "layers": list(self.layers)}, "teacher": self.teacher,
                                   "commands": {name: stage.command() for name, stage in stages.items()},
                                   "seconds": timings, "models": {}}
        for name in (STUDENT, CONTROL):
            path = self.out / f"score-{name}.json"
            if not path.is_file():
                atomic_write_json(path, score(self.run_dir(name) / "final", self.plan, self.render))
            results["models"][name] = json.loads(path.read_text())
        results["wall_seconds_this_call"] = round(time.time() - start, 1)
        atomic_write_json(self.out / "e2e_results.json", results)
        return results


def table(results: Dict[str, Any], contrast: Optional[Dict[str, Any]] = None) -> str:
    """The markdown table of stage B."""
    plan = results["plan"]
    lines = [f"K = {plan['k']:,} identities, {plan['exposures']} exposures per identity, seed {plan['seed']}; memory "
             f"student: {plan['n_keys'] ** 2:,} slots in block(s) {', '.join(str(i) for i in plan['layers'])}", "",
             "| model | held-out R@1 (%) | held-out bits (of K log2 K) | training-render R@1 (%) | training seconds |",
             "|---|---:|---:|---:|---:|"]
    for name, scored in results["models"].items():
        seconds = results["seconds"].get(name)
        lines.append(f"| {name} | {scored['heldout_r1']:.1f} | {scored['heldout_bits']:,.0f} of "
                     f"{scored['capacity_bits']:,.0f} | {scored['train_r1']:.1f} | "
                     f"{'-' if seconds is None else f'{seconds:,.0f}'} |")
    if contrast:
        lines += ["", f"memory student - control, held-out bits: {contrast['value']:+,.0f} [{contrast['low']:+,.0f}, "
                      f"{contrast['high']:+,.0f}] (one seed: 95% bootstrap over identities)"]
    return "\n".join(lines)
