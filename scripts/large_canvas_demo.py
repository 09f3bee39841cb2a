"""Image-conditioned models beyond their training size (docs/editing.md, "Other sizes"): a 60x60 canvas of four
Fashion-MNIST test images (28x28 each, 2-pixel gaps) upscaled x4 from 15x15 by fmnist-sr4 and inpainted
(a 20x60 band) by fmnist-inpaint, both trained on single 28x28 images.

    python scripts/large_canvas_demo.py docs/images/editing_large.png
"""

import sys

import numpy as np
import torch
from PIL import Image

from ldmkit import editing
from ldmkit.data.fashion_mnist import load_fashion_mnist_arrays
from ldmkit.images import make_grid, save_png
from ldmkit.pipelines import load_model

torch.set_num_threads(1)
x, _ = load_fashion_mnist_arrays("test")
canvases = []
for start in (20, 40):  # two canvases of four test images each
    c = np.zeros((60, 60), np.uint8)
    for k, (r, q) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        c[2 + 30 * r: 30 + 30 * r, 2 + 30 * q: 30 + 30 * q] = x[start + k]
    canvases.append(c)
truth = torch.tensor(np.stack(canvases)).float().div(127.5).sub(1)[:, None]
low = torch.stack([torch.tensor(np.asarray(Image.fromarray(c).resize((15, 15), Image.Resampling.BICUBIC)))
                   for c in canvases]).float().div(127.5).sub(1)[:, None]
with torch.no_grad():
    up = editing.upscale(load_model("fmnist-sr4"), low, seed=0)
    mask = torch.zeros(2, 1, 60, 60, dtype=torch.bool)
    mask[:, :, 20:40, :] = True
    filled = editing.inpaint_concat(load_model("fmnist-inpaint"), truth, mask, seed=0)
nearest = torch.nn.functional.interpolate(low, scale_factor=4, mode="nearest")
holed = torch.where(mask, torch.zeros_like(truth), truth)
cols = torch.stack([truth, nearest, up, holed, filled], 1).flatten(0, 1)
grid = make_grid(cols, nrow=5).repeat(2, axis=0).repeat(2, axis=1)
save_png(sys.argv[1], grid, {"columns": "60x60 truth, 15x15 input (nearest), fmnist-sr4 x4, band removed, "
                                        "fmnist-inpaint", "seed": 0})
print(f"{tuple(up.shape)} SR, {tuple(filled.shape)} inpainting -> {sys.argv[1]}")
