"""`python -m memclip_train.bench_infer`: student and teacher encode_image, memory layer and MLP, in one run."""
import json

import pytest

from memclip_train.bench_infer import main


def test_bench_infer_times_both_models_and_both_layers_per_thread_count(tmp_path, capsys):
    out = tmp_path / "infer.json"
    assert main(["--model", "Test-Micro-mem", "--batch-size", "3", "--threads", "1,2", "--no-cuda", "--warmup", "0",
                 "--repeats", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Test-Micro-mem vs its teacher Test-Micro" in printed
    assert "| CPU, 1 thread |" in printed and "| CPU, 2 threads |" in printed
    data = json.loads(out.read_text())
    # Test-Micro: 32 px images in patches of 8 -> 16 patches + the class token, first memory block 1
    assert data["block"] == 1 and data["tokens"] == 3 * 17
    for row in data["rows"]:
        for key in ("student_ms", "teacher_ms", "memory_ms", "mlp_ms"):
            assert row[key] > 0
        assert row["encode_ratio"] == pytest.approx(row["student_ms"] / row["teacher_ms"])
        assert "load" in row["load"]


def test_bench_infer_refuses_a_model_without_memory_and_bad_threads(capsys):
    with pytest.raises(SystemExit):
        main(["--model", "Test-Micro", "--no-cuda"])
    assert "no memory layers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--model", "Test-Micro-mem", "--threads", "0"])
    assert "--threads" in capsys.readouterr().err
