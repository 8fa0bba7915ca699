"""Known embeddings give known recalls through the runner; results are cached per model; bad images are named."""
import re

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from memclip_train.eval import LoadedModel, ModelRef, RetrievalSet, autocast_for, evaluate_retrieval, run_retrieval
from memclip_train.eval import runner as runner_module
from memclip_train.eval.features import BadImageError
from memclip_train.eval.retrieval_sets import BadItemError


class OneHotModel(torch.nn.Module):
    """Images encode to the one-hot of their red channel bucket; captions 'item K ...' to the one-hot of K, except
    captions containing 'wrong', which point at K + 1."""

    def __init__(self, size=8):
        super().__init__()
        self.size = size
        self.memclip_spec = None

    def encode_image(self, images, normalize=True):
        index = (images[:, 0, 0, 0] * 10).round().long() % self.size
        return F.one_hot(index, self.size).float()

    def encode_text(self, tokens, normalize=True):
        return F.one_hot(tokens[:, 0] % self.size, self.size).float()


class OneHotTokenizer:
    context_length = 77

    def __call__(self, texts, context_length=None):
        ids = []
        for text in texts:
            k = int(re.search(r"item (\d+)", text).group(1))
            ids.append([k + 1 if "wrong" in text else k] + [0] * ((context_length or 77) - 1))
        return torch.tensor(ids)


def to_tensor(image):
    red = image.getpixel((0, 0))[0]
    return torch.full((3, 4, 4), red / 255.0)


@pytest.fixture
def known_set(tmp_path):
    images = []
    for k in range(4):
        path = tmp_path / f"{k}.png"
        Image.new("RGB", (4, 4), (round(k / 10 * 255), 0, 0)).save(path)
        images.append(path)
    captions = ["item 0 a", "item 0 wrong", "item 1", "item 2 wrong", "item 2", "item 3", "item 3 b"]
    owners = [0, 0, 1, 2, 2, 3, 3]
    return RetrievalSet("known", images, captions, owners, {"split": "fixture"})


def loaded_one_hot():
    model = OneHotModel()
    from memclip import TextTowerConfig

    model.memclip_spec = type("Spec", (), {"text": TextTowerConfig()})()
    return LoadedModel(ModelRef("one-hot"), model, to_tensor, OneHotTokenizer())


def test_known_embeddings_give_known_recalls(known_set):
    cpu = torch.device("cpu")
    result = evaluate_retrieval(loaded_one_hot(), known_set, cpu, autocast_for("fp32", cpu), batch_size=3,
                                progress=False)
    metrics = result["metrics"]
    # T2I: 5 of 7 captions point at their own image; the two 'wrong' ones rank their image below another.
    assert metrics["t2i_R@1"] == pytest.approx(500 / 7)
    # I2T: images 1 and 3 tie their own caption with a 'wrong' caption pointing at them; ties count against.
    assert metrics["i2t_R@1"] == 50.0 and metrics["i2t_R@5"] == 100.0
    assert metrics["i2t_mean_rank"] == 1.5
    assert result["num_images"] == 4 and result["num_texts"] == 7 and result["meta"] == {"split": "fixture"}
    assert result["context_length"] == 77 and result["captions_cut"] == 0


def test_unreadable_images_are_named_or_skipped(known_set):
    known_set.images[1].write_bytes(b"broken")
    cpu = torch.device("cpu")
    with pytest.raises(BadImageError, match=re.escape(str(known_set.images[1]))):
        evaluate_retrieval(loaded_one_hot(), known_set, cpu, autocast_for("fp32", cpu), progress=False)
    result = evaluate_retrieval(loaded_one_hot(), known_set, cpu, autocast_for("fp32", cpu), skip_bad=True,
                                progress=False)
    assert result["num_images"] == 3 and result["num_texts"] == 6 and len(result["skipped_images"]) == 1


