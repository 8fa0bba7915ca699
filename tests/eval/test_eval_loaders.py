"""Every retrieval loader reads its dataset's real layout, and wrong layouts say what was expected."""
import json

import pytest

from memclip_train.eval import LayoutError, load_retrieval_set
from memclip_train.eval.retrieval_sets.long_caption_sets import split_sentences, training_overlap


def test_coco_karpathy_and_val2017(coco_root):
    karpathy = load_retrieval_set("coco", coco_root)
    assert len(karpathy.images) == 3 and len(karpathy.captions) == 15
    assert karpathy.text_to_image[:6] == [0, 0, 0, 0, 0, 1]
    assert karpathy.images[1].name == "COCO_val2014_000000000001.jpg" and karpathy.meta["split"] == "Karpathy 5k test"
    val2017 = load_retrieval_set("coco", coco_root, "val2017")
    assert [p.name for p in val2017.images] == ["000000000007.jpg", "000000000009.jpg"]
    assert val2017.captions == ["a red thing", "another red thing", "b"] and val2017.text_to_image == [0, 0, 1]


def test_flickr_karpathy_and_full(flickr_root):
    assert len(load_retrieval_set("flickr30k", flickr_root).images) == 2
    full = load_retrieval_set("flickr30k", flickr_root, "full")
    assert len(full.images) == 3 and full.images[0].parent.name == "flickr30k-images"


def test_urban1k_both_layouts(urban_root, tmp_path):
    urban = load_retrieval_set("urban1k", urban_root)
    assert urban.captions == [f"Urban scene {i} with many details." for i in (1, 2, 3)]
    assert [p.name for p in urban.images] == ["1.jpg", "2.jpg", "3.jpg"]
    flair = tmp_path / "flair"
    flair.mkdir()
    (flair / "annotations.json").write_text(json.dumps({"annotations": [
        {"image_id": 1, "image": "image/1.jpg", "caption": "one"}, {"image_id": 2, "image": "image/2.jpg",
                                                                    "caption": "two"}]}))
    assert load_retrieval_set("urban1k", flair).captions == ["one", "two"]


def test_long_caption_sets(long_roots):
    docci = load_retrieval_set("docci", long_roots["docci"])
    assert len(docci.images) == 3 and docci.captions[0] == "Docci description 0. More text."
    per_sentence = load_retrieval_set("docci", long_roots["docci"], "sentence")
    assert per_sentence.captions[:2] == ["Docci description 0.", "More text."]
    assert per_sentence.text_to_image == [0, 0, 1, 1, 2, 2] and per_sentence.meta["variant"] == "sentence"
    full = load_retrieval_set("iiw", long_roots["iiw"], "docci:full")
    assert len(full.captions) == 2 and full.meta["subset"] == "DOCCI_Test"
    sentences = load_retrieval_set("iiw", long_roots["iiw"], "docci:sentence")
    assert sentences.captions[:3] == ["First sentence 0.", "Second sentence 0.", "Third, e.g. more."]
    assert sentences.text_to_image == [0, 0, 0, 1, 1, 1]
    dci = load_retrieval_set("dci", long_roots["dci"])
    assert len(dci.images) == 3 and dci.captions[0] == "Short 0. Extra detail 0. More."
    share = load_retrieval_set("sharegpt4v-1k", long_roots["sharegpt4v"])
    assert len(share.captions) == 1000 and share.meta["definition"].startswith("longclip: first 1000")
    assert len(share.images) == 3, "an image listed several times keeps all its captions"
    assert share.text_to_image[:4] == [0, 0, 0, 0] and share.captions[1] == "ShareGPT4V caption 3."


def test_sharegpt4v_sets_say_when_they_share_images_with_training(long_roots, tmp_path):
    root = long_roots["sharegpt4v"]
    assert load_retrieval_set("sharegpt4v-1k", root).meta["train_overlap_images"] == 0  # held out by construction
    entries = [{"image": f"./coco/train2017/{i % 5}.jpg", "conversations": [{"from": "gpt", "value": f"sam {i}."}]}
               for i in range(1000)]
    (root / "share4v_sam_10k.json").write_text(json.dumps(entries))
    sam = load_retrieval_set("sharegpt4v-1k", root, "sam10k")  # entries 1000 and 1001 of the 1.2M json: 1.jpg, 2.jpg
    assert sam.meta["train_overlap_images"] == 2
    assert "--exclude-images share4v_sam_10k.json" in sam.meta["train_overlap"]
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "share4v_sam_10k.json").write_text(json.dumps(entries))
    unknown = load_retrieval_set("sharegpt4v-1k", alone, "sam10k").meta
    assert unknown["train_overlap_images"] is None and "may also be in" in unknown["train_overlap"]
    note, count = training_overlap(root, "longclip", 10000, [])
    assert count == 9000 and "entries 1000-9999" in note


def test_split_sentences():
    assert split_sentences("A cat sits. The dog\nruns! Items, e.g. cups, stand.") == [
        "A cat sits.", "The dog runs!", "Items, e.g. cups, stand."]


@pytest.mark.parametrize("name, variant, files, expected", [
    ("coco", None, [], "dataset_coco.json"),
    ("coco", "val2017", [], "captions_val2017.json"),
    ("urban1k", None, [], "image/N.jpg and <root>/caption/N.txt"),
    ("docci", None, [], "docci_descriptions.jsonlines"),
    ("iiw", "dci:full", [], "DCI_Test/data.jsonl"),
    ("dci", None, [], "densely_captioned_images/splits.json"),
    ("sharegpt4v-10k", None, [], "share4v_sam_10k.json"),
    ("synth-short", None, [], "captions_short.json"),
])
def test_bad_layouts_name_the_path_and_the_expected_layout(tmp_path, name, variant, files, expected):
    with pytest.raises(LayoutError) as info:
        load_retrieval_set(name, tmp_path / "empty", variant)
    message = str(info.value)
    assert str(tmp_path / "empty") in message and "expected layout" in message and expected in message


def test_unknown_names_and_variants():
    with pytest.raises(ValueError, match="unknown retrieval dataset 'imagenet'"):
        load_retrieval_set("imagenet", "/tmp")
    with pytest.raises(ValueError, match="unknown variant 'test2015'"):
        load_retrieval_set("coco", "/tmp", "test2015")


def test_broken_json_is_reported(tmp_path):
    (tmp_path / "dataset_coco.json").write_text("{not json")
    with pytest.raises(LayoutError, match="not valid json"):
        load_retrieval_set("coco", tmp_path)
