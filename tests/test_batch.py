"""Folders of images: batches equal single runs (to float32 rounding), buckets, skipping, failures, sharding
over forced host devices, multi-host partitioning, every option per image, few programs, and
rematerialization."""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from conftest import _smooth_image
from jaxstyle.run import job as batch
from jaxstyle.objective import losses
from jaxstyle.model import vgg
from jaxstyle.config import Config
from jaxstyle.config import resolve
from test_cli import run_cli


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    Image.fromarray(_smooth_image(48, 64, 11)).save(d / "a.png")
    Image.fromarray(_smooth_image(48, 64, 12)).save(d / "b.png")
    Image.fromarray(_smooth_image(48, 64, 13)).save(d / "c.jpg")
    Image.fromarray(_smooth_image(64, 48, 14)).save(d / "d.png")  # another shape: its own bucket
    (d / "notes.txt").write_text("not an image")
    return d


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), np.int16)


# Where the network's depth is not the point (batching, program counts, resuming), a third of it:
# compiling is most of these tests' time.
SHALLOW = ("--content-layers", "block2_conv1", "--style-layers", "block1_conv1,block2_conv1")


def test_share_partitions_inputs_across_processes():
    items = list(range(11))
    shares = [batch.share(items, i, 4) for i in range(4)]
    assert sorted(x for s in shares for x in s) == items
    assert all(not set(a) & set(b) for i, a in enumerate(shares) for b in shares[i + 1:])
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert batch.share(items, 0, 1) == items
    with pytest.raises(ValueError):
        batch.share(items, 4, 4)


def test_collect_finds_images_by_folder_or_pattern(folder):
    assert [p.name for p in batch.collect(str(folder))] == ["a.png", "b.png", "c.jpg", "d.png"]
    assert [p.name for p in batch.collect(str(folder / "*.png"))] == ["a.png", "b.png", "d.png"]
    assert batch.is_folder_spec(str(folder)) and batch.is_folder_spec("x/*.jpg")
    assert not batch.is_folder_spec(str(folder / "a.png"))
    with pytest.raises(batch.InputError, match="no image files"):
        batch.collect(str(folder / "*.gif"))


def test_batch_equals_single_runs_and_resumes(capsys, tmp_path, folder, image_dir, synthetic_h5):
    out = tmp_path / "styled"
    args = ["--weights", synthetic_h5, "--size", 32, "--iterations", 6, *SHALLOW]
    code, _, err = run_cli(capsys, "transfer", folder, image_dir / "style.png", "-o", out, *args,
                           "--batch-size", 2)
    assert code == 0, err
    assert "4 written, 0 already done, 0 failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["a_style.png", "b_style.png", "c_style.png", "d_style.png"]
    for name in ("a.png", "c.jpg", "d.png"):  # c.jpg shares a padded batch; d is another bucket
        single = tmp_path / f"single_{Path(name).stem}.png"
        code, _, err = run_cli(capsys, "transfer", folder / name, image_dir / "style.png", "-o", single, *args)
        assert code == 0, err
        diff = np.abs(_pixels(out / f"{Path(name).stem}_style.png") - _pixels(single)).max()
        assert diff == 0, (name, diff)  # the same per-image program, whatever the batch
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = run_cli(capsys, "transfer", folder, image_dir / "style.png", "-o", out, *args)
    assert code == 0 and "0 written, 4 already done" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_bad_image_is_reported_and_the_rest_finish(capsys, tmp_path, folder, image_dir, synthetic_h5):
    src = tmp_path / "mixed"
    src.mkdir()
    (src / "good.png").write_bytes((folder / "a.png").read_bytes())
    (src / "broken.jpg").write_text("definitely not a jpeg")
    Image.new("RGB", (4, 4)).save(src / "tiny.png")
    out = tmp_path / "o"
    code, _, err = run_cli(capsys, "transfer", src, image_dir / "style.png", "-o", out, "--weights",
                           synthetic_h5, "--size", 32, "--iterations", 2, "--format", "jpg")
    assert code == 1
    assert "1 written, 0 already done, 2 failed" in err
    assert "broken.jpg: not an image file" in err and "tiny.png: 4x4 pixels is too small" in err
    assert [p.name for p in out.iterdir()] == ["good_style.jpg"]
    assert "Traceback" not in err


