"""`python -m memclip_train.plot RUN [RUN ...]`: the curves of one or more run folders in one PNG, from their
metrics.jsonl.

    python -m memclip_train.plot logs/stage1                  # -> logs/stage1/curves.png
    python -m memclip_train.plot logs/stage1 logs/stage1-k64  # -> logs/curves-stage1-vs-stage1-k64.png (overlaid)

Panels, each where the runs logged it: the training loss and learning rate per step; validation retrieval R@1
(%), the distillation cosine and zero-shot top-1 per validation; and the memory's usage (the fraction of slots
read during validation, per memory block). Each run keeps one colour across the panels. The demo's training-curve
figure (:mod:`memclip_train.report.figures`) is drawn from the same records and series.
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .error_reporting import UserError, add_debug_flag, report_user_errors  # noqa: E402
from .report.figures import COLOURS  # noqa: E402
from .report.run_metrics import read_metrics, series  # noqa: E402

LINE_STYLES = ["-", "--", ":", "-."]
PROG = "python -m memclip_train.plot"
_MEMORY_READ = re.compile(r"^memory(\d+)_fraction_read$")


@dataclass(frozen=True)
class Panel:
    """One axis of the figure: which (kind, key) series it draws, found in a run's records."""

    title: str
    ylabel: str
    keys: Callable[[Sequence[dict]], List[Tuple[str, str]]]


def _keys_where(kind: str, accept: Callable[[str], bool]) -> Callable[[Sequence[dict]], List[Tuple[str, str]]]:
    def keys(records: Sequence[dict]) -> List[Tuple[str, str]]:
        found = {key for r in records if r.get("kind") == kind for key in r if accept(key)}
        return [(kind, key) for key in sorted(found)]

    return keys


PANELS = (
    Panel("training loss", "loss", _keys_where("train", lambda k: k == "loss")),
    Panel("learning rate", "lr", _keys_where("train", lambda k: k == "lr")),
    Panel("validation retrieval", "R@1 (%)",
          _keys_where("val", lambda k: k.startswith("val_") and k.endswith("R@1"))),
    Panel("distillation", "cosine to the teacher", _keys_where("val", lambda k: k == "val_distill_cosine")),
    Panel("zero-shot", "top-1", _keys_where("zeroshot", lambda k: k.endswith("-top1"))),
    Panel("memory usage (validation)", "fraction of slots read",
          _keys_where("val", lambda k: _MEMORY_READ.match(k) is not None)),
)


def _label(kind: str, key: str) -> str:
    match = _MEMORY_READ.match(key)
    if match:
        return f"block {match.group(1)}"
    return key[len("val_"):] if key.startswith("val_") else key


def plot_runs(runs: Sequence[Path], out: Path) -> Tuple[Path, List[str]]:
    """Draw the panels the runs logged into ``out`` (PNG). Returns the file and the titles of the panels drawn.

    Raises:
        UserError: a run folder without metrics.jsonl records.
    """
    logged: Dict[str, List[dict]] = {}
    for run in runs:
        records = read_metrics(run)
        if not records:
            raise UserError(f"{run}: no metrics.jsonl records (is it a run folder of python -m memclip_train.main?)")
        logged[Path(run).name if Path(run).name not in logged else str(run)] = records
    panels = [(panel, {name: panel.keys(records) for name, records in logged.items()}) for panel in PANELS]
    panels = [(panel, found) for panel, found in panels if any(found.values())]
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.3 * rows), squeeze=False)
    for axis in axes.flat[len(panels):]:
        axis.set_visible(False)
    single = len(logged) == 1  # one run: a colour per series; several: a colour per run, a line style per series
    for axis, (panel, found) in zip(axes.flat, panels):
        for index, (name, records) in enumerate(logged.items()):
            for style, (kind, key) in enumerate(found[name]):
                steps, values = series(records, kind, key)
                if single:
                    label, colour, line = _label(kind, key), COLOURS[style % len(COLOURS)], "-"
                else:
                    label = name if len(found[name]) == 1 else f"{name}: {_label(kind, key)}"
                    colour, line = COLOURS[index % len(COLOURS)], LINE_STYLES[style % len(LINE_STYLES)]
                axis.plot(steps, values, line, color=colour, marker=None if kind == "train" else "o", markersize=3,
                          label=label)
        axis.set_title(panel.title, fontsize=10)
        axis.set_xlabel("step")
        axis.set_ylabel(panel.ylabel)
        if panel.title == "learning rate":
            axis.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        if panel.ylabel == "fraction of slots read":
            axis.set_ylim(0, 1.05)
        if len(logged) > 1 or any(len(keys) > 1 for keys in found.values()):
            axis.legend(fontsize=7)
    figure.suptitle(" vs ".join(logged), fontsize=11)
    figure.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out, [panel.title for panel, _ in panels]


def default_output(runs: Sequence[Path]) -> Path:
    """``RUN/curves.png`` for one run; ``<first run's parent>/curves-A-vs-B.png`` for several."""
    if len(runs) == 1:
        return Path(runs[0]) / "curves.png"
    names = "-vs-".join(Path(run).name for run in runs)
    return Path(runs[0]).parent / f"curves-{names[:150]}.png"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run folders (--logs/--name)")
    parser.add_argument("--out", type=Path, help="the PNG (default: beside the run, see above)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)

    def draw() -> None:
        out, panels = plot_runs(args.runs, args.out or default_output(args.runs))
        print(f"wrote {out} ({', '.join(panels)})")

    return report_user_errors(PROG, args.debug, draw)


if __name__ == "__main__":
    sys.exit(main())
