"""End-to-end runs on the micro world: log layout, checkpoints, distillation, refusals."""
import json
import math

import pytest
import torch
from train_helpers import train_args

import memclip
from memclip.parallel import memory_gates
from memclip_train.checkpoints import load_checkpoint
from memclip_train.main import main


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_contrastive_run_writes_open_clip_layout(micro_world, tmp_path):
    args = train_args(micro_world, tmp_path, "clip", "--val-data", str(micro_world / "val" / "000000.tar"))
    assert main(args) == 0
    run = tmp_path / "clip"
    for name in ("out.log", "params.txt", "metrics.jsonl", "checkpoints/epoch_1.pt", "checkpoints/epoch_2.pt",
                 "checkpoints/epoch_latest.pt", "final/memclip_config.json"):
        assert (run / name).exists(), name
    assert "optim.lr: 0.001" in (run / "params.txt").read_text()
    records = read_metrics(run)
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    assert [r["epoch"] for r in val] == [1, 2] and "val_t2i_R@1" in val[0]
    assert train[-1]["step"] == 12 and train[-1]["loss"] < train[0]["loss"]
    checkpoint = load_checkpoint(run / "checkpoints" / "epoch_2.pt")
    assert {"epoch", "name", "state_dict", "optimizer", "step", "rng", "args", "memclip_config"} <= set(checkpoint)
    assert checkpoint["epoch"] == 2 and checkpoint["step"] == 12
    reloaded = memclip.create_model("Test-Micro", pretrained=str(run / "checkpoints" / "epoch_2.pt"))
    final = memclip.create_model(str(run / "final"))
    for key, value in reloaded.state_dict().items():
        assert torch.equal(value, final.state_dict()[key]), key


