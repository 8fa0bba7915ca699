"""Known embeddings give known recalls through the runner; results are cached per model; bad images are named."""
import json
import os
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import memclip
from eval_files import image
from memclip.pretrained import shipped_record
from memclip.precision import autocast_for
from memclip_train.eval.models import LoadedModel, ModelRef
from memclip_train.eval.retrieval import evaluate_retrieval
from memclip_train.eval.retrieval_sets import RetrievalSet
from memclip_train.eval.runner import run_retrieval
from memclip_train.eval import models as models_module
from memclip_train.eval.__main__ import main
from memclip_train.eval import runner as runner_module
from memclip_train.features import BadImageError, encode_images
from memclip_train.eval.retrieval_sets import load_retrieval_set


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
    with pytest.raises(ValueError, match=re.escape(str(urban_root / "image" / "4.jpg"))):
        run_retrieval(ref, ["urban1k"], [urban_root], tmp_path, cpu, "fp32", progress=False)
    result = run_retrieval(ref, ["urban1k"], [urban_root], tmp_path, cpu, "fp32", skip_bad=True, progress=False)
    stored = result["Test-Micro (random)"]["urban1k"]
    assert stored["num_images"] == 3 and stored["images_without_captions"] == [str(urban_root / "image" / "4.jpg")]


@pytest.fixture
def nan_folder(tmp_path, micro_configs):
    """A saved Test-Micro whose every weight is NaN."""
    model = memclip.create_model("Test-Micro")
    with torch.no_grad():
        for param in model.parameters():
            param.fill_(float("nan"))
    return memclip.save_pretrained(model, tmp_path / "nan-model")


