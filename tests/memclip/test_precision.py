"""memclip.precision: one list of precision names, one autocast per precision (open_clip_train's rule)."""
import pytest
import torch

from memclip import factory, precision
from memclip_train import params


def test_one_list_of_precisions():
    assert params.PRECISIONS is precision.PRECISIONS and factory.PRECISIONS is precision.PRECISIONS
    assert set(precision.FP32_WEIGHT_PRECISIONS) < set(precision.PRECISIONS)


@pytest.mark.parametrize("name, dtype", [("amp", torch.float16), ("amp_bf16", torch.bfloat16),
                                         ("amp_bfloat16", torch.bfloat16), ("fp32", None), ("bf16", None),
                                         ("pure_fp16", None)])
def test_autocast_only_for_the_amp_precisions(name, dtype):
    layer = torch.nn.Linear(4, 4)
    with precision.autocast_for(name, "cpu")():
        out = layer(torch.randn(2, 4))
    if dtype == torch.float16 and out.dtype == torch.float32:
        pytest.skip("this torch has no fp16 autocast on the CPU")
    assert out.dtype == (dtype or torch.float32)


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision='fp8'"):
        precision.autocast_for("fp8", torch.device("cpu"))
