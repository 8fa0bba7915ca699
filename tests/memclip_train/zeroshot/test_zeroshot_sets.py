"""The zero-shot core (memclip_train.zeroshot): the ImageNet, ImageNet-V2 and ImageFolder layouts, class names and
prompts, their checks, and exact accuracy on a model whose answer is known."""
import open_clip
import pytest
import torch
from torchvision.transforms import ToTensor

from memclip.precision import autocast_for
from memclip_train.dataset_files import LayoutError
from memclip_train.zeroshot import ZeroShotOptions, ZeroShotSet
from memclip_train.zeroshot.accuracy import true_class_ranks
from memclip_train.zeroshot.evaluate import evaluate_zeroshot
from memclip_train.zeroshot.registry import load_zeroshot_set

from eval_files import image
from zeroshot_helpers import ColourReader, colour_tokenizer, image_folder

CPU = torch.device("cpu")


def test_imagenet_layout_gives_open_clip_names_and_openai_templates(tmp_path):
    root = tmp_path / "imagenet" / "val"
    for wnid in range(1000):
        (root / f"n{wnid:08d}").mkdir(parents=True)
    image(root / "n00000000" / "a.JPEG", 0)
    image(root / "n00000999" / "b.JPEG", 1)
    image(root / "n00000999" / "c.jpeg", 2)
    for given in (root, root.parent):  # the val folder itself, or the folder above it
        dataset = load_zeroshot_set("imagenet", given, skip_bad=True)  # 998 class folders are empty
        assert len(dataset.bad_items) == 998 and "stays a candidate" in dataset.bad_items[0].reason
        assert dataset.labels == [0, 999, 999] and dataset.class_names == list(open_clip.IMAGENET_CLASSNAMES)
        assert dataset.templates is open_clip.OPENAI_IMAGENET_TEMPLATES and "80 OpenAI" in dataset.prompts_name
        assert dataset.prompts_of(0)[0] == "a bad photo of a tench."
    (root / "n00000999").rename(root / ".hidden")
    with pytest.raises(LayoutError, match="expected 1000 class folders, found 999"):
        load_zeroshot_set("imagenet", root)


def test_imagenet_v2_labels_are_the_folder_numbers(tmp_path):
    parent = tmp_path / "imagenetv2"
    for variant in ("matched-frequency", "threshold0.7"):
        folder = parent / f"imagenetv2-{variant}-format-val"
        for label in range(1000):
            (folder / str(label)).mkdir(parents=True)
        image(folder / "10" / "x.jpeg", 0)
        image(folder / "2" / "y.jpeg", 1)
    image(parent / "imagenetv2-threshold0.7-format-val" / "999" / "z.jpeg", 2)
    default = load_zeroshot_set("imagenet-v2", parent, skip_bad=True)  # most class folders are empty
    assert default.labels == [2, 10] and default.meta["variant"] == "matched-frequency"  # not '10' < '2'
    assert load_zeroshot_set("imagenet-v2", parent, "threshold0.7", skip_bad=True).labels == [2, 10, 999]
    direct = load_zeroshot_set("imagenet-v2", parent / "imagenetv2-matched-frequency-format-val", skip_bad=True)
    assert [p.name for p in direct.images] == ["y.jpeg", "x.jpeg"]
    with pytest.raises(ValueError, match="unknown variant 'top'"):
        load_zeroshot_set("imagenet-v2", parent, "top")
    with pytest.raises(LayoutError, match="imagenetv2-top-images-format-val"):
        load_zeroshot_set("imagenet-v2", parent, "top-images")


def test_image_folder_class_names_and_templates_files(tmp_path):
    root = image_folder(tmp_path / "folder", ["green", "red_ish"])
    plain = load_zeroshot_set("imagefolder", root)
    assert plain.class_names == ["green", "red ish"] and plain.labels == [0, 0, 1, 1]
    names = tmp_path / "names.txt"
    names.write_text("verdant\n\nscarlet\n")
    templates = tmp_path / "templates.txt"
    templates.write_text("a {} thing\nsomething {}\n")
    dataset = load_zeroshot_set("imagefolder", root, options=ZeroShotOptions(names, str(templates)))
    assert dataset.class_names == ["verdant", "scarlet"]
    assert dataset.prompts_of(1) == ["a scarlet thing", "something scarlet"]
    assert dataset.prompts_name == "2 templates from templates.txt"
    assert load_zeroshot_set("imagefolder", root, options=ZeroShotOptions(templates="simple")).prompts_of(0)[0] == \
        open_clip.SIMPLE_IMAGENET_TEMPLATES[0]("green")
    names.write_text("only one\n")
    with pytest.raises(ValueError, match="1 names for 2 classes"):
        load_zeroshot_set("imagefolder", root, options=ZeroShotOptions(names))
    templates.write_text("no placeholder\n")
    with pytest.raises(ValueError, match="has no {}"):
        load_zeroshot_set("imagefolder", root, options=ZeroShotOptions(templates=str(templates)))


