"""The data pipeline: decoding, skipping and counting bad samples, CSV, and exact resumption of a stream."""
import io
import json
import logging
import re
import shutil
import tarfile

import pytest
import torch
from PIL import Image
from train_helpers import assert_resumes_exactly, deadline

import memclip
from memclip_train.data.captions import first_sentence
from memclip_train.data.csv_stream import CsvStream
from memclip_train.data.samples import SampleDecoder, SampleFields
from memclip_train.data.shard_stream import NoSamplesError, ShardStream, StreamPosition
from memclip_train.data.shard_writer import ShardWriter
from memclip_train.data.sources import expand_urls, resolve_webdataset
from memclip_train.tasks.build import transforms


@pytest.fixture(scope="module")
def decoder_parts():
    model = memclip.create_model("Test-Micro")
    train, _ = transforms(model)
    return train, memclip.get_tokenizer("Test-Micro")


def jpeg(colour=(200, 0, 0)):
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buffer, "JPEG")
    return buffer.getvalue()


def keys_of(batches):
    return [b["_consumed"] for b in batches]


def stream_batches(stream, epoch=0, resume=None):
    stream.set_epoch(epoch, resume)
    return list(stream)


def test_bad_samples_are_skipped_and_counted(tmp_path, decoder_parts):
    with ShardWriter(tmp_path, samples_per_shard=100) as writer:
        for index in range(10):
            fields = {"jpg": jpeg(), "txt": f"caption {index}"}
            if index == 3:
                fields["jpg"] = b"definitely not a jpeg"
            if index == 5:
                fields = {"jpg": jpeg()}
            writer.write(f"{index:04d}", fields)
    preprocess, tokenizer = decoder_parts
    decoder = SampleDecoder(SampleFields(captions=("text",)), preprocess, tokenizer)
    stream = ShardStream([str(tmp_path / "000000.tar")], decoder, batch_size=4, batches_per_worker=None)
    batches = stream_batches(stream)
    assert sum(len(b["image"]) for b in batches) == 8
    assert batches[-1]["_skipped"] == {"undecodable image": 1, "no caption": 1}


def test_truncation_and_first_sentence_fallback(tmp_path, decoder_parts):
    long = "A red star sits in the corner. " + " ".join(["blue ring"] * 60)
    with ShardWriter(tmp_path, samples_per_shard=100) as writer:
        writer.write("0", {"jpg": jpeg(), "json": {"long": long}})
        writer.write("1", {"jpg": jpeg(), "txt": "a green cross", "json": {"long": "A green cross."}})
    preprocess, tokenizer = decoder_parts
    decoder = SampleDecoder(SampleFields(captions=("long", "short")), preprocess, tokenizer)
    batch = stream_batches(ShardStream([str(tmp_path / "000000.tar")], decoder, 2, None))[0]
    assert int(batch["long_cut"]) == 1 and int(batch["short_cut"]) == 0
    expected_short = tokenizer([first_sentence(long), "a green cross"])
    assert torch.equal(batch["short"], expected_short)
    assert torch.equal(batch["long"][1], tokenizer(["A green cross."])[0])


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_stream_continues_exactly(micro_world, decoder_parts, workers):
    preprocess, tokenizer = decoder_parts
    urls = expand_urls(str(micro_world / "train" / "{000000..000001}.tar"))

    def make():
        decoder = SampleDecoder(SampleFields(captions=("text",)), preprocess, tokenizer, seed=3)
        stream = ShardStream(urls, decoder, batch_size=8, batches_per_worker=6 if workers else 12, seed=3,
                             shuffle_buffer=20)
        return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers), stream

    loader, stream = make()
    stream.set_epoch(2)
    full = list(loader)
    assert len(full) == 12
    # The loader deals batches round-robin from worker 0, so a resume point is a multiple of the worker count
    # (the trainer only saves mid-epoch at such points).
    cut = 5 if workers == 0 else 6
    assert_resumes_exactly(make, 2, full, cut)
    loader, stream = make()
    stream.set_epoch(3)
    assert not torch.equal(next(iter(loader))["image"], full[0]["image"]), "another epoch reshuffles"