def test_existing_run_folder_is_refused(micro_world, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    assert main(train_args(micro_world, tmp_path, "taken")) == 2
    assert "pass --resume latest" in capsys.readouterr().err
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine", "a refused run leaves an existing folder alone"


def test_bad_flags_exit_with_a_message(micro_world, tmp_path, capsys):
    for extra, message in [(["--distill", "--long-short-alpha", "0.8"], "cannot be combined"),
                           (["--long-short-alpha", "1.5"], "--long-short-alpha 1.5: must be a finite number in [0, 1]"),
                           (["--distill"], "--distill needs teacher weights"),
                           (["--distill-text"], "add --text-tower rope"),
                           (["--trainable", "memory,brain"], "--trainable memory,brain")]:
        with pytest.raises(SystemExit):
            main(train_args(micro_world, tmp_path, "bad", *extra))
        assert message in capsys.readouterr().err


def test_missing_sample_count_is_a_clear_error(tmp_path, micro_world, capsys):
    shard = tmp_path / "loose" / "000000.tar"
    shard.parent.mkdir()
    shard.write_bytes((micro_world / "train" / "000000.tar").read_bytes())
    args = train_args(micro_world, tmp_path, "nosizes")
    args[args.index("--train-data") + 1] = str(shard)
    assert main(args) == 2
    assert "pass --train-num-samples N" in capsys.readouterr().err


@pytest.fixture(scope="module")
def teacher_checkpoint(micro_world, tmp_path_factory):
    logs = tmp_path_factory.mktemp("teacher")
    assert main(train_args(micro_world, logs, "teacher", "--epochs", "1")) == 0
    return logs / "teacher" / "checkpoints" / "epoch_1.pt"


def test_distillation_trains_only_memory_and_lowers_the_loss(micro_world, teacher_checkpoint, tmp_path):
    args = train_args(micro_world, tmp_path, "distill", "--model", "Test-Micro-mem", "--distill", "--pretrained",
                      str(teacher_checkpoint), "--epochs", "3", "--lr", "5e-3", "--distill-layer-weight", "0.5",
                      "--val-data", str(micro_world / "val" / "000000.tar"), "--log-every-n-steps", "1")
    args[args.index("--model") + 1] = "Test-Micro-mem"
    assert main(args) == 0
    run = tmp_path / "distill"
    records = read_metrics(run)
    train = [r for r in records if r["kind"] == "train"]
    assert train[-1]["loss_distill_cosine"] < train[0]["loss_distill_cosine"]
    assert "loss_layer1_cosine" in train[0] and "loss_layer2_cosine" in train[0]
    val = [r for r in records if r["kind"] == "val"][-1]
    assert 0 < val["val_distill_cosine"] <= 1 and "val_t2i_R@1" in val
    for index in (1, 2):  # the validation pass reads the memory, so usage is real
        assert 0 < val[f"memory{index}_fraction_read"] <= 1
        assert 0 <= val[f"memory{index}_kl_from_uniform"] <= math.log(8 * 8)
    teacher = load_checkpoint(teacher_checkpoint)["state_dict"]
    student = memclip.create_model(str(run / "final")).state_dict()
    memory_keys = [k for k in student if k not in teacher]
    assert memory_keys and all(".mlp." in k for k in memory_keys)
    for key, value in student.items():
        if key in teacher:
            assert torch.equal(value, teacher[key]), f"{key} changed during distillation"


def test_distillation_reads_image_only_shards(image_only_shards, teacher_checkpoint, micro_world, tmp_path):
    args = train_args(micro_world, tmp_path, "imgonly", "--distill", "--pretrained", str(teacher_checkpoint),
                      "--epochs", "1", "--distill-loss", "mse", "--value-lr", "0.05")
    args[args.index("--model") + 1] = "Test-Micro-mem"
    args[args.index("--train-data") + 1] = str(image_only_shards / "{000000..000001}.tar")
    assert main(args) == 0
    train = [r for r in read_metrics(tmp_path / "imgonly") if r["kind"] == "train"]
    assert "loss_distill_mse" in train[0]
    optimizer = load_checkpoint(tmp_path / "imgonly" / "checkpoints" / "epoch_1.pt")["optimizer"]
    values = [g for g in optimizer["param_groups"] if g["name"] == "values"][0]
    assert values["lr"] == 0.05 and values["fixed_lr"]


def test_parallel_distillation_from_its_own_teacher_is_refused(micro_world, teacher_checkpoint, tmp_path, capsys):
    # The zero gate makes the student compute exactly the teacher: every distillation term and its gradient are 0.
    for extra in ([], ["--distill-layer-weight", "1"]):
        args = train_args(micro_world, tmp_path, f"parallel{len(extra)}", "--distill", "--pretrained",
                          str(teacher_checkpoint), "--epochs", "1", "--memory", "mode=parallel", *extra)
        args[args.index("--model") + 1] = "Test-Micro-mem"
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "trains nothing" in err and "drop --distill" in err
        assert not (tmp_path / f"parallel{len(extra)}" / "final").exists()


def test_parallel_student_fine_tunes_from_the_teacher(micro_world, teacher_checkpoint, tmp_path):
    args = train_args(micro_world, tmp_path, "parallel-ft", "--pretrained", str(teacher_checkpoint), "--epochs", "1",
                      "--memory", "mode=parallel", "--long-short-alpha", "0.8", "--caption-key", "txt",
                      "--long-caption-key", "json.long")
    args[args.index("--model") + 1] = "Test-Micro-mem"
    assert main(args) == 0
    model = memclip.create_model(str(tmp_path / "parallel-ft" / "final"))
    gates = memory_gates(model)
    assert len(gates) == 2 and all(bool(g.ne(0).any()) for g in gates), "the gates open during fine-tuning"


def test_stage_2_counts_the_samples_whose_long_caption_is_missing_per_epoch(micro_world, tmp_path, caplog):
    import io
    import tarfile
    folder = tmp_path / "data"
    folder.mkdir()
    lacking = set()
    with tarfile.open(micro_world / "train" / "000000.tar") as source, \
            tarfile.open(folder / "000000.tar", "w") as target:
        for member in source.getmembers():
            data = source.extractfile(member).read()
            key = member.name.split(".")[0]
            if member.name.endswith(".json") and int(key) % 4 == 0:
                record = json.loads(data)
                del record["long"]
                data = json.dumps(record).encode()
                member.size = len(data)
                lacking.add(key)
            target.addfile(member, io.BytesIO(data))
    (folder / "sizes.json").write_text(json.dumps({"000000.tar": 48}))
    args = train_args(micro_world, tmp_path, "stage2", "--long-short-alpha", "0.8", "--log-every-n-steps", "100",
                      "--shuffle-buffer", "1")
    args[args.index("--train-data") + 1] = str(folder)
    assert main(args + ["--val-data", str(folder)]) == 0
    val = [r for r in read_metrics(tmp_path / "stage2") if r["kind"] == "val"]
    assert [r["val_captions_missing_long"] for r in val] == [12, 12]
    ends = [r for r in read_metrics(tmp_path / "stage2") if r["kind"] == "train"]
    assert [r["epoch"] for r in ends] == [0, 1]
    assert [r["captions_missing_long"] for r in ends] == [len(lacking)] * 2 and len(lacking) == 12
    assert f"epoch 0: of its samples on this process, {len(lacking)} lacked --long-caption-key json.long" in caplog.text
