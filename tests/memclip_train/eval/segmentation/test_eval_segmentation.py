"""Segmentation: the mIoU arithmetic, the four last-block methods, label reduction and layouts."""
import re

import numpy as np
import pytest
import torch
from eval_files import write_voc
from PIL import Image

import memclip
from memclip.precision import autocast_for
from memclip_train.eval.segmentation import ClipSegmenter, SlidingWindow, evaluate_segmentation
from memclip_train.eval.models import ModelRef
from memclip_train.eval.segmentation import load_segmentation_set
from memclip_train.eval.runner import run_segmentation
from memclip_train.eval.segmentation.dense import METHODS, dense_features
from memclip_train.eval.segmentation.metrics import ConfusionMatrix


@pytest.fixture
def synth_split(tmp_path):
    rng = np.random.default_rng(0)
    masks = []
    for _ in range(3):
        mask = np.zeros((40, 48), dtype=np.int64)
        mask[5:20, 5:25] = rng.integers(1, 4)
        mask[22:35, 28:45] = rng.integers(1, 4)
        mask[0, :] = 255
        masks.append(mask)
    root = write_voc(tmp_path / "segmentation", ["a0", "b1", "c2"], masks)
    (root / "classes.txt").write_text("circle\nstar\nring\n")
    return load_segmentation_set("synth", tmp_path)


def test_perfect_predictor_scores_100_and_a_shuffled_one_less(synth_split):
    targets = iter([synth_split.load_mask(i) for i in range(3)])
    perfect = evaluate_segmentation(synth_split, lambda image: np.where((t := next(targets)) == 255, 0, t),
                                    progress=False)
    assert perfect["mIoU"] == pytest.approx(100.0) and perfect["aAcc"] == pytest.approx(100.0)
    rng = np.random.default_rng(1)
    targets = iter([synth_split.load_mask(i) for i in range(3)])
    shuffled = evaluate_segmentation(synth_split, lambda image: rng.permutation(next(targets).ravel()).reshape(
        40, 48).clip(0, 2), progress=False)
    assert shuffled["mIoU"] < 60


def test_reduce_zero_label(synth_split):
    raw = np.asarray(Image.open(synth_split.items[0][1]))
    reduced = synth_split.load_mask(0)
    assert (reduced[raw == 0] == 255).all() and (reduced[raw == 255] == 255).all()
    assert (reduced[(raw > 0) & (raw < 255)] == raw[(raw > 0) & (raw < 255)] - 1).all()


def test_confusion_matrix_arithmetic():
    matrix = ConfusionMatrix(3)
    target = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
    prediction = np.array([[0, 1, 1, 1], [2, 0, 0, 2]])
    matrix.update(prediction, target)
    summary = matrix.summary(["a", "b", "c"])
    # class a: tp 1, union 3; b: tp 2, union 3; c: tp 1, union 2
    assert summary["per_class_iou"] == pytest.approx({"a": 100 / 3, "b": 200 / 3, "c": 50.0})
    assert summary["mIoU"] == pytest.approx((100 / 3 + 200 / 3 + 50) / 3)
    with pytest.raises(ValueError, match="outside"):
        matrix.update(np.zeros((1, 1), int), np.array([[7]]))


@pytest.mark.parametrize("method", METHODS)
def test_every_method_segments_with_the_micro_model(synth_split, micro_model, method):
    cpu = torch.device("cpu")
    features = dense_features(micro_model.model.visual, torch.randn(2, 3, 32, 32), method)
    assert features.shape == (2, 4, 4, 32) and torch.allclose(features.norm(dim=-1), torch.ones(2, 4, 4))
    segmenter = ClipSegmenter(micro_model.model, micro_model.tokenizer, synth_split.class_names, method,
                              SlidingWindow.for_model(32, 1.5), cpu, autocast_for("fp32", cpu))
    prediction = segmenter(Image.open(synth_split.items[0][0]))
    assert prediction.shape == (40, 48) and prediction.min() >= 0 and prediction.max() < 3


def test_methods_differ_only_in_the_last_block(micro_model):
    images = torch.randn(1, 3, 32, 32)
    outputs = {m: dense_features(micro_model.model.visual, images, m) for m in METHODS}
    assert not torch.allclose(outputs["sclip"], outputs["vanilla"])
    assert not torch.allclose(outputs["clearclip"], outputs["maskclip"])
    with pytest.raises(ValueError, match="unknown method"):
        dense_features(micro_model.model.visual, images, "gradcam")


def test_synonyms_are_max_pooled(micro_model):
    cpu = torch.device("cpu")
    segmenter = ClipSegmenter(micro_model.model, micro_model.tokenizer, ["cat", "person, man, woman"], "vanilla",
                              SlidingWindow(32, 16, 48), cpu, autocast_for("fp32", cpu))
    assert segmenter.owners.tolist() == [0, 1, 1, 1]
    logits = torch.zeros(4, 2, 2)
    logits[2] = 1.0
    probabilities = segmenter.class_probabilities(logits)
    assert probabilities.shape == (2, 2, 2) and (probabilities.argmax(0) == 1).all()


def test_layouts(tmp_path):
    with pytest.raises(FileNotFoundError, match="ImageSets/Segmentation/val.txt"):
        load_segmentation_set("voc20", tmp_path)
    with pytest.raises(FileNotFoundError, match="images/validation"):
        load_segmentation_set("ade20k", tmp_path)
    (tmp_path / "images" / "val2017").mkdir(parents=True)
    (tmp_path / "annotations" / "val2017").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "images" / "val2017" / "000000000139.jpg")
    with pytest.raises(FileNotFoundError, match="000000000139_labelTrainIds.png"):
        load_segmentation_set("cocostuff164k", tmp_path)
    with pytest.raises(ValueError, match="unknown segmentation dataset"):
        load_segmentation_set("cityscapes", tmp_path)


