"""`SynthResults` reads ``eval synth``'s results once, for the demo's report and the teacher's record alike."""
import json

import pytest

from memclip_train.report.synth_results import SynthResults


def results_file(tmp_path):
    data = {
        "retrieval": {"m": {"synth-long": {"metrics": {"t2i_R@1": 40.0}, "ranks": {"t2i": [1, 3], "i2t": [2, 1]},
                                           "captions_cut": 5, "context_length": 77, "memory_usage": {}}}},
        "semantics": {"m": {"metrics": {"semantic_t2i_R@1": 90.0}, "hits": {"semantic_t2i_R@1": [1, 0]}}},
        "zeroshot": {"m": {"synth-shapes": {"metrics": {"top1": 80.0}, "ranks": [0, 2]}}},
        "pairs": {"m": {"i2t": 25.0, "per_pattern": {"colour": {"i2t_single": 60.0}}}},
        "segmentation": {"m [sclip, linear probe]": {"synth": {"mIoU": 30.0}},
                         "m [sclip]": {"synth": {"mIoU": 20.0, "overlays": []}},
                         "m2 [sclip]": {"synth": {"mIoU": 1.0}}},
    }
    (tmp_path / "synth_results.json").write_text(json.dumps(data))
    return tmp_path / "synth_results.json"


def test_every_section_is_read_by_label(tmp_path):
    results = SynthResults.from_json(results_file(tmp_path))
    assert SynthResults.from_json(tmp_path) == results  # the folder that holds it works too
    assert results.retrieval_metric("m", "synth-long", "t2i_R@1") == 40.0
    assert results.retrieval_ranks("m", "synth-long", "i2t") == [2, 1]
    assert results.retrieval_detail("m", "synth-long", "captions_cut") == 5
    assert results.semantic_metrics("m") == {"semantic_t2i_R@1": 90.0}
    assert results.semantic_hits("m", "semantic_t2i_R@1") == [1, 0]
    assert results.zeroshot_datasets("m") == ["synth-shapes"] and results.zeroshot_top1("m", "synth-shapes") == 80.0
    assert results.zeroshot_ranks("m", "synth-shapes") == [0, 2]
    assert results.pair_scores("m")["i2t"] == 25.0


def test_segmentation_tells_the_zero_shot_result_from_the_probe_and_labels_apart(tmp_path):
    results = SynthResults.from_json(results_file(tmp_path))
    assert results.segmentation_result("m")["mIoU"] == 20.0       # listed after its probe, still found
    assert results.segmentation_result("m", probe=True)["mIoU"] == 30.0
    with pytest.raises(KeyError, match="linear-probe segmentation result of 'm2'"):
        results.segmentation_result("m2", probe=True)
