"""The thesis's evaluation splits: Flickr30k's Karpathy val, FLAIR's fine-grained IIW and DOCCI sentences, FLAIR's
Urban-1k and COCO layouts, each built here in its official layout (annotation files at full size, no images needed
to load them)."""
import json

import pytest

from memclip_train.eval.retrieval_sets import LayoutError, load_retrieval_set
from memclip_train.eval.__main__ import main as eval_main
from memclip_train.eval.retrieval_sets import SplitSizeError

from eval_files import image

# FLAIR's imageinwords/test_annotations.json: images and sentences per subset folder (612 and 6,204 in all)
IIW_FLAIR = {"docci_aar": (400, 3761), "dci": (112, 1342), "docci": (100, 1101)}
IIW_RELEASE = {"IIW-400": ("image/key", "aar_test_{:05d}", 400), "DCI_Test": ("image", "sa_{}.jpg", 112),
               "DOCCI_Test": ("image", "test_{:05d}", 100)}


def write_karpathy_flickr(root, val_images):
    images = [{"filename": f"{i}.jpg", "split": "val" if i < val_images else "test",
               "sentences": [{"raw": f"val {i} caption {j}"} for j in range(5)]} for i in range(val_images + 3)]
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_flickr30k.json").write_text(json.dumps({"images": images}))
    return root


def flair_iiw_rows(drop_rows=0):
    """Rows of FLAIR's fine-grained IIW file: image_id per image, consecutive caption_ids, one sentence per row."""
    rows, image_id = [], 0
    for folder, (images, sentences) in IIW_FLAIR.items():
        per_image = [sentences // images + (i < sentences % images) for i in range(images)]
        for i, count in enumerate(per_image):
            for j in range(count):
                rows.append({"image_id": image_id, "image": f"{folder}/{folder}_{i}.jpg",
                             "caption": f"{folder} image {i} sentence {j}. Still the same sentence, as FLAIR cut it",
                             "caption_id": len(rows)})
            image_id += 1
    return rows[:len(rows) - drop_rows]


def write_flair_iiw(root, rows):
    root.mkdir(parents=True, exist_ok=True)
    (root / "test_annotations.json").write_text(json.dumps({"annotations": rows}))
    return root


def write_iiw_release(root, flair_layout=False):
    """google/imageinwords' datasets/<subset>/data.jsonl (or FLAIR's <subset>/data.jsonl): two sentences each."""
    folders = {"IIW-400": "docci_aar", "DCI_Test": "dci", "DOCCI_Test": "docci"}
    for subset, (key, name, count) in IIW_RELEASE.items():
        folder = root / subset if flair_layout else root / "datasets" / subset
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "data.jsonl").write_text("\n".join(json.dumps(
            {key: name.format(i), "IIW": f"{subset} image {i} first. Then a second sentence."})
            for i in range(count)) + "\n")
    return root, folders


def test_flickr30k_karpathy_val_is_the_1014_image_split(tmp_path):
    root = write_karpathy_flickr(tmp_path / "flickr", 1014)
    val = load_retrieval_set("flickr30k", root, "karpathy-val")
    assert len(val.images) == 1014 and len(val.captions) == 5070 and val.meta["variant"] == "karpathy-val"
    assert val.images[0] == root / "flickr30k-images" / "0.jpg" and "Karpathy val" in val.meta["split"]
    assert len(load_retrieval_set("flickr30k", root).images) == 3  # the default stays the 1k test split
    short = write_karpathy_flickr(tmp_path / "short", 1013)
    with pytest.raises(SplitSizeError, match="1,013 images / 5,065 captions, but the split has 1,014 images"):
        load_retrieval_set("flickr30k", short, "karpathy-val")


def test_flickr30k_karpathy_val_reads_flairs_file(tmp_path):
    root = tmp_path / "datasets" / "flickr30k-images"  # FLAIR's --flickr-data-root-dir: the image folder itself
    root.mkdir(parents=True)
    entries = [{"image": f"flickr30k-images/{1000 + i}.jpg", "caption": [f"flair {i} {j}" for j in range(5)]}
               for i in range(1014)]
    (root / "flickr30k_val.json").write_text(json.dumps(entries))
    val = load_retrieval_set("flickr30k", root, "karpathy-val")
    assert len(val.images) == 1014 and val.images[0] == root / "1000.jpg" and val.captions[5] == "flair 1 0"
    assert val.meta["annotations"] == "FLAIR flickr30k_val.json"
    (root / "flickr30k_val.json").write_text(json.dumps(entries[:-1]))
    with pytest.raises(SplitSizeError):
        load_retrieval_set("flickr30k", root, "karpathy-val")