def test_adding_a_model_reuses_stored_results(urban_root, tmp_path, monkeypatch, micro_configs):
    calls = []
    original = runner_module.evaluate_retrieval

    def counting(loaded, dataset, *args, **kwargs):
        calls.append(loaded.ref.model)
        return original(loaded, dataset, *args, **kwargs)

    monkeypatch.setattr(runner_module, "evaluate_retrieval", counting)
    cpu = torch.device("cpu")
    first = [ModelRef("Test-Micro")]
    run_retrieval(first, ["urban1k"], [urban_root], tmp_path, cpu, "fp32", progress=False)
    both = first + [ModelRef("Test-Micro-mem")]
    results = run_retrieval(both, ["urban1k"], [urban_root], tmp_path, cpu, "fp32", progress=False)
    assert calls == ["Test-Micro", "Test-Micro-mem"]
    assert set(results) == {"Test-Micro (random)", "Test-Micro-mem (random)"}
    memory = results["Test-Micro-mem (random)"]["urban1k"]["memory_usage"]
    assert set(memory) == {"1", "2"} and 0 < memory["1"]["fraction_read"] <= 1
    run_retrieval(both, ["urban1k"], [urban_root], tmp_path, cpu, "amp_bf16", progress=False)
    assert calls[2:] == ["Test-Micro", "Test-Micro-mem"], "another precision is another result"


@pytest.fixture
def counted_runs(monkeypatch):
    """The labels of the models each run_retrieval call really evaluated (cached results are not counted)."""
    calls = []
    original = runner_module.evaluate_retrieval

    def counting(loaded, dataset, *args, **kwargs):
        calls.append(loaded.ref.model)
        return original(loaded, dataset, *args, **kwargs)

    monkeypatch.setattr(runner_module, "evaluate_retrieval", counting)
    return calls


def test_the_cache_follows_the_data_and_skip_bad(urban_root, tmp_path, counted_runs, micro_configs):
    cpu, ref = torch.device("cpu"), [ModelRef("Test-Micro")]
    image = urban_root / "image" / "2.jpg"
    good = image.read_bytes()
    image.write_bytes(b"broken")
    skipped = run_retrieval(ref, ["urban1k"], [urban_root], tmp_path, cpu, "fp32", skip_bad=True, progress=False)
    assert len(skipped["Test-Micro (random)"]["urban1k"]["skipped_images"]) == 1
    with pytest.raises(BadImageError, match="2.jpg"):  # a --skip-bad result is not another run's result
        run_retrieval(ref, ["urban1k"], [urban_root], tmp_path, cpu, "fp32", progress=False)
    image.write_bytes(good)  # the image is fixed: the stored result is stale
    fixed = run_retrieval(ref, ["urban1k"], [urban_root], tmp_path, cpu, "fp32", skip_bad=True, progress=False)
    assert fixed["Test-Micro (random)"]["urban1k"]["skipped_images"] == []
    caption = urban_root / "caption" / "1.txt"
    caption.write_text("Another caption altogether.\n")
    run_retrieval(ref, ["urban1k"], [urban_root], tmp_path, cpu, "fp32", skip_bad=True, progress=False)
    run_retrieval(ref, ["urban1k"], [urban_root], tmp_path, cpu, "fp32", skip_bad=True, progress=False)
    assert counted_runs == ["Test-Micro"] * 4, "recomputed after each change of the data, reused when unchanged"


def test_an_image_without_a_caption_is_named_or_counted(urban_root, tmp_path, micro_configs):
    cpu, ref = torch.device("cpu"), [ModelRef("Test-Micro")]
    Image.new("RGB", (40, 30), (9, 9, 9)).save(urban_root / "image" / "4.jpg")
    with pytest.raises(BadItemError, match=re.escape(str(urban_root / "image" / "4.jpg"))):
        run_retrieval(ref, ["urban1k"], [urban_root], tmp_path, cpu, "fp32", progress=False)
    result = run_retrieval(ref, ["urban1k"], [urban_root], tmp_path, cpu, "fp32", skip_bad=True, progress=False)
    stored = result["Test-Micro (random)"]["urban1k"]
    assert stored["num_images"] == 3 and stored["images_without_captions"] == [str(urban_root / "image" / "4.jpg")]