def test_augmentation_does_not_depend_on_where_the_shards_live(micro_world, decoder_parts, tmp_path):
    preprocess, tokenizer = decoder_parts
    copy = tmp_path / "elsewhere" / "000000.tar"
    copy.parent.mkdir()
    shutil.copy(micro_world / "train" / "000000.tar", copy)

    def first_batch(url, seed=0, epoch=0):
        decoder = SampleDecoder(SampleFields(captions=("text",)), preprocess, tokenizer, seed=seed)
        return stream_batches(ShardStream([str(url)], decoder, 16, None, seed=seed), epoch)[0]["image"]

    original = first_batch(micro_world / "train" / "000000.tar")
    assert torch.equal(original, first_batch(copy)), "the same shard in another folder must be augmented the same way"
    assert torch.equal(original, first_batch(f"pipe:cat {copy}"))
    assert not torch.equal(original, first_batch(copy, epoch=1)), "another epoch draws other crops"
    assert not torch.equal(original, first_batch(copy, seed=1)), "another seed draws other crops"


def test_decoding_seeds_only_its_own_cpu_draws(decoder_parts, monkeypatch):
    """Each sample's crop comes from a per-sample seed; the caller's CPU generator is restored afterwards and the
    CUDA generators (which the training process may use) are never reseeded."""
    preprocess, tokenizer = decoder_parts
    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: reseeded.append(seed))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: reseeded.append(seed))
    decoder = SampleDecoder(SampleFields(captions=("text",)), preprocess, tokenizer, seed=5)
    raw = {"__url__": "shard.tar", "__key__": "a", "jpg": jpeg(), "txt": b"a red square"}
    torch.manual_seed(123)
    reseeded.clear()
    before = torch.get_rng_state()
    first, second = decoder(raw)["image"], decoder(raw)["image"]
    assert torch.equal(first, second), "the same sample, seed and epoch must be cropped the same way"
    assert torch.equal(torch.get_rng_state(), before), "decoding must not move the caller's CPU generator"
    assert reseeded == [], "decoding must not reseed the CUDA generators"


def test_epoch_cycles_shards_to_fill_its_batches(micro_world, decoder_parts):
    preprocess, tokenizer = decoder_parts
    decoder = SampleDecoder(SampleFields(captions=("text",)), preprocess, tokenizer)
    stream = ShardStream([str(micro_world / "train" / "000000.tar")], decoder, 16, batches_per_worker=5)
    assert len(stream_batches(stream)) == 5  # 80 samples from a 48-sample shard


def test_ranks_read_disjoint_samples(micro_world, decoder_parts):
    preprocess, tokenizer = decoder_parts
    urls = expand_urls(str(micro_world / "train" / "{000000..000001}.tar"))
    seen = []
    for rank in range(2):
        decoder = SampleDecoder(SampleFields(captions=("text",)), preprocess, tokenizer)
        stream = ShardStream(urls, decoder, 8, batches_per_worker=6, rank=rank, world_size=2)
        seen.append(torch.cat([b["text"] for b in stream_batches(stream)]))
    rows_a = {tuple(r.tolist()) for r in seen[0]}
    rows_b = {tuple(r.tolist()) for r in seen[1]}
    assert len(rows_a) > 10 and len(rows_a & rows_b) < min(len(rows_a), len(rows_b))


def test_csv_stream(tmp_path, decoder_parts):
    for index in range(6):
        Image.new("RGB", (32, 32), (index * 40, 0, 0)).save(tmp_path / f"{index}.jpg")
    table = tmp_path / "train.csv"
    table.write_text("filepath\ttitle\ngone.jpg\tx\n" + "".join(f"{i}.jpg\tred patch {i}\n" for i in range(6)))
    preprocess, tokenizer = decoder_parts
    decoder = SampleDecoder(SampleFields(captions=("text",)), preprocess, tokenizer)
    stream = CsvStream(str(table), decoder, batch_size=3, batches_per_worker=None)
    batches = stream_batches(stream)
    assert sum(len(b["image"]) for b in batches) == 6 and batches[-1]["_skipped"] == {"no image": 1}
    with pytest.raises(ValueError, match="missing columns \\['caption'\\]"):
        CsvStream(str(table), decoder, 3, None, caption_key="caption")