def test_a_model_with_non_finite_features_is_an_error_naming_it(urban_root, tmp_path, nan_folder, capsys):
    """It used to score T2I and I2T R@1 of 100 with exit 0 (every comparison with NaN is false)."""
    cpu, ref = torch.device("cpu"), ModelRef("Test-Micro", str(nan_folder), name="broken")
    with pytest.raises(ValueError, match=r"model broken gives non-finite \(NaN or inf\) image features"):
        run_retrieval([ref], ["urban1k"], [urban_root], tmp_path / "out", cpu, "fp32", progress=False)
    argv = ["retrieval", "--model", "Test-Micro", "--pretrained", str(nan_folder), "--dataset", "urban1k",
            "--data-root", str(urban_root), "--out", str(tmp_path / "cli"), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Test-Micro (nan-model)" in err and "non-finite" in err and "Traceback" not in err
    assert not list((tmp_path / "cli").rglob("*.json")), "no result is written"


def test_the_cache_follows_the_weights_content_not_their_file_time(urban_root, tmp_path, counted_runs,
                                                                  micro_configs):
    """Weights replaced behind the same path, size and modification time used to be served a stale result."""
    cpu = torch.device("cpu")
    folder = memclip.save_pretrained(memclip.create_model("Test-Micro"), tmp_path / "weights")
    ref = [ModelRef("Test-Micro", str(folder))]
    first = run_retrieval(ref, ["urban1k"], [urban_root], tmp_path / "out", cpu, "fp32", progress=False)
    weights = folder / "open_clip_model.safetensors"
    stat = weights.stat()
    other = memclip.create_model("Test-Micro")
    with torch.no_grad():
        for param in other.parameters():
            param.copy_(torch.randn_like(param))
    memclip.save_pretrained(other, folder)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.stat().st_size == stat.st_size and weights.stat().st_mtime_ns == stat.st_mtime_ns
    second = run_retrieval(ref, ["urban1k"], [urban_root], tmp_path / "out", cpu, "fp32", progress=False)
    run_retrieval(ref, ["urban1k"], [urban_root], tmp_path / "out", cpu, "fp32", progress=False)
    assert counted_runs == ["Test-Micro", "Test-Micro"], "new weights are evaluated again, then reused"
    label = ref[0].label
    assert first[label]["urban1k"]["cache_key"] != second[label]["urban1k"]["cache_key"]


def test_a_shipped_tag_is_keyed_by_its_recorded_sha256(monkeypatch):
    """The 'synth' tag used to be keyed by its name alone: new shipped weights reused the old weights' result."""
    ref = ModelRef("ViT-Tiny-8", "synth")
    identity = ref.identity()
    assert identity["pretrained_sha256"] == shipped_record("ViT-Tiny-8", "synth")["sha256"]
    record = dict(shipped_record("ViT-Tiny-8", "synth"), sha256="0" * 64)
    monkeypatch.setattr(models_module, "shipped_record", lambda model, tag: record)
    assert ref.identity() != identity


def write_captions_json(root, images, annotations):
    root.mkdir(parents=True, exist_ok=True)
    (root / "captions_short.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    return root


def test_the_coco_captions_reader_keeps_unannotated_images_in_the_gallery(tmp_path, micro_configs, capsys):
    """An image without an annotation used to be dropped: 2 of 3 images scored, exit 0, nothing reported."""
    root = tmp_path / "world" / "retrieval"
    for index in range(3):
        image(root / "image" / f"{index}.jpg", index)
    write_captions_json(root, [{"id": i, "file_name": f"image/{i}.jpg"} for i in range(3)],
                        [{"id": 0, "image_id": 0, "caption": "a red one"}, {"id": 1, "image_id": 2,
                                                                            "caption": "a blue one"}])
    with pytest.raises(ValueError, match=re.escape(str(root / "image" / "1.jpg")) + ".*has no caption"):
        load_retrieval_set("synth-short", root.parent)
    counted = load_retrieval_set("synth-short", root.parent, skip_bad=True)
    assert len(counted.images) == 2 and counted.uncaptioned == [root / "image" / "1.jpg"]
    argv = ["retrieval", "--model", "Test-Micro", "--dataset", "synth-short", "--data-root", str(root.parent),
            "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == 2 and "1.jpg" in capsys.readouterr().err
    assert main(argv + ["--skip-bad"]) == 0
    printed = capsys.readouterr().out
    assert "synth-short skipped" in printed and printed.strip().splitlines()[-1].endswith("| 1 |")
    [stored] = (tmp_path / "out" / "retrieval" / "synth-short").glob("*.json")
    result = json.loads(stored.read_text())
    assert result["num_images"] == 2 and result["skipped"] == {"unreadable_images": 0, "images_without_captions": 1,
                                                               "bad_items": 0, "total": 1}


@pytest.mark.parametrize("annotation, found", [
    ({"id": 1, "image_id": 0, "caption": None}, "'caption' is null"),
    ({"id": 1, "image_id": 0, "caption": 7}, "'caption' is a int, not a string"),
    ({"id": 1, "image_id": 0, "caption": "  "}, "'caption' is empty"),
    ({"id": 1, "image_id": 5, "caption": "x"}, "image id 5, which 'images' does not list"),
    ({"id": 1, "caption": "x"}, "image id None"),
])
def test_a_bad_coco_annotation_is_named_or_counted(tmp_path, annotation, found):
    """A null caption used to end in an AttributeError traceback; an unknown image id stopped the whole set."""
    root = write_captions_json(tmp_path / "c", [{"id": 0, "file_name": "a.jpg"}],
                               [{"id": 0, "image_id": 0, "caption": "good"}, annotation])
    with pytest.raises(ValueError, match=re.escape("annotations[1]") + ".*" + re.escape(found)):
        load_retrieval_set("synth-short", root)
    counted = load_retrieval_set("synth-short", root, skip_bad=True)
    assert counted.captions == ["good"] and len(counted.bad_items) == 1


def test_images_listed_twice_are_not_counted_twice(tmp_path):
    root = write_captions_json(tmp_path / "c", [{"id": 0, "file_name": "a.jpg"}, {"id": 1, "file_name": "a.jpg"},
                                                {"id": 0, "file_name": "b.jpg"}],
                               [{"id": 0, "image_id": 0, "caption": "good"}])
    with pytest.raises(ValueError, match=r"images\[1\] \(a.jpg\): lists an image file listed before"):
        load_retrieval_set("synth-short", root)
    assert len(load_retrieval_set("synth-short", root, skip_bad=True).bad_items) == 2


def float_pixels(image):
    return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)


class MeanPixel(torch.nn.Module):
    def encode_image(self, images, normalize=True):
        return torch.stack([images.mean(dim=(1, 2, 3)), torch.ones(len(images))], dim=1)


def test_the_eval_reader_scales_a_16_bit_png(tmp_path):
    """A normally exposed 16-bit PNG used to reach the model 99.5% white (PIL's convert('RGB') clips at 255)."""
    path = tmp_path / "mid-grey.png"
    Image.fromarray(np.full((8, 8), 100 * 257, dtype=np.uint16)).save(path)
    cpu = torch.device("cpu")
    features = encode_images(MeanPixel(), float_pixels, [path], cpu, autocast_for("fp32", cpu), progress=False).features
    assert features[0, 0].item() == pytest.approx(100.0)
