"""Every retrieval loader reads its dataset's real layout, and wrong layouts say what was expected."""
import json
import re

import pytest

from memclip_train.eval.retrieval_sets import LayoutError, load_retrieval_set
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


def rewrite_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def rewrite_jsonl(path, change):
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    change(rows)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def break_karpathy_sentence(root):
    rewrite_json(root / "dataset_coco.json", lambda d: d["images"][1]["sentences"].__setitem__(2, {"raw": None}))


def repeat_karpathy_image(root):
    rewrite_json(root / "dataset_coco.json", lambda d: d["images"].insert(1, dict(d["images"][0])))


def drop_karpathy_split(root):
    rewrite_json(root / "dataset_coco.json", lambda d: d["images"][2].pop("split"))


def empty_urban_caption(root):
    (root / "caption" / "2.txt").write_text("\n")


def repeat_docci_row(root):
    rewrite_jsonl(root / "docci_descriptions.jsonlines", lambda rows: rows.append(dict(rows[0])))


def null_docci_description(root):
    rewrite_jsonl(root / "docci_descriptions.jsonlines", lambda rows: rows[1].__setitem__("description", None))


def null_iiw_text(root):
    rewrite_jsonl(root / "datasets" / "DOCCI_Test" / "data.jsonl", lambda rows: rows[0].__setitem__("IIW", None))


def drop_dci_extra_caption(root):
    rewrite_json(root / "densely_captioned_images" / "annotations" / "sa_1.json", lambda a: a.pop("extra_caption"))


def repeat_dci_name(root):
    rewrite_json(root / "densely_captioned_images" / "splits.json", lambda s: s["test"].append("sa_0.json"))


def null_sharegpt4v_turn(root):
    path = root / "share-captioner_coco_lcs_sam_1246k_1107.json"
    rewrite_json(path, lambda entries: entries[4]["conversations"][1].__setitem__("value", None))


@pytest.mark.parametrize("fixture, name, variant, damage, named", [
    ("coco_root", "coco", None, break_karpathy_sentence, r"images\[1\] \(COCO_val2014_000000000001.jpg\) "
                                                          r"sentences\[2\]: 'raw' is null"),
    ("coco_root", "coco", None, repeat_karpathy_image, "lists an image listed before: it would be counted twice"),
    ("coco_root", "coco", None, drop_karpathy_split, r"images\[2\] .*has no 'split'"),
    ("urban_root", "urban1k", None, empty_urban_caption, r"caption/2.txt, line 1: is empty"),
    ("docci", "docci", None, repeat_docci_row, "line 5 .*describes an image described before"),
    ("docci", "docci", "sentence", null_docci_description, "line 2 .*'description' is null"),
    ("iiw", "iiw", "docci:full", null_iiw_text, "line 1 .*'IIW' is null"),
    ("dci", "dci", None, drop_dci_extra_caption, "sa_1.json, extra_caption: is missing"),
    ("dci", "dci", None, repeat_dci_name, "splits.json, sa_0.json: is listed twice"),
    ("sharegpt4v", "sharegpt4v-1k", None, null_sharegpt4v_turn, r"entry 4 .*first gpt turn is null"),
])
def test_a_bad_item_is_named_by_file_and_item_or_counted(request, long_roots, fixture, name, variant, damage, named):
    """Before: a null field ended in an AttributeError or KeyError traceback, an empty caption or a missing
    extra_caption stood in for the real one, and a repeated row or image was counted twice, all with exit 0."""
    root = long_roots[fixture] if fixture in long_roots else request.getfixturevalue(fixture)
    whole = load_retrieval_set(name, root, variant)
    damage(root)
    with pytest.raises(ValueError, match=named):
        load_retrieval_set(name, root, variant)
    counted = load_retrieval_set(name, root, variant, skip_bad=True)
    assert len(counted.bad_items) == 1 and re.search(named, str(counted.bad_items[0]))
    assert len(counted.captions) <= len(whole.captions), "what is left out is not counted twice either"


def test_flair_urban1k_rows_are_checked(tmp_path):
    flair = tmp_path / "flair"
    flair.mkdir()
    rows = [{"image": "image/1.jpg", "caption": "one"}, {"image": "image/1.jpg", "caption": "one"},
            {"image": "image/2.jpg", "caption": None}, {"caption": "no image"}, {"image": "image/3.jpg",
                                                                                 "caption": "three"}]
    (flair / "annotations.json").write_text(json.dumps({"annotations": rows}))
    with pytest.raises(ValueError, match=r"annotations\[1\] \(image/1.jpg\): repeats a row"):
        load_retrieval_set("urban1k", flair)
    counted = load_retrieval_set("urban1k", flair, skip_bad=True)
    assert counted.captions == ["one", "three"] and len(counted.bad_items) == 3


def test_a_set_without_any_usable_caption_is_a_layout_error(tmp_path):
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"images": [
        {"filename": "a.jpg", "split": "test", "sentences": []}]}))
    with pytest.raises(LayoutError, match="no image with a usable caption"):
        load_retrieval_set("coco", tmp_path)


@pytest.mark.parametrize("name, variant", [("synth-short", "../../../escape"), ("urban1k", "x"),
                                           ("coco", "val2017/../../x")])
def test_unknown_variants_are_refused(name, variant):
    """A dataset without variants used to accept any, and write its result outside the results folder."""
    with pytest.raises(ValueError, match=f"unknown variant {variant!r}"):
        load_retrieval_set(name, "/tmp", variant)