def test_sample_counts(micro_world, tmp_path):
    urls, total = resolve_webdataset(str(micro_world / "train" / "{000000..000001}.tar"), None, "--train-data")
    assert len(urls) == 2 and total == 96
    assert resolve_webdataset(str(micro_world / "train" / "000000.tar"), None, "--train-data")[1] == 48
    assert resolve_webdataset(str(micro_world / "train" / "000000.tar") + "::" +
                              str(micro_world / "val" / "000000.tar"), None, "--train-data")[1] == 80
    with pytest.raises(FileNotFoundError, match="2 shards do not exist"):
        resolve_webdataset(str(tmp_path / "{0..1}.tar"), None, "--train-data")


def write_shard(folder, count, change=None):
    """``count`` samples with an image, a caption and a long caption; ``change(index, fields)`` edits one."""
    with ShardWriter(folder, samples_per_shard=1000) as writer:
        for index in range(count):
            fields = {"jpg": jpeg(), "txt": f"caption {index}", "json": {"long": f"A long caption {index}."}}
            if change is not None:
                change(index, fields)
            writer.write(f"{index:04d}", fields)
    return folder / "000000.tar"


def test_bad_text_is_skipped_and_counted(tmp_path, decoder_parts, caplog):
    def spoil(index, fields):
        if index == 7:
            fields["txt"] = b"a red \xff\xfe circle"
        if index == 8:
            fields["json"] = b'{"long": "unterminated'

    shard = write_shard(tmp_path, 10, spoil)
    preprocess, tokenizer = decoder_parts
    decoder = SampleDecoder(SampleFields(captions=("long", "short")), preprocess, tokenizer)
    with caplog.at_level(logging.DEBUG, logger="memclip_train"):
        batches = stream_batches(ShardStream([str(shard)], decoder, batch_size=4, batches_per_worker=None))
    assert sum(len(b["image"]) for b in batches) == 8
    assert batches[-1]["_skipped"] == {"bad text": 2}
    assert f"{shard}/0007" in caplog.text and f"{shard}/0008" in caplog.text


def test_skip_counts_are_per_sample_not_per_reread(tmp_path, decoder_parts):
    shard = write_shard(tmp_path, 10, lambda index, fields: fields.update(jpg=b"broken") if index == 2 else None)
    preprocess, tokenizer = decoder_parts
    decoder = SampleDecoder(SampleFields(captions=("text",)), preprocess, tokenizer)
    batches = stream_batches(ShardStream([str(shard)], decoder, batch_size=4, batches_per_worker=8))
    assert len(batches) == 8  # 32 samples: the 9 good ones read about four times
    assert batches[-1]["_skipped"] == {"undecodable image": 1}


def test_a_shard_cut_at_a_member_boundary_is_reported(tmp_path, decoder_parts, caplog):
    shard = write_shard(tmp_path, 10)
    with tarfile.open(shard) as tar:
        cut = next(m.offset for m in tar.getmembers() if m.name.startswith("0007."))
    with open(shard, "r+b") as file:
        file.truncate(cut)
    preprocess, tokenizer = decoder_parts
    decoder = SampleDecoder(SampleFields(captions=("text",)), preprocess, tokenizer)
    batches = stream_batches(ShardStream([str(shard)], decoder, batch_size=4, batches_per_worker=None))
    assert sum(len(b["image"]) for b in batches) == 7
    assert batches[-1]["_skipped"] == {"short shard": 3}
    assert "read 7 of the 10 samples" in caplog.text and str(shard) in caplog.text


