from memclip_train.bench_train import main


def test_bench_train_prints_both_rows_and_the_ratio(capsys):
    main(["--model", "Test-Micro-mem", "--batch-size", "4", "--steps", "1", "--warmup", "0"])
    out = capsys.readouterr().out
    assert "distillation (memory only" in out and "teacher image tower fwd+bwd" in out
    ratio = float(out.split("ratio distillation / teacher: ")[1].split("x")[0])
    assert ratio > 0
