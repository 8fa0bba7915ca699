"""`python -m memclip_train.plot`: the curves of one run or several, as a PNG beside them."""
import pytest
from PIL import Image
from train_helpers import train_args

from memclip_train.main import main as train_main
from memclip_train.plot import main as plot_main


@pytest.mark.slow
def test_plot_one_run_and_a_comparison(micro_world, tmp_path, capsys):
    val = ["--val-data", str(micro_world / "val" / "000000.tar")]
    assert train_main(train_args(micro_world, tmp_path, "memory", *val, "--model", "Test-Micro-mem")) == 0
    assert train_main(train_args(micro_world, tmp_path, "plain", "--epochs", "1")) == 0
    capsys.readouterr()
    assert plot_main([str(tmp_path / "memory")]) == 0
    printed = capsys.readouterr().out
    figure = tmp_path / "memory" / "curves.png"
    assert f"wrote {figure}" in printed
    for panel in ("training loss", "learning rate", "validation retrieval", "memory usage (validation)"):
        assert panel in printed
    assert "distillation" not in printed and "zero-shot" not in printed  # only what the run logged
    with Image.open(figure) as image:
        assert image.format == "PNG" and image.width > 1000
    assert plot_main([str(tmp_path / "memory"), str(tmp_path / "plain")]) == 0
    assert (tmp_path / "curves-memory-vs-plain.png").is_file()
    assert "memory usage" in capsys.readouterr().out


def test_a_folder_without_metrics_is_a_one_line_error(tmp_path, capsys):
    assert plot_main([str(tmp_path)]) == 2
    assert "no metrics.jsonl records" in capsys.readouterr().err