@pytest.mark.parametrize("spoil", ["not a tar", "no decodable image"])
def test_a_stream_with_no_usable_sample_stops_instead_of_cycling(tmp_path, decoder_parts, spoil):
    if spoil == "not a tar":
        shard = tmp_path / "000000.tar"
        shard.write_text("this is a text file, not a tar archive\n")
        expected = "corrupt tar data"
    else:
        shard = write_shard(tmp_path, 5, lambda index, fields: fields.update(jpg=b"broken"))
        expected = "undecodable image: 5"
    preprocess, tokenizer = decoder_parts
    decoder = SampleDecoder(SampleFields(captions=("text",)), preprocess, tokenizer)
    stream = ShardStream([str(shard)], decoder, batch_size=4, batches_per_worker=3, shuffle_buffer=10)
    with deadline(60, "a stream of unusable shards"), pytest.raises(NoSamplesError) as error:
        stream_batches(stream)
    assert str(shard) in str(error.value) and expected in str(error.value)


def test_a_stream_with_one_good_sample_among_bad_ones_still_fills_its_batches(tmp_path, decoder_parts):
    shard = write_shard(tmp_path, 30, lambda index, fields: fields.update(jpg=b"broken") if index != 17 else None)
    preprocess, tokenizer = decoder_parts
    decoder = SampleDecoder(SampleFields(captions=("text",)), preprocess, tokenizer)
    stream = ShardStream([str(shard)], decoder, batch_size=2, batches_per_worker=3, shuffle_buffer=100)
    with deadline(60, "a stream with one good sample"):
        assert len(stream_batches(stream)) == 3


def test_a_malformed_csv_source_is_named_with_its_line(tmp_path, decoder_parts):
    table = tmp_path / "train.csv"
    table.write_text("filepath\ttitle\n0.jpg\tred\n1.jpg\tblue\textra\tcolumns\n")
    preprocess, tokenizer = decoder_parts
    decoder = SampleDecoder(SampleFields(captions=("text",)), preprocess, tokenizer)
    with pytest.raises(ValueError, match=f"{re.escape(str(table))}: .*line 3"):
        CsvStream(str(table), decoder, batch_size=3, batches_per_worker=None)


def test_any_sample_whose_text_cannot_be_decoded_is_skipped_and_counted(tmp_path, decoder_parts):
    def spoil(index, fields):
        if index == 2:
            fields["json"] = ("[" * 200_000 + "]" * 200_000).encode()  # a RecursionError in json.loads
        if index == 4:
            fields["json"] = b'{"long": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"

    shard = write_shard(tmp_path, 8, spoil)
    preprocess, tokenizer = decoder_parts
    decoder = SampleDecoder(SampleFields(captions=("long", "short")), preprocess, tokenizer)
    batches = stream_batches(ShardStream([str(shard)], decoder, batch_size=2, batches_per_worker=None))
    assert sum(len(b["image"]) for b in batches) == 6
    assert batches[-1]["_skipped"] == {"bad text": 2}


def test_a_caption_that_is_not_text_is_skipped_and_counted_never_stringified(tmp_path, decoder_parts):
    def spoil(index, fields):
        if index == 1:
            fields["json"] = {"long": ["a red star", "a blue ring"]}
        if index == 3:
            fields["json"] = {"long": 12}
        if index == 5:
            fields["json"] = ["not", "an", "object"]
        if index == 6:
            fields["json"] = {"long": None}  # null: absent, the short caption stands in (and is counted)

    shard = write_shard(tmp_path, 8, spoil)
    preprocess, tokenizer = decoder_parts
    decoder = SampleDecoder(SampleFields(captions=("long", "short")), preprocess, tokenizer)
    batches = stream_batches(ShardStream([str(shard)], decoder, batch_size=5, batches_per_worker=None))
    assert sum(len(b["image"]) for b in batches) == 5
    assert batches[-1]["_skipped"] == {"caption not text": 3}
    assert sum(int(b["long_missing"]) for b in batches) == 1 and sum(int(b["short_missing"]) for b in batches) == 0


def test_stand_in_captions_are_counted(tmp_path, decoder_parts):
    def change(index, fields):
        if index < 3:
            del fields["json"]  # no long caption: the short one stands in
        elif index < 5:
            del fields["txt"]  # no short caption: the long one's first sentence stands in

    shard = write_shard(tmp_path, 8, change)
    preprocess, tokenizer = decoder_parts
    decoder = SampleDecoder(SampleFields(captions=("long", "short")), preprocess, tokenizer)
    batches = stream_batches(ShardStream([str(shard)], decoder, batch_size=4, batches_per_worker=None))
    assert [int(b["long_missing"]) for b in batches] == [3, 0]
    assert [int(b["short_missing"]) for b in batches] == [1, 1]


