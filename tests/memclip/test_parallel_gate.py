"""The parallel memory's gate opens at a fine-tuning lr: it trains at its own fixed lr (MemoryConfig.gate_lr)."""
import torch
import torch.nn.functional as F

import memclip
from memclip.parallel import ParallelMemoryMLP, memory_gates

FINE_TUNE_LR = 1e-5   # the thesis's stage-2 lr


def fine_tune(folder, gate_lr: float, steps: int = 30):
    """Parallel student of a fixed teacher, trained towards other image embeddings; returns (teacher, student)."""
    torch.manual_seed(0)
    teacher = memclip.create_model("Test-Micro").eval()
    memclip.save_pretrained(teacher, folder / "teacher")
    student = memclip.create_model("Test-Micro-mem", pretrained=str(folder / "teacher"),
                                   memory={"mode": "parallel", "gate_lr": gate_lr})
    memclip.freeze_except_memory(student)
    student.train()
    optimizer = torch.optim.AdamW(memclip.param_groups(student, lr=FINE_TUNE_LR, weight_decay=0.1), eps=1e-6)
    images = torch.randn(16, 3, 32, 32)
    target = F.normalize(torch.randn(16, 32), dim=-1)
    for _ in range(steps):
        loss = (1 - F.cosine_similarity(student.encode_image(images, normalize=True), target)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return teacher, student.eval(), images


def test_gates_form_their_own_fixed_lr_group():
    student = memclip.create_model("Test-Micro-mem", memory={"mode": "parallel", "gate_lr": 0.02})
    memclip.freeze_except_memory(student)
    groups = {g["name"]: g for g in memclip.param_groups(student, lr=1e-5, weight_decay=0.1)}
    gates = groups["gates"]
    assert gates["lr"] == 0.02 and gates["weight_decay"] == 0.0 and gates["fixed_lr"]
    assert {id(p) for p in gates["params"]} == {id(g) for g in memory_gates(student)}
    assert groups["values"]["lr"] == 0.01                      # the micro config's value lr, unchanged


def test_a_zero_gate_starts_at_the_teacher_and_opens_at_a_fine_tuning_lr(tmp_path):
    teacher, student, images = fine_tune(tmp_path, gate_lr=memclip.MemoryConfig().gate_lr, steps=0)
    with torch.no_grad():
        assert torch.equal(teacher.encode_image(images), student.encode_image(images))
    teacher, student, images = fine_tune(tmp_path, gate_lr=memclip.MemoryConfig().gate_lr)
    opened = torch.cat([g.detach().abs() for g in memory_gates(student)]).mean().item()
    _, shut_student, _ = fine_tune(tmp_path, gate_lr=FINE_TUNE_LR)
    shut = torch.cat([g.detach().abs() for g in memory_gates(shut_student)]).mean().item()
    # Adam's step exceeds lr a little when the gradient shrinks over the steps (m-hat above sqrt(v-hat)): with the
    # RMS-normalised read-out the 30 steps move the gate 3.045e-4, 1.5% past 30 x lr, hence the 10% margin.
    assert shut <= 30 * FINE_TUNE_LR * 1.1, "at the base lr Adam moves the gate by about lr per step at most"
    assert opened > 50 * shut
    with torch.no_grad():
        change = (student.encode_image(images, normalize=True) - teacher.encode_image(images, normalize=True)).norm(
            dim=-1).mean().item()
        shut_change = (shut_student.encode_image(images, normalize=True)
                       - teacher.encode_image(images, normalize=True)).norm(dim=-1).mean().item()
    assert change > 10 * shut_change and change > 1e-2, "the open gates carry a read-out that changes the model"


def test_an_open_gate_adds_a_read_out_of_its_own_size():
    """The read-out is RMS-normalised, so a gate of g adds g per channel in RMS, whatever the memory's init scale."""
    torch.manual_seed(0)
    student = memclip.create_model("Test-Micro-mem", memory={"mode": "parallel"}).eval()
    block = next(m for m in student.modules() if isinstance(m, ParallelMemoryMLP))
    x = torch.randn(2, 5, block.memory.input_dim)
    with torch.no_grad():
        assert torch.equal(block(x), block.mlp(x))             # a shut gate: the MLP alone
        block.memory_gate.fill_(0.5)
        added = block(x) - block.mlp(x)
        assert block.memory(x).pow(2).mean().sqrt() < 0.2      # the raw read-out is small at init...
    rms = added.pow(2).mean(-1).sqrt()
    assert torch.allclose(rms, torch.full_like(rms, 0.5), atol=1e-4)   # ...the gated one has the gate's size