def test_remat_gives_the_same_loss_and_gradient_in_less_memory(synthetic_params):
    variables = vgg.prepare_variables(synthetic_params)
    x = jnp.asarray(np.random.default_rng(5).uniform(-100, 100, (48, 64, 3)), jnp.float32)
    results, temp = [], []
    for remat in (False, True):
        config = Config(size=64, remat=remat)
        objective, targets = losses.targets_for(variables, config, np.asarray(x[::-1]), [np.asarray(x)])
        fn = jax.jit(jax.value_and_grad(losses.total), static_argnums=3)
        compiled = fn.lower(x, variables, targets, objective).compile()
        results.append(compiled(x, variables, targets))
        temp.append(compiled.memory_analysis().temp_size_in_bytes)
    np.testing.assert_allclose(float(results[0][0]), float(results[1][0]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(results[0][1]), np.asarray(results[1][1]), rtol=1e-5, atol=1e-7)
    # XLA keeps the recomputation apart (jax.checkpoint's was merged back on CPU): measured 0.54.
    assert temp[1] < 0.75 * temp[0], temp



def _photos(d: Path, shapes) -> Path:
    d.mkdir()
    for i, (h, w) in enumerate(shapes):
        Image.fromarray(_smooth_image(h, w, 30 + i)).save(d / f"p{i}.png")
    return d


def test_a_folder_of_mixed_shapes_and_stages_compiles_few_programs(capsys, tmp_path, image_dir, synthetic_h5):
    from conftest import count_programs
    from jaxstyle.images import preprocess
    shapes = [(48, 64), (45, 64), (40, 64), (36, 64), (64, 48), (64, 64)]
    src = _photos(tmp_path / "mixed", shapes)
    stages = (32, 64)
    buckets = {tuple(preprocess.bucket(preprocess.fit_size(s, size), 16) for size in stages) for s in shapes}
    assert len(buckets) == 3  # six shapes, three buckets (exact shapes would be six)
    with count_programs() as programs:
        code, _, err = run_cli(capsys, "transfer", src, image_dir / "style.png", "-o", tmp_path / "out",
                               "--weights", synthetic_h5, "--size", 64, "--scales", 2, "--scale-iterations", "2,2",
                               *SHALLOW)
    assert code == 0, err
    assert "6 written" in err
    # Two programs (targets and start; the loop) per bucket and stage, whatever the images.
    assert programs.count <= 2 * len(buckets) * len(stages), programs.count
    for i, (h, w) in enumerate(shapes):
        assert Image.open(tmp_path / "out" / f"p{i}_style.png").size == preprocess.fit_size((h, w), 64)[::-1]


def test_every_setting_works_per_image_in_a_folder(tmp_path, image_dir, synthetic_h5):
    """Every Config field set away from its default at once, in a folder run: each reaches the
    run (the checkpoints and traces record the settings used) and its effect shows per image."""
    import dataclasses
    import json

    from jaxstyle.observers import checkpoint
    from jaxstyle.images import color
    from jaxstyle.run import execute as run_mod
    src = _photos(tmp_path / "in", [(48, 64), (44, 64)])
    lbfgs = Config(size=64, iterations=4, scales=2, scale_iterations=(2, 2), preserve_colors="luminance",
                   style_scale=0.8, content_layers=("block2_conv2", "block3_conv1"), content_layer_weights=(0.6, 0.4),
                   style_layers=("block1_conv1", "block2_conv1"), style_layer_weights=(0.3, 0.7),
                   content_weight=2.0, style_weight=5.0, tv_weight=1e-3, normalize=False, lbfgs_memory=5,
                   linesearch_steps=10, precondition=0.1, init="noise", seed=5, save_every=1,
                   checkpoint_every=2, keep_checkpoint=True, batch_size=2, devices=1, dtype="bfloat16", remat=True,
                   pooling="avg", bucket=32, conv="direct", compile="fast", precision="high", device="cpu:0",
                   print_every=2, style_loss="meanstd")
    adam = Config(optimizer="adam", learning_rate=3.0, iterations=3, size=48, split_image=True, average=0.9)
    touched = {f.name for f in dataclasses.fields(Config) if getattr(lbfgs, f.name) != getattr(Config(), f.name)}
    touched |= {f.name for f in dataclasses.fields(Config) if getattr(adam, f.name) != getattr(Config(), f.name)}
    touched.add("tile")  # refused with the snapshots, checkpoints and traces this test reads: test_tiles.py
    touched |= {"temporal_weight", "temporal_frames", "frame_iterations", "tolerance", "passes",
                "pass_blend"}  # video's: test_video_run.py
    assert touched == {f.name for f in dataclasses.fields(Config)}
    for name, config in (("lbfgs", lbfgs), ("adam", adam)):
        out, gifs, traces = tmp_path / name, tmp_path / f"{name}_gif", tmp_path / f"{name}_trace"
        job = batch.many("transfer", config, batch.collect(src), [image_dir / "style.png"], outdir=out,
                         gif_dir=gifs, trace_dir=traces, weights=synthetic_h5)
        reports = []
        results = run_mod.run(job, progress=reports.append)
        assert [r.status for r in results] == ["done", "done"], [r.message for r in results]
        if name == "lbfgs":  # --print-every's lines, per image, at exact iterations
            lines = sorted((p.names[0], p.iteration) for p in reports if p.phase == "iteration")
            assert lines == [("p0.png", 2), ("p0.png", 4), ("p1.png", 2), ("p1.png", 4)]
            assert {p.device for p in reports} == {"cpu"}
        for r, stem in zip(results, ("p0", "p1")):
            assert r.iterations == config.iterations
            doc = json.loads((traces / f"{stem}_style.json").read_text())
            assert Config.from_dict(doc["config"]) == resolve(config, "cpu")
            assert [e["iteration"] for e in doc["iterations"]] == list(range(config.iterations + 1))
            with Image.open(gifs / f"{stem}_style.gif") as g:
                assert g.is_animated
            if name == "lbfgs":
                assert {e["size"] for e in doc["iterations"]} == {32, 64}  # both stages
                assert sorted(p.name for p in out.glob(f"{stem}_style_*.png")) == \
                    [f"{stem}_style_000{k}.png" for k in (1, 2, 3)]
                ck = checkpoint.load(out / f"{stem}_style.png.ckpt.npz")  # kept: --keep-checkpoint
                assert ck.config == resolve(config, "cpu") and ck.iteration == 2 and ck.stage == 1
                content = np.asarray(Image.open(src / f"{stem}.png").convert("RGB").resize(r.image.shape[1::-1]),
                                     np.float32)
                inside = (r.image > 2).all(axis=2) & (r.image < 253).all(axis=2)
                chroma = np.abs(color.rgb_to_yiq(r.image)[..., 1:] - color.rgb_to_yiq(content)[..., 1:])
                assert np.median(chroma[inside]) < 3.0  # the content's colours, kept per image


def test_an_interrupted_folder_resumes_mid_image_and_equals_an_uninterrupted_run(tmp_path, image_dir, synthetic_h5):
    from jaxstyle.run import execute as run_mod
    src = _photos(tmp_path / "in", [(48, 64), (44, 64), (64, 48)])
    config = Config(size=40, iterations=9, save_every=3).replace(  # snapshots end chunks: the stop lands mid-image
        content_layers=("block2_conv1",), style_layers=("block1_conv1", "block2_conv1"))

    def job(out):
        return batch.many("transfer", config, batch.collect(src), [image_dir / "style.png"], outdir=out,
                          weights=synthetic_h5)

    run_mod.run(job(tmp_path / "whole"))  # the reference: an uninterrupted run
    seen = {"it": 0}
    part = run_mod.run(job(tmp_path / "part"), progress=lambda p: seen.update(it=p.iteration),
                       should_stop=lambda: seen["it"] >= 3)
    assert [r.status for r in part] == ["interrupted"] * 3
    assert (tmp_path / "part" / "p0_style.png.ckpt.npz").is_file()  # the image that was running
    again = run_mod.run(job(tmp_path / "part"))
    assert [r.status for r in again] == ["done"] * 3
    for stem in ("p0", "p1", "p2"):
        np.testing.assert_array_equal(_pixels(tmp_path / "part" / f"{stem}_style.png"),
                                      _pixels(tmp_path / "whole" / f"{stem}_style.png"))
    assert not (tmp_path / "part" / "p0_style.png.ckpt.npz").exists()  # finished: removed
    again = run_mod.run(job(tmp_path / "part"))
    assert [r.status for r in again] == ["skipped"] * 3  # finished: nothing is recompiled
