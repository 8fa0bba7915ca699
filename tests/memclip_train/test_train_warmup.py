"""The warmup fits the run: a warmup as long as the run is refused, and --warmup-fraction scales with the run."""
import json

import pytest
from train_helpers import train_args

from memclip_train.checkpoints import load_checkpoint
from memclip_train.main import main
from memclip_train.schedule import warmup_steps


def test_a_warmup_longer_than_the_run_is_refused():
    # about a thesis sweep point's stage 2 on 4 GPUs (10 epochs over 10k samples), under the code's warmup of 1000
    refused = r"--warmup 1000 is not shorter than the run \(781 optimizer steps\).*e\.g\. 39"
    with pytest.raises(ValueError, match=refused):
        warmup_steps(1000, None, 781)
    with pytest.raises(ValueError):
        warmup_steps(781, None, 781)
    assert warmup_steps(780, None, 781) == 780
    assert warmup_steps(10000, None, 12, kind="none") == 10000  # --skip-scheduler: no warmup is applied at all


def test_the_default_warmup_shrinks_to_a_short_run(caplog):
    assert warmup_steps(None, None, 20_000) == 10000  # open_clip's default where it fits
    assert warmup_steps(None, None, 781) == 39 and "5% of the run" in caplog.text
    assert warmup_steps(None, None, 4) == 0


def test_a_warmup_fraction_follows_the_run():
    assert warmup_steps(10000, 0.01, 147_951) == 1480  # stage 1 of the thesis: ~1000 steps of ~148k
    assert warmup_steps(10000, 0.0068, 312) == 2 and warmup_steps(10000, 0.0001, 312) == 1
    assert warmup_steps(10000, 0.0, 312) == 0


def test_the_trainer_refuses_it_before_training(micro_world, tmp_path, capsys, micro_configs):
    # the micro world: 6 batches of 16 per epoch, 2 epochs = 12 optimizer steps
    assert main(train_args(micro_world, tmp_path, "long", "--warmup", "12")) == 2
    err = capsys.readouterr().err
    assert "--warmup 12 is not shorter than the run (12 optimizer steps)" in err and "Traceback" not in err
    assert not (tmp_path / "long" / "checkpoints" / "epoch_1.pt").exists()


@pytest.mark.slow
def test_warmup_fraction_sets_the_schedule(micro_world, tmp_path, micro_configs):
    args = train_args(micro_world, tmp_path, "share")
    del args[args.index("--warmup"):args.index("--warmup") + 2]
    assert main(args + ["--warmup-fraction", "0.25", "--log-every-n-steps", "1"]) == 0
    checkpoint = load_checkpoint(tmp_path / "share" / "checkpoints" / "epoch_2.pt")
    assert checkpoint["scheduler"] == {"kind": "cosine", "warmup": 3, "total_steps": 12}
    rows = [json.loads(line) for line in (tmp_path / "share" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if r["kind"] == "train"]
    assert lrs[:4] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3, 1e-3]) and lrs[4] < 1e-3
    with pytest.raises(SystemExit):
        main(train_args(micro_world, tmp_path, "both", "--warmup-fraction", "0.1"))  # with --warmup: refused
