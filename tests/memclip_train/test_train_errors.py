"""Bad input to the trainer: one line naming the input and exit code 2 (the traceback only with --debug), and a
start that fails leaves no run folder behind, so the corrected command runs under the same --name."""
import datetime
import io
import tarfile

import pytest
import torch
from train_helpers import deadline, train_args

from memclip_train.main import main


@pytest.fixture(scope="module")
def micro_checkpoint(micro_world, tmp_path_factory):
    logs = tmp_path_factory.mktemp("ckpt")
    assert main(train_args(micro_world, logs, "one", "--epochs", "1")) == 0
    return logs / "one" / "checkpoints" / "epoch_1.pt"


def exit_code(args):
    """main's exit code, whether it returns it or exits while parsing the flags."""
    try:
        return main(args)
    except SystemExit as exit_info:
        return exit_info.code


def error_lines(capsys):
    err = capsys.readouterr().err
    return [line for line in err.splitlines() if "error:" in line], err


def bad_input(case, micro_world, micro_checkpoint, tmp_path):
    """Extra flags of one bad-input case, and the text its error line must contain."""
    if case == "unknown model":
        return ["--model", "ViT-Nope-9"], "ViT-Nope-9"
    if case == "unknown pretrained tag":
        return ["--pretrained", "no-such-tag"], "no-such-tag"
    if case == "corrupt resume file":
        bad = tmp_path / "corrupt.pt"
        bad.write_bytes(micro_checkpoint.read_bytes()[:5000])
        return ["--resume", str(bad)], str(bad)
    if case == "refused resume file":
        refused = tmp_path / "pickled.pt"
        torch.save({"when": datetime.date(2024, 1, 1)}, refused)
        return ["--resume", str(refused)], str(refused)
    if case == "val data not a tar":
        text = tmp_path / "val.tar"
        text.write_text("not a tar archive\n")
        return ["--val-data", str(text)], str(text)
    assert case == "resume with another model"
    return ["--model", "Test-Micro-mem", "--resume", str(micro_checkpoint)], "Test-Micro"


CASES = ["unknown model", "unknown pretrained tag", "corrupt resume file", "refused resume file",
         "val data not a tar", "resume with another model"]


@pytest.mark.parametrize("case", CASES)
def test_user_errors_are_one_line_and_exit_2(case, micro_world, micro_checkpoint, tmp_path, capsys):
    extra, named = bad_input(case, micro_world, micro_checkpoint, tmp_path)
    code = exit_code(train_args(micro_world, tmp_path, "bad", *extra))
    lines, err = error_lines(capsys)
    assert code == 2 and len(lines) == 1 and named in lines[0], err[-3000:]
    assert "Traceback" not in err
    assert not (tmp_path / "bad").exists(), "a failed start must not leave a run folder"


def test_debug_shows_the_traceback(micro_world, tmp_path, capsys):
    assert main(train_args(micro_world, tmp_path, "bad", "--pretrained", "no-such-tag", "--debug")) == 2
    lines, err = error_lines(capsys)
    assert "Traceback" in err and len(lines) == 1 and "no-such-tag" in lines[0]


@pytest.mark.parametrize("extra,named", [
    (["--memory", "knn=999"], "knn"),
    (["--memory", "colour=red"], "colour"),
    (["--memory", "layers=1,7"], "layers"),
])
def test_bad_memory_settings_are_refused_before_the_run_folder_exists(micro_world, tmp_path, capsys, extra, named):
    args = train_args(micro_world, tmp_path, "mem", *extra)
    args[args.index("--model") + 1] = "Test-Micro-mem"
    assert exit_code(args) == 2
    lines, err = error_lines(capsys)
    assert len(lines) == 1 and named in lines[0] and "usage" not in err
    assert not (tmp_path / "mem").exists()


@pytest.mark.slow
def test_a_failed_start_does_not_block_the_corrected_rerun(micro_world, tmp_path, capsys):
    args = train_args(micro_world, tmp_path, "retry", "--epochs", "1")
    missing = list(args)
    missing[missing.index("--train-data") + 1] = str(tmp_path / "nowhere" / "{000000..000001}.tar")
    assert main(missing) == 2
    assert "nowhere" in error_lines(capsys)[0][0]
    assert not (tmp_path / "retry").exists()
    assert main(args) == 0


def test_bad_text_in_the_validation_data_loses_nothing(micro_world, tmp_path):
    val = tmp_path / "val.tar"
    with tarfile.open(micro_world / "val" / "000000.tar") as source, tarfile.open(val, "w") as target:
        members = [m for m in source.getmembers() if m.isfile()]
        spoiled = sorted({m.name.split(".")[0] for m in members})[7]
        for member in members:
            data = source.extractfile(member).read()
            if member.name == f"{spoiled}.txt":
                data = b"a red \xff\xfe circle"
                member.size = len(data)
            target.addfile(member, io.BytesIO(data))
    args = train_args(micro_world, tmp_path, "badtext", "--epochs", "1", "--val-data", str(val),
                      "--val-num-samples", "32")
    assert main(args) == 0
    assert (tmp_path / "badtext" / "checkpoints" / "epoch_1.pt").exists()