def test_the_train_split_is_read_from_each_benchmark_s_own_layout(tmp_path):
    mask = np.ones((8, 8), dtype=np.int64)
    root = write_voc(tmp_path / "voc", ["2007_000032", "2007_000039"], [mask, mask])
    listing = root / "ImageSets" / "Segmentation"
    (listing / "train.txt").write_text("2007_000039\n")
    assert [p.stem for p, _ in load_segmentation_set("voc20", root, "train").items] == ["2007_000039"]
    assert len(load_segmentation_set("voc20", root).items) == 2
    for name, folder in (("ade20k", "images/training"), ("cocostuff164k", "images/train2017"),
                         ("cocostuff10k", "images/train2014")):
        with pytest.raises(FileNotFoundError, match=folder):
            load_segmentation_set(name, tmp_path / "empty", "train")
    with pytest.raises(ValueError, match="unknown segmentation split 'test'"):
        load_segmentation_set("voc20", root, "test")


def test_nan_probabilities_are_never_the_argmax(micro_model):
    """torch's argmax takes NaN for the largest value: a NaN query used to win every pixel."""
    cpu = torch.device("cpu")
    segmenter = ClipSegmenter(micro_model.model, micro_model.tokenizer, ["cat", "dog"], "vanilla",
                              SlidingWindow(32, 16, 48), cpu, autocast_for("fp32", cpu))
    logits = torch.zeros(2, 2, 2)
    logits[0] = float("nan")
    logits[1, 0, 0] = -5.0
    assert (segmenter.class_probabilities(logits).argmax(0) == 1).all()


def test_a_model_with_non_finite_features_is_an_error_naming_it(synth_split, tmp_path, micro_configs):
    """It used to segment with argmax over NaN (torch takes NaN for the largest) and report an mIoU with exit 0."""
    broken = memclip.create_model("Test-Micro")
    with torch.no_grad():
        broken.visual.proj.fill_(float("nan"))
    folder = memclip.save_pretrained(broken, tmp_path / "broken")
    with pytest.raises(ValueError, match=r"model broken gives non-finite \(NaN or inf\) patch features.*a0.jpg"):
        run_segmentation([ModelRef("Test-Micro", str(folder), name="broken")], ["synth"], [tmp_path], ["sclip"],
                         tmp_path / "out", torch.device("cpu"), "fp32", progress=False)


def test_an_id_listed_twice_and_an_empty_listing_are_refused(synth_split, tmp_path):
    listing = tmp_path / "segmentation" / "ImageSets" / "Segmentation" / "val.txt"
    listing.write_text("a0\nb1\na0\n")
    with pytest.raises(FileNotFoundError, match="image id 'a0' is listed twice"):
        load_segmentation_set("synth", tmp_path)
    listing.write_text("\n")
    with pytest.raises(FileNotFoundError, match="no image ids in"):
        load_segmentation_set("synth", tmp_path)
    listing.write_text("a0\n")
    (tmp_path / "segmentation" / "classes.txt").write_text("circle\nstar\ncircle\n")
    with pytest.raises(FileNotFoundError, match="the class 'circle' is listed twice"):
        load_segmentation_set("synth", tmp_path)


def blank(image):
    return np.zeros((image.size[1], image.size[0]), dtype=np.int64)


@pytest.mark.parametrize("damage, named", [
    ("mask of another size", "b1.png is 10x10"),
    ("label outside the classes", "b1.png holds label 6 outside the 3 classes"),
    ("undecodable image", "cannot read image"),
])
def test_an_unusable_image_or_mask_is_named_or_counted(synth_split, damage, named):
    """A mask of another size or with an unknown label ended in a ValueError that named no file, after the model ran."""
    image_path, mask_path = synth_split.items[1]
    if damage == "mask of another size":
        Image.fromarray(np.ones((10, 10), dtype=np.uint8)).save(mask_path)
    elif damage == "label outside the classes":
        mask = np.asarray(Image.open(mask_path)).copy()
        mask[25:30, 30:40] = 7  # 7 - 1 = 6 after the label reduction: 3 classes
        Image.fromarray(mask).save(mask_path)
    else:
        image_path.write_bytes(b"broken")
    with pytest.raises(ValueError, match=named):
        evaluate_segmentation(synth_split, blank, progress=False)
    result = evaluate_segmentation(synth_split, blank, progress=False, skip_bad=True)
    assert result["num_images"] == 2 and result["skipped"]["total"] == 1 and len(result["image_accuracy"]) == 2
    assert result["skipped_images"][0][0] == str(image_path) and re.search(named, result["skipped_images"][0][1])


def test_a_set_without_labelled_pixels_has_no_miou(synth_split):
    for _, mask_path in synth_split.items:
        Image.fromarray(np.zeros((40, 48), dtype=np.uint8)).save(mask_path)  # 0 = background, ignored
    with pytest.raises(ValueError, match="none of the 3 images scored has a labelled pixel"):
        evaluate_segmentation(synth_split, lambda image: np.zeros((40, 48), dtype=np.int64), progress=False)


def test_a_16_bit_image_is_scaled_not_clipped(synth_split, micro_model):
    """A 16-bit grayscale PNG used to be clipped to white by PIL's convert('RGB')."""
    seen = []
    image_path = synth_split.items[0][0]
    values = np.full((40, 48), 128 * 257, dtype=np.uint16)
    Image.fromarray(values).save(image_path, format="PNG")
    evaluate_segmentation(synth_split, lambda image: seen.append(np.asarray(image)) or np.zeros(
        (image.size[1], image.size[0]), dtype=np.int64), progress=False)
    assert seen[0].shape == (40, 48, 3) and (seen[0] == 128).all()
