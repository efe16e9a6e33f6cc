"""Make docs/tubingen_sky_mask.png, the content mask of the README's guided picture: the sky of
../shared/images/tubingen.jpg black, everything else white (a colour threshold on the blue sky
above the roofs, cleaned with a morphological close and open).

    python docs/make_sky_mask.py ../shared/images/tubingen.jpg docs/tubingen_sky_mask.png
"""
import sys

import numpy as np
from PIL import Image, ImageFilter

src, out = sys.argv[1], sys.argv[2]
rgb = np.asarray(Image.open(src).convert("RGB"), np.float32)
r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
h = rgb.shape[0]
sky = (b - r > 35) & (b > 110) & (np.arange(h)[:, None] < 0.62 * h)
img = Image.fromarray((sky * 255).astype(np.uint8))
img = img.filter(ImageFilter.MaxFilter(5)).filter(ImageFilter.MinFilter(5))  # close small gaps
img = img.filter(ImageFilter.MinFilter(5)).filter(ImageFilter.MaxFilter(5))  # drop specks
sky = np.asarray(img) > 127
Image.fromarray(np.where(sky, 0, 255).astype(np.uint8)).convert("RGB").save(out, optimize=True)
print(f"{out}: sky {sky.mean():.1%} of the image")
