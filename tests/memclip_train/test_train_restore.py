"""restore_checkpoint mirrors save_checkpoint; the preemption flag handles signals only inside its with block."""
import os
import random
import signal

import pytest
import torch

import memclip
from memclip_train.checkpoints import TrainState, load_checkpoint, restore_checkpoint, save_checkpoint
from memclip_train.error_reporting import UserError
from memclip_train.preemption import PreemptionFlag


def model_and_optimizer(seed):
    torch.manual_seed(seed)
    model = memclip.create_model("ViT-Tiny-8-mem")
    optimizer = torch.optim.AdamW(memclip.param_groups(model, lr=1e-3, weight_decay=0.1), lr=1e-3)
    return model, optimizer


def test_a_saved_checkpoint_restores_weights_optimizer_progress_schedule_and_rng(tmp_path):
    model, optimizer = model_and_optimizer(0)
    model.encode_image(torch.randn(2, 3, 64, 64)).square().mean().backward()
    optimizer.step()
    state = TrainState(epoch=1, batch_in_epoch=3, step=7, stream_position={"worker": 1})
    path = tmp_path / "epoch_latest.pt"
    save_checkpoint(path, model, optimizer.state_dict(), {"warmup": 5}, None, state, "run",
                    {"model": {"model": "ViT-Tiny-8-mem"}})
    expected_draw = (torch.rand(3), random.random())

    fresh, fresh_optimizer = model_and_optimizer(1)
    resumed = restore_checkpoint(path, load_checkpoint(path), fresh, fresh_optimizer, None, "ViT-Tiny-8-mem")
    assert resumed.path == path and resumed.state == state and resumed.scheduler_state == {"warmup": 5}
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    assert fresh_optimizer.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()
    draw = (torch.rand(3), random.random())
    assert torch.equal(draw[0], expected_draw[0]) and draw[1] == expected_draw[1], "RNG states come back"

    with pytest.raises(UserError, match="holds a --model ViT-Tiny-8-mem run, not --model ViT-Tiny-8"):
        restore_checkpoint(path, load_checkpoint(path), fresh, fresh_optimizer, None, "ViT-Tiny-8")


def test_the_preemption_flag_handles_signals_only_inside_its_block():
    before = signal.getsignal(signal.SIGUSR1)
    flag = PreemptionFlag()
    assert signal.getsignal(signal.SIGUSR1) is before, "building the flag installs nothing"
    with flag:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert flag.requested and flag.signal_name == "SIGUSR1"
    assert signal.getsignal(signal.SIGUSR1) is before
