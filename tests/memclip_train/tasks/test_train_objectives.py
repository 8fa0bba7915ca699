"""The objectives: feature-caching accumulation, the long/short blend, text distillation and long contexts."""
import json

import pytest
import torch
from train_helpers import train_args

import memclip
from memclip_train.checkpoints import TrainState
from memclip_train.data.loaders import RunData
from memclip_train.distributed import DistributedEnv
from memclip_train.main import main
from memclip_train.params import DataConfig, ModelConfig, OptimConfig, TrainConfig
from memclip_train.run_logger import RunLogger
from memclip_train.tasks.contrastive import ContrastiveTask, LongShortTask
from memclip_train.trainer import Trainer


def captions(n, word):
    colours = ["red", "blue", "green", "pink", "black", "white", "grey", "cyan"]
    return memclip.get_tokenizer("Test-Micro")([f"a {colours[i % 8]} {word} number {i}" for i in range(n)])


def test_accumulated_features_give_the_full_batch_gradient(tmp_path):
    torch.manual_seed(0)
    batch = {"image": torch.randn(8, 3, 32, 32), "text": captions(8, "star")}
    grads = []
    for accum in (1, 2):
        torch.manual_seed(0)
        task = ContrastiveTask(memclip.create_model("Test-Micro"), None, None, None, DistributedEnv())
        config = TrainConfig(data=DataConfig(train_data="unused"), model=ModelConfig("Test-Micro", precision="fp32"),
                             optim=OptimConfig(batch_size=8 // accum, accum_freq=accum))
        optimizer = torch.optim.SGD(task.model.parameters(), lr=0.0)
        trainer = Trainer(config, DistributedEnv(), task, task.model, optimizer, None, RunData(None, None, 4, 32),
                          None, tmp_path, RunLogger(tmp_path, config, is_master=False), TrainState())
        micro = [{k: v[i * 8 // accum:(i + 1) * 8 // accum] for k, v in batch.items()} for i in range(accum)]
        optimizer.zero_grad()
        step = trainer._accumulate_features if accum > 1 else trainer._accumulate_gradients
        step(micro)
        grads.append({n: p.grad.clone() for n, p in task.model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and "logit_scale" in grads[0]
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("alpha", [0.0, 1.0, 0.8])
def test_long_short_blend(alpha):
    torch.manual_seed(0)
    task = LongShortTask(memclip.create_model("Test-Micro"), None, None, None, DistributedEnv(), alpha=alpha)
    batch = {"image": torch.randn(4, 3, 32, 32), "long": captions(4, "ring in a long caption"),
             "short": captions(4, "ring")}
    features = task.forward(task.model, batch)
    total, terms = task.loss(features, batch)
    image, long, short, scale = task.model(batch["image"], batch["long"])[0], None, None, None
    _, long, scale = task.model(batch["image"], batch["long"])
    _, short, _ = task.model(batch["image"], batch["short"])
    long_only = task.clip_loss(image, long, scale)
    short_only = task.clip_loss(image, short, scale)
    torch.testing.assert_close(terms["long"], long_only)
    torch.testing.assert_close(terms["short"], short_only)
    torch.testing.assert_close(total, alpha * long_only + (1 - alpha) * short_only)
    assert not torch.allclose(long_only, short_only)


def metrics(run_dir, kind):
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def test_stage_two_trains_memory_and_vision_with_text_frozen(micro_world, tmp_path):
    start = memclip.save_pretrained(memclip.create_model("Test-Micro-mem"), tmp_path / "student")
    args = train_args(micro_world, tmp_path, "stage2", "--long-short-alpha", "0.8", "--pretrained", str(start),
                      "--val-data", str(micro_world / "val" / "000000.tar"), "--text-context-length", "248",
                      "--text-pos-stretch", "longclip")
    args[args.index("--model") + 1] = "Test-Micro-mem"
    assert main(args) == 0
    train = metrics(tmp_path / "stage2", "train")
    assert {"loss", "loss_long", "loss_short", "captions_cut_long", "captions_cut_short"} <= set(train[-1])
    assert train[-1]["captions_cut_long"] == 0, "248 tokens hold every long caption of the micro world"
    assert "val_long_t2i_R@1" in metrics(tmp_path / "stage2", "val")[-1]
    before = memclip.create_model("Test-Micro-mem", pretrained=str(start),
                                  text_tower={"context_length": 248, "pos_stretch": "longclip"}).state_dict()
    after = memclip.create_model(str(tmp_path / "stage2" / "final"))
    assert after.memclip_spec.context_length == 248
    after = after.state_dict()
    text_keys = [k for k in after if not k.startswith("visual.") and k not in ("logit_scale",)]
    assert text_keys and all(torch.equal(before[k], after[k]) for k in text_keys)
    assert not torch.equal(before["visual.conv1.weight"], after["visual.conv1.weight"])
    assert not torch.equal(before["visual.transformer.resblocks.1.mlp.values.weight"],
                           after["visual.transformer.resblocks.1.mlp.values.weight"])


def test_rope_text_distillation_lowers_the_text_loss(micro_world, tmp_path):
    teacher = memclip.save_pretrained(memclip.create_model("Test-Micro"), tmp_path / "teacher")
    args = train_args(micro_world, tmp_path, "tulip", "--distill-text", "--text-tower", "rope", "--pretrained",
                      str(teacher), "--epochs", "3", "--lr", "3e-3", "--log-every-n-steps", "1",
                      "--val-data", str(micro_world / "val" / "000000.tar"))
    assert main(args) == 0
    train = metrics(tmp_path / "tulip", "train")
    assert train[-1]["loss_text_cosine"] < train[0]["loss_text_cosine"]
    val = metrics(tmp_path / "tulip", "val")[-1]
    assert "val_text_cosine" in val and "val_student_t2i_R@1" in val
    student = memclip.create_model(str(tmp_path / "tulip" / "final"))
    assert student.memclip_spec.text.kind == "rope"
    reference = memclip.create_model(str(teacher)).state_dict()
    for key, value in student.state_dict().items():
        if key.startswith("visual."):
            assert torch.equal(value, reference[key]), key
