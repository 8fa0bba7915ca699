"""Every program reports a user error as one line with exit code 2, and prints the traceback with -v/--debug; any
other exception (a ValueError from torch included) is a bug and keeps its traceback."""
import subprocess
import sys

import pytest

import memclip

from memclip_train.error_reporting import ProgramFailed, UserError, report_user_errors
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


def test_only_the_user_error_class_gets_one_line(capsys):
    """memclip.InputError (the programs' UserError) and missing files are user errors; a bare ValueError is a bug."""
    assert UserError is memclip.InputError and issubclass(UserError, ValueError)

    def user_error():
        raise UserError("--foo 3: must be even")

    assert report_user_errors("prog", False, user_error) == 2
    assert capsys.readouterr().err == "prog: error: --foo 3: must be even\n"

    def bug():
        raise ValueError("operands could not be broadcast together")

    with pytest.raises(ValueError, match="broadcast"):
        report_user_errors("prog", False, bug)


@pytest.mark.slow
def test_a_value_error_inside_torch_prints_its_traceback(tmp_path):
    """A ValueError raised inside torch (here torch.manual_seed, which the trainer calls when the run starts) is not
    a user error: the program prints the traceback and exits with Python's code 1, not argparse's 2."""
    probe = ("import sys, torch\n"
             "def broken(*args, **kwargs):\n"
             "    raise ValueError('a bug inside torch')\n"
             "torch.manual_seed = broken\n"
             "from memclip_train.main import main\n"
             f"sys.exit(main(['--model', 'ViT-Tiny-8', '--train-data', {str(tmp_path / 'none.tar')!r}, '--logs', "
             f"{str(tmp_path / 'logs')!r}, '--precision', 'fp32', '--device', 'cpu']))\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode not in (0, 2), result.stderr[-2000:]
    assert "Traceback" in result.stderr and "ValueError: a bug inside torch" in result.stderr