def test_accuracy_is_exact_when_the_answer_is_known(tmp_path):
    root = image_folder(tmp_path / "colours", ["blue", "green", "red"], per_class=3)
    run = dict(device=CPU, autocast=autocast_for("fp32", CPU), progress=False)
    right = load_zeroshot_set("imagefolder", root, options=ZeroShotOptions(templates="simple"))
    result = evaluate_zeroshot(ColourReader(), ToTensor(), colour_tokenizer, right, **run)
    assert result["metrics"]["top1"] == 100 and result["ranks"] == [0] * 9
    assert result["predictions"] == list(right.labels)
    names = tmp_path / "names.txt"
    names.write_text("green\nred\nblue\n")  # every class named as another one
    wrong = load_zeroshot_set("imagefolder", root, options=ZeroShotOptions(names))
    result = evaluate_zeroshot(ColourReader(), ToTensor(), colour_tokenizer, wrong, **run)
    # the true class ties with the third one (both off-colour channels are 20): ties count in the image's favour
    assert result["metrics"]["top1"] == 0 and result["metrics"]["top5"] == 100 and set(result["ranks"]) == {1}
    # per-class prompts: class k described only through prompts that name colour k
    prompts = [[f"a {c} circle", f"a small {c} star"] for c in ("blue", "green", "red")]
    per_class = ZeroShotSet("shapes", right.images, right.labels, ["b", "g", "r"], class_prompts=prompts)
    result = evaluate_zeroshot(ColourReader(), ToTensor(), colour_tokenizer, per_class, **run)
    assert result["metrics"]["top1"] == 100 and result["prompts"] == "per-class prompts (6 in all)"
    half = ZeroShotSet("shapes", right.images, [0, 0, 0, 1, 1, 1, 0, 0, 0], ["b", "g", "r"], class_prompts=prompts)
    result = evaluate_zeroshot(ColourReader(), ToTensor(), colour_tokenizer, half, **run)
    metrics = result["metrics"]
    assert metrics["top1"] == pytest.approx(100 * 6 / 9) and metrics["mean_per_class_top1"] == pytest.approx(75)
    assert result["predictions"] == list(right.labels)    # what the images show, whatever the labels say


def test_zeroshot_set_refuses_inconsistent_definitions():
    with pytest.raises(ValueError, match="exactly one"):
        ZeroShotSet("x", ["a.jpg"], [0], ["a"])
    with pytest.raises(ValueError, match="label 3 outside"):
        ZeroShotSet("x", ["a.jpg"], [3], ["a"], templates=["{}"])
    with pytest.raises(ValueError, match="class 'b' has no prompts"):
        ZeroShotSet("x", ["a.jpg"], [0], ["a", "b"], class_prompts=[["an a"], []])


def test_nan_scores_rank_the_true_class_last():
    """A NaN true score used to rank first (rank 0: 'logits > NaN' is false everywhere), and argmax picked NaN."""
    logits = torch.tensor([[0.1, float("nan"), 0.3], [float("nan"), 0.2, 0.1], [0.5, 0.2, 0.1]])
    labels = torch.tensor([1, 1, 0])
    assert true_class_ranks(logits, labels).tolist() == [2, 0, 0]
    nan = torch.full((2, 4), float("nan"))
    assert true_class_ranks(nan, torch.tensor([0, 3])).tolist() == [3, 3]


class NaNReader(ColourReader):
    def encode_image(self, images, normalize=False):
        return torch.full((len(images), 3), float("nan"))


def test_non_finite_features_are_an_error_naming_the_model(tmp_path):
    dataset = load_zeroshot_set("imagefolder", image_folder(tmp_path / "colours", ["blue", "green", "red"]),
                                options=ZeroShotOptions(templates="simple"))
    with pytest.raises(ValueError, match="the model gives non-finite"):  # the eval program names its label
        evaluate_zeroshot(NaNReader(), ToTensor(), colour_tokenizer, dataset, CPU, autocast_for("fp32", CPU),
                          progress=False)


def test_images_outside_every_class_folder_are_named(tmp_path):
    root = image_folder(tmp_path / "colours", ["blue", "green"])
    image(root / "stray.jpg", 0)
    with pytest.raises(ValueError, match="stray.jpg, image: is outside every class folder"):
        load_zeroshot_set("imagefolder", root)
    assert len(load_zeroshot_set("imagefolder", root, skip_bad=True).images) == 4


def test_a_class_name_given_twice_is_warned_about(tmp_path, caplog):
    root = image_folder(tmp_path / "colours", ["blue", "green", "red"])
    names = tmp_path / "names.txt"
    names.write_text("crane\ncrane\nred\n")
    dataset = load_zeroshot_set("imagefolder", root, options=ZeroShotOptions(names))
    assert dataset.class_names == ["crane", "crane", "red"] and "given to more than one class" in caplog.text
