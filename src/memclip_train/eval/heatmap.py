"""Text -> patch similarity maps over an image (thesis Fig. 5.1)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from ..image_modes import to_rgb  # noqa: E402
from ..features import check_finite  # noqa: E402
from .segmentation.dense import dense_features  # noqa: E402


@torch.no_grad()
def similarity_map(model: torch.nn.Module, preprocess: Callable, tokenizer: Callable, image: Image.Image, text: str,
                   device: torch.device, method: str = "sclip", model_name: str = "") -> np.ndarray:
    """Cosine similarity of each patch's dense feature with the text embedding: (grid_h, grid_w) float32.

    Raises:
        NonFiniteFeaturesError: the model (``model_name``) gives NaN or infinite features.
    """
    pixels = preprocess(to_rgb(image)).unsqueeze(0).to(device)
    patches = dense_features(model.visual, pixels, method)[0]
    check_finite(patches[None].cpu(), model_name, "patch", lambda _: "the image")
    text_features = F.normalize(model.encode_text(tokenizer([text]).to(device)).float(), dim=-1)
    check_finite(text_features.cpu(), model_name, "caption", lambda _: repr(text))
    return (patches @ text_features[0]).cpu().numpy()


def draw_heatmaps(path: Path, image: Image.Image, maps: Sequence[np.ndarray], titles: Sequence[str]) -> Path:
    """Write a PNG: the image, then each map upsampled over it, coloured by cosine similarity with a labelled colour
    bar (the scale spans that map's own range, so maps of different models can be compared by their bars)."""
    image = to_rgb(image)
    figure, axes = plt.subplots(1, len(maps) + 1, figsize=(3.4 * (len(maps) + 1), 3.6))
    axes = np.atleast_1d(axes)
    axes[0].imshow(image)
    axes[0].set_title("image", fontsize=9)
    for axis, similarity, title in zip(axes[1:], maps, titles):
        low, high = float(similarity.min()), float(similarity.max())
        upsampled = F.interpolate(torch.as_tensor(similarity, dtype=torch.float32)[None, None],
                                  size=(image.size[1], image.size[0]), mode="bilinear", align_corners=False)[0, 0]
        axis.imshow(image)
        shown = axis.imshow(upsampled.numpy(), cmap="jet", alpha=0.5, vmin=low, vmax=high)
        bar = figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04)
        bar.set_label("cosine similarity (text, patch)", fontsize=7)
        bar.ax.tick_params(labelsize=7)
        axis.set_title(title, fontsize=8, wrap=True)
    for axis in axes:
        axis.axis("off")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
