"""The tiled full-resolution stage (`--tile`): tiles cover the image with equal sizes and enough
overlap, their cross-fade weights sum to one, a run writes a seamless image, and a tile's loop
needs the memory of a tile, not of the image (XLA's analysis against the estimate)."""
from __future__ import annotations

import jax
import numpy as np
import pytest
from PIL import Image

from jaxstyle.run import problem
from jaxstyle.faces import targets
from jaxstyle.images import tiles
from jaxstyle.model import vgg
from jaxstyle.config import Config, resolve
from jaxstyle.errors import ConfigError
from conftest import run_one
from test_cli import run_cli


@pytest.mark.parametrize("hw, tile", [((96, 128), 64), ((300, 517), 128), ((64, 64), 64), ((768, 1024), 256)])
def test_tiles_cover_the_image_with_equal_sizes_and_weights_that_sum_to_one(hw, tile):
    overlap = tiles.overlap_for(tile)
    wins = tiles.windows(hw, tile, overlap)
    weights = tiles.blend_weights(hw, tile, overlap)
    total = np.zeros(hw)
    sizes = {(y1 - y0, x1 - x0) for y0, y1, x0, x1 in wins}
    assert sizes == {(min(tile, hw[0]), min(tile, hw[1]))}
    for (y0, y1, x0, x1), w in zip(wins, weights):
        assert w.shape == (y1 - y0, x1 - x0) and w.min() > 0
        total[y0:y1, x0:x1] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    xs = sorted({x0 for _, _, x0, _ in wins})
    assert all(b - a <= tile - overlap for a, b in zip(xs, xs[1:]))  # neighbours overlap enough
    # a smooth image cut into tiles and cross-faded back is itself
    image = np.stack([*np.meshgrid(np.arange(hw[0]), np.arange(hw[1]), indexing="ij"), np.zeros(hw)], -1)
    canvas = tiles.Canvas(np.zeros((*hw, 3)))
    for (y0, y1, x0, x1), w in zip(wins, weights):
        canvas.add((y0, y1, x0, x1), image[y0:y1, x0:x1], w)
    np.testing.assert_allclose(canvas.image(), image, atol=1e-3)


def test_a_tile_needs_the_memory_of_a_tile_within_the_estimate(synthetic_params):
    config = resolve(Config(size=256, tile=64, conv="direct"), "cpu")
    host = vgg.prepare_variables(synthetic_params)
    need = {}
    for shape in ((64, 64), (192, 256)):
        builder = problem.Builder(config, host)
        layout = problem.Layout(1, shape, (64, 64), 1, True, tuple(jax.devices()[:1]))
        loop = builder.compile(layout).loop_bytes()
        estimate = problem.memory_need(config, shape, 1, 1, "cpu")
        assert loop <= estimate.total, (shape, loop, estimate.total)
        need[shape] = loop - estimate.weights  # what grows with the pixels
    assert need[(64, 64)] < need[(192, 256)] / 6, need  # 12x fewer pixels


def test_a_tiled_run_is_seamless_and_refuses_what_cannot_see_inside_it(capsys, tmp_path, image_dir, synthetic_h5):
    out = tmp_path / "tiled.png"
    reports = []
    result = run_one("transfer", Config(size=128, iterations=4, tile=64), image_dir / "content.png",
                     [image_dir / "style.png"], output_path=out, weights=synthetic_h5, progress=reports.append)
    # the progress of a tiled stage: its tiles named, the stage's iterations and speed (as the result's)
    live = [p for p in reports if p.phase == "optimize"]
    n = len(tiles.windows((96, 128), 64, 32))
    assert {p.tile for p in live} <= {f"tile {t}/{n}" for t in range(1, n + 1)} and live[-1].tile == f"tile {n}/{n}"
    counts = [p.iteration for p in live]
    assert counts == sorted(counts) and counts[-1] <= 4  # the stage's iterations, not each tile's again
    assert live[-1].seconds_per_iteration / result.seconds_per_iteration < 3  # was one tile's: n times less
    assert all(abs(sum(p.terms[k] for k in ("content", "style", "tv")) - p.loss) <= 1e-3 * abs(p.loss)
               for p in live)  # the weighted terms add up to the loss
    image = np.asarray(Image.open(out), np.float32)
    assert image.shape == (96, 128, 3)
    # no edge where tiles meet: the step between neighbouring columns at a tile's border is
    # no larger than the image's typical step
    step = np.abs(np.diff(image, axis=1)).mean(axis=(0, 2))  # per column boundary
    borders = [x0 - 1 for x0 in sorted({w[2] for w in tiles.windows((96, 128), 64, 32)}) if x0] + \
              [x1 - 1 for x1 in sorted({w[3] for w in tiles.windows((96, 128), 64, 32)}) if x1 < 128]
    assert max(step[b] for b in borders) < 2.5 * np.median(step), (step[borders], np.median(step))
    for extra, message in ((["--save-every", 2], "--save-every and --checkpoint-every cannot see inside"),
                           (["--gif", tmp_path / "a.gif"], "--gif and --trace cannot see inside"),
                           (["--split-image"], "two ways to make a large image fit")):
        code, _, err = run_cli(capsys, "transfer", image_dir / "content.png", image_dir / "style.png", "-o",
                               tmp_path / "x.png", "--weights", synthetic_h5, "--tile", 64, *extra)
        assert code != 0 and message in err, err
    with pytest.raises(ConfigError, match="--tile must be 0 or a multiple of 16"):
        Config(tile=70)



def test_the_plan_for_24_megapixels_on_16_gib_chooses_tiles_and_on_a_v2_8_a_split():
    plan = targets.fit("tpu-v5e-1", (4000, 6000), compile_check=False)
    ways = {w["way"]: w for w in plan["ways"]}
    assert not ways["--lbfgs-memory 30"]["fits"]  # the whole image: ~100 GiB
    assert not ways["--lbfgs-memory 5 --dtype bfloat16"]["fits"]  # even with the least
    assert plan["chosen"] == "--lbfgs-memory 30 --tile 1024"
    assert ways["--lbfgs-memory 30 --tile 1024"]["tiles"] == 35
    # the history's share: 30 pairs of two 6000x4000 float32 images is ~36 GiB of the 103
    split = targets.fit("tpu-v2-8", (4000, 6000), compile_check=False)
    assert split["chosen"] == "--lbfgs-memory 5 --dtype bfloat16 --split-image (8 devices)"