def test_unreadable_training_shards_stop_with_an_error_naming_them(micro_world, tmp_path, capsys):
    shard = tmp_path / "text" / "000000.tar"
    shard.parent.mkdir()
    shard.write_text("a text file, not a tar archive\n")
    args = train_args(micro_world, tmp_path, "unreadable", "--workers", "1", "--train-num-samples", "32")
    args[args.index("--train-data") + 1] = str(shard)
    with deadline(120, "training on an unreadable shard"):
        code = main(args)
    lines, err = error_lines(capsys)
    assert code == 2 and len(lines) == 1 and str(shard) in lines[0] and "corrupt tar data" in lines[0], err[-3000:]


def test_pretrained_weights_of_another_architecture_are_refused(micro_world, tmp_path, capsys):
    """`--model Test-Micro --pretrained <a ViT-Tiny-8 folder>` used to train the Tiny model under the micro's name."""
    import memclip

    folder = memclip.save_pretrained(memclip.create_model("ViT-Tiny-8"), tmp_path / "tiny")
    code = exit_code(train_args(micro_world, tmp_path, "bad", "--pretrained", str(folder)))
    lines, err = error_lines(capsys)
    assert code == 2 and len(lines) == 1 and "'Test-Micro'" in lines[0] and str(folder) in lines[0], err[-3000:]
    assert not (tmp_path / "bad").exists()


def test_a_long_caption_key_that_no_sample_holds_is_refused_before_training(micro_world, tmp_path, capsys):
    args = train_args(micro_world, tmp_path, "typo", "--long-short-alpha", "0.8", "--long-caption-key", "json.lnog")
    assert exit_code(args) == 2
    lines, err = error_lines(capsys)
    assert len(lines) == 1 and "--long-caption-key json.lnog: none of the first 16 samples" in lines[0], err[-2000:]
    assert "json.long" in lines[0] and "txt" in lines[0]
    assert not (tmp_path / "typo").exists()


def test_stage_2_on_a_table_without_a_long_caption_column_is_refused(tmp_path, capsys):
    table = tmp_path / "train.csv"
    table.write_text("filepath\ttitle\n0.jpg\ta red star\n")
    args = ["--model", "Test-Micro", "--train-data", str(table), "--long-short-alpha", "0.8", "--precision", "fp32",
            "--logs", str(tmp_path), "--name", "table", "--workers", "0"]
    assert exit_code(args) == 2
    lines, _ = error_lines(capsys)
    assert len(lines) == 1 and "--csv-long-caption-key" in lines[0]


def test_validation_data_without_a_usable_sample_is_refused_before_training(micro_world, tmp_path, capsys, caplog):
    val = tmp_path / "val.tar"
    with tarfile.open(micro_world / "val" / "000000.tar") as source, tarfile.open(val, "w") as target:
        for member in source.getmembers():
            data = source.extractfile(member).read()
            if member.name.endswith(".jpg"):
                data = b"not a jpeg"
                member.size = len(data)
            target.addfile(member, io.BytesIO(data))
    args = train_args(micro_world, tmp_path, "badval", "--epochs", "1", "--val-data", str(val),
                      "--val-num-samples", "32")
    assert main(args) == 2
    lines, err = error_lines(capsys)
    assert len(lines) == 1 and str(val) in lines[0] and "undecodable image: 32" in lines[0], err[-2000:]
    assert "epoch 0 step" not in caplog.text, "no training before the validation data is known to be usable"
    assert not (tmp_path / "badval").exists()


def test_a_failure_after_training_began_keeps_the_log_and_the_epoch(micro_world, tmp_path, monkeypatch, capsys):
    from memclip_train.tasks.contrastive import ContrastiveTask

    def broken(self, loader, autocast):
        raise ValueError("validation broke")

    monkeypatch.setattr(ContrastiveTask, "validate", broken)
    args = train_args(micro_world, tmp_path, "kept", "--epochs", "2", "--val-data",
                      str(micro_world / "val" / "000000.tar"))
    with pytest.raises(ValueError, match="validation broke"):  # a bug, not a user error: it keeps its traceback
        main(args)
    run = tmp_path / "kept"
    assert (run / "out.log").read_text().count("step 6/6") == 1
    assert (run / "checkpoints" / "epoch_1.pt").exists(), "the trained epoch is kept"