@pytest.mark.parametrize("name", ["../elsewhere/000000.tar", "/tmp/000000.tar", "..", "sub/000000.tar"])
def test_sizes_json_names_only_shards_in_its_folder(tmp_path, name):
    folder = tmp_path / "train"
    write_shard(folder, 3)
    (folder / "sizes.json").write_text(json.dumps({"000000.tar": 3, name: 3}))
    with pytest.raises(ValueError, match=re.escape(f"the shard name {name!r} is not a file in {folder}")):
        resolve_webdataset(str(folder), None, "--train-data")
    with pytest.raises(ValueError, match="not a file in"):
        resolve_webdataset(str(folder / "000000.tar"), None, "--train-data")


@pytest.mark.parametrize("sizes,named", [("[1, 2]", "got a list"), ('{"000000.tar": "3"}', "'3' is not an integer"),
                                         ('{"000000.tar": -1}', "-1 is not an integer"), ("{", "not a readable json"),
                                         ('{"000000.tar": 0}', "lists no sample")])
def test_a_malformed_sizes_json_is_named(tmp_path, sizes, named):
    folder = tmp_path / "train"
    write_shard(folder, 3)
    (folder / "sizes.json").write_text(sizes)
    with pytest.raises(ValueError, match=re.escape(named)):
        resolve_webdataset(str(folder / "000000.tar"), None, "--train-data")


def test_a_shard_listed_twice_is_reported(micro_world, caplog):
    shard = str(micro_world / "train" / "000000.tar")
    assert resolve_webdataset(f"{shard}::{shard}", None, "--train-data")[1] == 96
    assert "lists 1 shard more than once" in caplog.text and shard in caplog.text


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_stream_whose_shards_all_became_unreadable_stops_instead_of_hanging(tmp_path, decoder_parts,
                                                                                       workers):
    shards = [tmp_path / f"{index:06d}.tar" for index in range(2)]
    for shard in shards:
        shard.write_text("garbage where a shard was\n")
    preprocess, tokenizer = decoder_parts
    decoder = SampleDecoder(SampleFields(captions=("text",)), preprocess, tokenizer)
    stream = ShardStream([str(s) for s in shards], decoder, batch_size=4, batches_per_worker=4, shuffle_buffer=10)
    stream.set_epoch(0, StreamPosition(consumed={0: 9, 1: 9}, batches={0: 2, 1: 2}))  # stopped mid-epoch
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers)
    with deadline(60, "a resumed stream of unreadable shards"), pytest.raises(NoSamplesError) as error:
        list(loader)
    assert str(shards[0]) in str(error.value) and "corrupt tar data" in str(error.value)


def test_a_resumed_stream_that_passes_over_whole_passes_still_fills_its_batches(tmp_path, decoder_parts):
    shard = write_shard(tmp_path, 6)
    preprocess, tokenizer = decoder_parts
    decoder = SampleDecoder(SampleFields(captions=("text",)), preprocess, tokenizer)
    stream = ShardStream([str(shard)], decoder, batch_size=2, batches_per_worker=9, shuffle_buffer=1)
    stream.set_epoch(0, StreamPosition(consumed={0: 14}, batches={0: 7}))  # more than two passes consumed
    with deadline(60, "a resumed stream"):
        assert len(list(stream)) == 2


def test_a_table_without_rows_is_refused(tmp_path, decoder_parts):
    table = tmp_path / "train.csv"
    table.write_text("filepath\ttitle\n")
    preprocess, tokenizer = decoder_parts
    decoder = SampleDecoder(SampleFields(captions=("text",)), preprocess, tokenizer)
    with pytest.raises(ValueError, match=f"{re.escape(str(table))}: the table has no rows"):
        CsvStream(str(table), decoder, batch_size=3, batches_per_worker=None)
