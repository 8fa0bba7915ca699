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

from .segmentation.dense import dense_features  # noqa: E402


@torch.no_grad()
def similarity_map(model: torch.nn.Module, preprocess: Callable, tokenizer: Callable, image: Image.Image, text: str,
                   device: torch.device, method: str = "sclip") -> np.ndarray:
    """Cosine similarity of each patch's dense feature with the text embedding: (grid_h, grid_w) float32."""
    pixels = preprocess(image.convert("RGB")).unsqueeze(0).to(device)
    patches = dense_features(model.visual, pixels, method)[0]
    text_features = F.normalize(model.encode_text(tokenizer([text]).to(device)).float(), dim=-1)[0]
    return (patches @ text_features).cpu().numpy()


def draw_heatmaps(path: Path, image: Image.Image, maps: Sequence[np.ndarray], titles: Sequence[str]) -> Path:
    """Write a PNG: the image, then each map upsampled over it (jet colour map, min-max scaled per map)."""
    image = image.convert("RGB")
    figure, axes = plt.subplots(1, len(maps) + 1, figsize=(3.2 * (len(maps) + 1), 3.4))
    axes = np.atleast_1d(axes)
    axes[0].imshow(image)
    axes[0].set_title("image", fontsize=9)
    for axis, similarity, title in zip(axes[1:], maps, titles):
        scaled = (similarity - similarity.min()) / (np.ptp(similarity) + 1e-8)
        upsampled = np.asarray(Image.fromarray((scaled * 255).astype(np.uint8)).resize(image.size, Image.BILINEAR))
        axis.imshow(image)
        axis.imshow(upsampled, cmap="jet", alpha=0.5)
        axis.set_title(title, fontsize=8, wrap=True)
    for axis in axes:
        axis.axis("off")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
