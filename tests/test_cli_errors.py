"""Every program reports a user error as one line with exit code 2, and prints the traceback with -v/--debug."""
import pytest

from memclip_train.cli import ProgramFailed, report_user_errors
from memclip_train.convert.__main__ import main as convert_main
from memclip_train.eval.__main__ import main as eval_main
from memclip_train.main import main as train_main
from memclip_train.sweep import main as sweep_main
from memclip_train.synth.__main__ import main as synth_main


def bad_runs(tmp_path):
    """(program, argv, text the error line names) for one bad input per program."""
    (tmp_path / "world").mkdir()
    (tmp_path / "world" / "mine.txt").write_text("not a generated world")
    table = tmp_path / "broken.csv"
    table.write_text("filepath,caption\na.jpg,x\nb.jpg,x,y\n")
    return {
        "main": (train_main, ["--model", "Test-Micro", "--train-data", str(tmp_path / "none" / "0.tar"), "--logs",
                              str(tmp_path / "logs"), "--precision", "fp32"], str(tmp_path / "none" / "0.tar")),
        "eval": (eval_main, ["retrieval", "--model", "Test-Micro", "--dataset", "urban1k", "--data-root",
                             str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")], str(tmp_path / "nowhere")),
        "convert": (convert_main, ["csv", "--csv", str(table), "--out", str(tmp_path / "shards")], str(table)),
        "synth": (synth_main, ["--out", str(tmp_path / "world"), "--overwrite"], str(tmp_path / "world")),
        "sweep": (sweep_main, ["--out", str(tmp_path / "sweep"), "--teacher", str(tmp_path / "t")],
                  str(tmp_path / "t")),
    }


@pytest.mark.parametrize("program", ["main", "eval", "convert", "synth", "sweep"])
def test_every_program_reports_a_user_error_in_one_line(program, tmp_path, capsys, micro_configs):
    main, argv, named = bad_runs(tmp_path)[program]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in err, err[-2000:]
    assert main(argv + ["-v"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and named in err


def test_the_handler_keeps_tracebacks_of_bugs_and_the_exit_code_of_failed_stages(capsys):
    def bug():
        return {}["missing"]

    with pytest.raises(KeyError):
        report_user_errors("prog", False, bug)

    def stage():
        raise ProgramFailed("memclip_train.main failed (exit code 3); see its output above", 3)

    assert report_user_errors("prog", False, stage) == 3
    assert capsys.readouterr().err == "prog: error: memclip_train.main failed (exit code 3); see its output above\n"
    assert report_user_errors("prog", False, lambda: None) == 0