def test_iiw_all_sentence_reads_flairs_finegrained_file_and_checks_its_counts(tmp_path):
    root = write_flair_iiw(tmp_path / "imageinwords", flair_iiw_rows())
    iiw = load_retrieval_set("iiw", root, "all:sentence")
    assert len(iiw.images) == 612 and len(iiw.captions) == 6204
    assert iiw.meta["subset_images"] == {"IIW-400": 400, "DCI_Test": 112, "DOCCI_Test": 100}
    assert iiw.images[0] == root / "docci_aar" / "docci_aar_0.jpg"
    # FLAIR's sentences as they are: our splitter would have cut this caption in two
    assert iiw.captions[0] == "docci_aar image 0 sentence 0. Still the same sentence, as FLAIR cut it"
    assert iiw.text_to_image[:11] == [0] * 10 + [1] and "FLAIR" in iiw.meta["caption_preprocessing"]
    edited = write_flair_iiw(tmp_path / "edited", flair_iiw_rows(drop_rows=1))
    with pytest.raises(SplitSizeError, match="612 images / 6,203 captions, but the split has 612 images / 6,204"):
        load_retrieval_set("iiw", edited, "all:sentence")
    rows = flair_iiw_rows()
    rows[5]["image"] = "docci_aar/another.jpg"  # the same image_id now names two images
    with pytest.raises(LayoutError, match="disagree with an earlier row"):
        load_retrieval_set("iiw", write_flair_iiw(tmp_path / "clash", rows), "all:sentence")


def test_iiw_all_from_the_release_uses_our_splitter_and_checks_the_612_images(tmp_path):
    root, _ = write_iiw_release(tmp_path / "release")
    full = load_retrieval_set("iiw", root, "all:full")
    assert len(full.images) == 612 and len(full.captions) == 612
    assert full.images[0] == root / "images" / "IIW-400" / "aar_test_00000.jpg"
    assert full.images[400] == root / "images" / "DCI_Test" / "sa_0.jpg"
    sentences = load_retrieval_set("iiw", root, "all:sentence")
    assert len(sentences.captions) == 2 * 612 and "memclip's splitter" in sentences.meta["caption_preprocessing"]
    (root / "datasets" / "DCI_Test" / "data.jsonl").write_text(json.dumps({"image": "sa_0.jpg", "IIW": "x."}) + "\n")
    with pytest.raises(LayoutError, match="the three subsets whole"):
        load_retrieval_set("iiw", root, "all:full")


def test_iiw_subsets_read_flairs_jsonl_layout(tmp_path):
    root, _ = write_iiw_release(tmp_path / "imageinwords", flair_layout=True)
    dci = load_retrieval_set("iiw", root, "dci:full")
    assert len(dci.images) == 112 and dci.images[0] == root / "dci" / "sa_0.jpg"
    image(root / "docci_aar" / "aar_test_00000.jpg", 0)
    assert load_retrieval_set("iiw", root, "iiw400:full").images[0] == root / "docci_aar" / "aar_test_00000.jpg"


def test_docci_sentence_prefers_flairs_sentences(long_roots):
    root = long_roots["docci"]
    ours = load_retrieval_set("docci", root, "sentence")
    assert ours.captions[:2] == ["Docci description 0.", "More text."] and "splitter" in \
        ours.meta["caption_preprocessing"]
    rows = [{"image_id": i, "image": f"test_{i:05d}.jpg", "caption": f"FLAIR sentence {j} of {i}. Unsplit"}
            for i in range(5000) for j in range(2)]
    (root / "annotations").mkdir()
    (root / "annotations" / "test_annotations.json").write_text(json.dumps({"annotations": rows}))
    flair = load_retrieval_set("docci", root, "sentence")
    assert len(flair.images) == 5000 and len(flair.captions) == 10000
    assert flair.captions[0] == "FLAIR sentence 0 of 0. Unsplit" and flair.images[1] == root / "images" / \
        "test_00001.jpg"
    assert flair.meta["annotations"] == "FLAIR test_annotations.json"
    assert load_retrieval_set("docci", root).captions[0] == "Docci description 0. More text."  # full: the release
    (root / "annotations" / "test_annotations.json").write_text(json.dumps({"annotations": rows[:-2]}))
    with pytest.raises(SplitSizeError, match="4,999 images"):
        load_retrieval_set("docci", root, "sentence")


def test_urban1k_reads_flairs_annotations_and_images_folders(tmp_path):
    root = tmp_path / "Urban1k"
    (root / "annotations").mkdir(parents=True)
    rows = [{"image_id": i, "image": f"{i + 1}.jpg", "caption": f" Urban {i}. " if i != 1 else ""} for i in range(3)]
    (root / "annotations" / "annotations.json").write_text(json.dumps({"annotations": rows}))
    urban = load_retrieval_set("urban1k", root)
    assert urban.images == [root / "images" / f"{i}.jpg" for i in (1, 2, 3)]
    assert urban.captions == ["Urban 0.", "", "Urban 2."] and urban.meta["empty_captions"] == 1


def test_coco_val2017_reads_flairs_images_folder(coco_root):
    (coco_root / "images").mkdir()
    (coco_root / "val2017").rename(coco_root / "images" / "val2017")
    val2017 = load_retrieval_set("coco", coco_root, "val2017")
    assert val2017.images[0] == coco_root / "images" / "val2017" / "000000000007.jpg"


def test_a_split_of_the_wrong_size_is_a_one_line_error(tmp_path, capsys, micro_configs):
    root = write_karpathy_flickr(tmp_path / "flickr", 20)
    assert eval_main(["retrieval", "--model", "Test-Micro", "--dataset", "flickr30k@karpathy-val", "--data-root",
                      str(root), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "error: flickr30k@karpathy-val" in err and "1,014 images" in err and "Traceback" not in err
