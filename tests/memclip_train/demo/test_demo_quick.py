"""`python -m memclip_train.demo --quick` end to end: the report, every figure, and numbers that match results.json."""
import json
import re

import pytest

from memclip_train.demo.__main__ import main
from memclip_train.demo.report import COMPETENCE_COLUMNS, RETRIEVAL_COLUMNS


@pytest.mark.slow
def test_quick_demo_writes_a_consistent_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--out", str(out), "--quick", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for command in ("python -m memclip_train.synth", "python -m memclip_train.main", "--distill",
                    "--long-short-alpha 0.8", "python -m memclip_train.eval synth"):
        assert command in printed, f"the demo should print the command {command!r}"

    report = (out / "REPORT.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert len(images) >= 8
    for image in images:
        assert (out / image).is_file() and (out / image).stat().st_size > 1000, image
    for figure in ("training_curves.png", "competence.png", "recall.png", "pairs.png", "memory_usage.png"):
        assert f"figures/{figure}" in images

    results = json.loads((out / "results.json").read_text())
    for columns in (COMPETENCE_COLUMNS, RETRIEVAL_COLUMNS):
        headers = [h for h, _, _ in columns]
        header_line = "| " + " | ".join(["model"] + headers) + " |"
        table = report.split(header_line)[1].split("\n\n")[0]
        rows = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")]
                                                  for line in table.splitlines() if line.startswith("| "))}
        assert set(results["models"]) == set(rows)
        for label, data in results["models"].items():
            for header, cell in zip(headers, rows[label]):
                assert cell == f"{data['table'][header]:.1f}", (label, header)
    assert "parallel student, fine-tuned" in results["models"] and "--memory mode=parallel" in printed
    assert "--probe-world" in printed and "a linear probe on its patch features reaches" in report
    for stage in ("synthetic world", "probe world", "student-distill", "student-finetune", "control-finetune",
                  "parallel-finetune", "evaluation"):
        assert stage in results["timings_seconds"] and f"| {stage} |" in report

    # A second run reuses every stage.
    assert main(["--out", str(out), "--quick", "--no-progress"]) == 0
    again = capsys.readouterr().out
    assert again.count("[skip]") == 7 and "python -m memclip_train.main" not in again

    # Another seed, or the full demo, into the same folder: refused before any work, naming the difference.
    report_bytes = (out / "REPORT.md").read_bytes()
    for flags, named in ((["--quick", "--seed", "1"], "other settings: --seed 0 (now 1)"),
                         ([], "stage 'synthetic world' in")):
        assert main(["--out", str(out), "--no-progress", *flags]) == 2
        captured = capsys.readouterr()
        lines = [line for line in captured.err.splitlines() if "error:" in line]
        assert len(lines) == 1 and named in lines[0] and "--force" in lines[0], captured.err[-2000:]
        assert "python -m memclip_train" not in captured.out
    assert (out / "REPORT.md").read_bytes() == report_bytes, "the toy report is not replaced by a refused run"
