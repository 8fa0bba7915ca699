"""16-bit images are scaled to 8 bits, not clipped (the eval readers' use: tests/memclip_train/eval/test_eval_retrieval.py)."""
import numpy as np
import pytest
from PIL import Image

from memclip_train.image_modes import to_rgb


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_sixteen_bit_grayscale_is_scaled(tmp_path, mode):
    values = np.array([[0, 257, 128 * 257, 65535]], dtype=np.uint16)
    image = Image.fromarray(values) if mode == "I;16" else Image.fromarray(values.astype(np.int32), mode="I")
    assert image.mode == mode
    assert np.asarray(to_rgb(image))[0, :, 0].tolist() == [0, 1, 128, 255]
    assert to_rgb(Image.new("RGBA", (2, 2), (10, 20, 30, 40))).getpixel((0, 0)) == (10, 20, 30)
