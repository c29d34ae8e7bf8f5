"""LoadImage, SaveImage, PreviewImage, Mask and PasteBack, run through the node API on real files."""

from __future__ import annotations

import errno
import json
import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffgraph.engine import (
    DEFAULT_MAX_IMAGE_PIXELS,
    Cache,
    FileAccess,
    MemoryCache,
    NodeError,
    PortType,
    RunContext,
    input_problem,
)
from diffgraph.nodes.images import LoadImage, MaskNode, PasteBack, PreviewImage, SaveImage


def run_node(cls, ctx: RunContext | None = None, **values):
    """Validate params with the node's own pydantic model, check inputs at the node boundary as the
    executor does (a NodeError naming the field here), fill unlinked inputs with None, run."""
    spec = cls.__node_spec__
    params = spec.params_model.model_validate({k: v for k, v in values.items() if k in spec.params}).model_dump()
    inputs = {name: values.get(name) for name in spec.inputs}
    for name, port in spec.inputs.items():
        problem = input_problem(port, inputs[name])
        if problem is not None:
            raise NodeError(problem, name)
    return cls.instantiate({**params, **inputs}).run(ctx or RunContext(node_id="n"))


def load(path: Path | str):
    return run_node(LoadImage, image=str(path))


def error_of(cls, **values) -> NodeError:
    with pytest.raises(NodeError) as caught:
        run_node(cls, **values)
    return caught.value


def rgba_pixels(height=6, width=5) -> np.ndarray:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    pixels[0, 0, 3], pixels[0, 1, 3], pixels[0, 2, 3] = 0, 255, 128
    return pixels


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` greyscale pixels (a decompression bomb's header)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
            + png_chunk(b"IEND", b""))


# ---------------------------------------------------------------------------------------------
# LoadImage


def test_png_with_alpha_gives_rgb_and_one_minus_alpha_mask(tmp_path):
    pixels = rgba_pixels()
    Image.fromarray(pixels, "RGBA").save(tmp_path / "a.png")
    out = load(tmp_path / "a.png")
    image, mask = out["image"], out["mask"]
    assert image.shape == (1, 3, 6, 5) and image.dtype == torch.float32
    assert mask.shape == (1, 1, 6, 5) and mask.dtype == torch.float32
    expected_rgb = torch.from_numpy(pixels[..., :3].astype(np.float32) / 255.0).permute(2, 0, 1)
    assert torch.equal(image[0], expected_rgb)
    assert mask[0, 0, 0, 0] == 1.0  # fully transparent: repaint
    assert mask[0, 0, 0, 1] == 0.0  # opaque: keep
    assert mask[0, 0, 0, 2] == pytest.approx(1 - 128 / 255)
    assert torch.allclose(mask[0, 0], 1 - torch.from_numpy(pixels[..., 3].astype(np.float32)) / 255)


def test_png_without_alpha_gives_an_all_zero_mask(tmp_path):
    Image.fromarray(rgba_pixels()[..., :3], "RGB").save(tmp_path / "rgb.png")
    out = load(tmp_path / "rgb.png")
    assert out["image"].shape == (1, 3, 6, 5)
    assert torch.count_nonzero(out["mask"]) == 0


def test_palette_png_with_transparency_gives_a_mask(tmp_path):
    picture = Image.new("P", (4, 3), 0)
    picture.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    picture.putpixel((1, 1), 1)
    picture.info["transparency"] = 1
    picture.save(tmp_path / "p.png", transparency=1)
    out = load(tmp_path / "p.png")
    assert out["mask"][0, 0, 1, 1] == 1.0 and out["mask"].sum() == 1.0
    assert torch.equal(out["image"][0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))


def test_sixteen_bit_greyscale_png_keeps_its_range(tmp_path):
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    image = load(tmp_path / "g16.png")["image"]
    assert image.shape == (1, 3, 1, 3)
    assert image[0, :, 0, 0].tolist() == [0.0, 0.0, 0.0]
    assert image[0, 0, 0, 1].item() == pytest.approx(0.5, abs=1e-4)
    assert image[0, :, 0, 2].tolist() == [1.0, 1.0, 1.0]


def test_jpeg_loads_close_to_its_colour(tmp_path):
    Image.new("RGB", (16, 8), (200, 100, 50)).save(tmp_path / "c.jpg", quality=95)
    out = load(tmp_path / "c.jpg")
    assert out["image"].shape == (1, 3, 8, 16)
    mean = out["image"].mean(dim=(0, 2, 3)) * 255
    assert torch.allclose(mean, torch.tensor([200.0, 100.0, 50.0]), atol=3)
    assert torch.count_nonzero(out["mask"]) == 0


def test_lossless_webp_with_alpha_is_exact(tmp_path):
    pixels = rgba_pixels()
    pixels[..., 3] = np.where(pixels[..., 3] > 127, 255, 0)  # WebP keeps colour under alpha 0 only if exact
    Image.fromarray(pixels, "RGBA").save(tmp_path / "w.webp", lossless=True, exact=True)
    out = load(tmp_path / "w.webp")
    assert torch.equal(out["mask"][0, 0], torch.from_numpy((pixels[..., 3] == 0).astype(np.float32)))
    expected_rgb = torch.from_numpy(pixels[..., :3].astype(np.float32) / 255.0).permute(2, 0, 1)
    assert torch.equal(out["image"][0], expected_rgb)


def test_format_is_judged_by_content_not_name(tmp_path):
    pixels = rgba_pixels()
    Image.fromarray(pixels, "RGBA").save(tmp_path / "real.png")
    (tmp_path / "real.png").rename(tmp_path / "named.jpg")
    out = load(tmp_path / "named.jpg")
    assert out["mask"][0, 0, 0, 0] == 1.0  # the PNG's alpha survived: it was decoded as a PNG


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((2, 4, 3), dtype=np.uint8)  # 4 wide, 2 high; red dot top-left
    pixels[0, 0] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(pixels, "RGB").save(tmp_path / "o.png", exif=exif)
    image = load(tmp_path / "o.png")["image"]
    assert image.shape == (1, 3, 4, 2)  # displayed upright: 2 wide, 4 high
    assert image[0, :, 0, 1].tolist() == [1.0, 0.0, 0.0]  # top-left turned clockwise lands top-right
    assert image[0, 0].sum() == 1.0


def test_missing_file_names_the_field_and_path(tmp_path):
    error = error_of(LoadImage, image=str(tmp_path / "nope.png"))
    assert error.field == "image" and "nope.png" in str(error) and "no such file" in str(error)


def test_a_folder_is_not_a_picture(tmp_path):
    error = error_of(LoadImage, image=str(tmp_path))
    assert error.field == "image" and "a directory, not a regular file" in str(error)


def test_empty_path_is_refused():
    error = error_of(LoadImage, image="  ")
    assert error.field == "image" and "no picture given" in str(error)


def test_a_file_that_is_not_an_image_is_refused(tmp_path):
    (tmp_path / "notes.png").write_bytes(b"these are not the pixels you are looking for\n" * 20)
    error = error_of(LoadImage, image=str(tmp_path / "notes.png"))
    assert error.field == "image" and "is not a PNG, JPEG or WebP picture" in str(error)


def test_other_formats_are_refused_even_if_pillow_reads_them(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "x.gif")
    error = error_of(LoadImage, image=str(tmp_path / "x.gif"))
    assert error.field == "image" and "is not a PNG, JPEG or WebP picture" in str(error)


@pytest.mark.parametrize("suffix, keep", [(".png", 0.5), (".jpg", 0.5), (".webp", 0.6)])
def test_truncated_files_are_refused(tmp_path, suffix, keep):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB").save(tmp_path / f"full{suffix}")
    data = (tmp_path / f"full{suffix}").read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[: int(len(data) * keep)])
    error = error_of(LoadImage, image=str(tmp_path / f"cut{suffix}"))
    assert error.field == "image"
    assert "damaged or truncated" in str(error) or "is not a PNG, JPEG or WebP" in str(error)


def test_corrupt_png_data_is_refused(tmp_path):
    Image.fromarray(rgba_pixels(32, 32), "RGBA").save(tmp_path / "ok.png")
    data = bytearray((tmp_path / "ok.png").read_bytes())
    start = data.index(b"IDAT") + 4
    data[start:start + 40] = bytes(40)  # zeroed compressed pixels: CRC and zlib stream broken
    (tmp_path / "bad.png").write_bytes(bytes(data))
    error = error_of(LoadImage, image=str(tmp_path / "bad.png"))
    assert error.field == "image" and "damaged or truncated" in str(error)


@pytest.mark.parametrize("side", [10_000, 20_000])  # ~100 M pixels (Pillow warns), 400 M (Pillow raises)
def test_decompression_bombs_are_refused_cleanly(tmp_path, side):
    (tmp_path / "bomb.png").write_bytes(png_declaring(side, side))
    error = error_of(LoadImage, image=str(tmp_path / "bomb.png"))
    assert error.field == "image" and "too large to load safely" in str(error)


def test_pictures_past_the_default_pixel_limit_are_refused_before_decoding(tmp_path):
    # a 4097x4097 PNG is a few KB on disk (issue 10: a 187 KB 8000x8000 PNG cost 3.4 GB)
    Image.new("L", (4097, 4097)).save(tmp_path / "wide.png")
    assert (tmp_path / "wide.png").stat().st_size < 100_000
    error = error_of(LoadImage, image=str(tmp_path / "wide.png"))
    assert error.field == "image" and "4097x4097" in str(error)
    assert f"the limit is {DEFAULT_MAX_IMAGE_PIXELS} pixels" in str(error) and DEFAULT_MAX_IMAGE_PIXELS == 4096 * 4096


def test_the_pixel_limit_is_the_policy_s_to_choose(tmp_path):
    Image.new("RGB", (11, 10)).save(tmp_path / "small.png")
    strict = RunContext(node_id="n", access=FileAccess(max_image_pixels=109))
    with pytest.raises(NodeError, match="the limit is 109 pixels"):
        run_node(LoadImage, ctx=strict, image=str(tmp_path / "small.png"))
    loose = RunContext(node_id="n", access=FileAccess(max_image_pixels=110))
    assert run_node(LoadImage, ctx=loose, image=str(tmp_path / "small.png"))["image"].shape == (1, 3, 10, 11)


def test_the_memory_cache_counts_images_at_their_real_size():
    big = torch.zeros(1, 3, 1024, 1024)  # 12 MB
    cache = Cache(MemoryCache(max_bytes=8 * 1024**2))
    # a 1x1 view keeps the whole 12 MB tensor alive: too big for an 8 MB cache
    cache.put("view", LoadImage.__node_spec__, {"image": big[:, :, :1, :1], "mask": torch.zeros(1, 1, 1, 1)})
    assert len(cache.memory) == 0 and cache.memory.bytes == 0
    cache.put("small", LoadImage.__node_spec__, {"image": torch.zeros(1, 3, 8, 8), "mask": torch.zeros(1, 1, 8, 8)})
    assert len(cache.memory) == 1 and 4 * 4 * 64 <= cache.memory.bytes < 64 * 1024
    # values on ANY ports: a PIL picture, numpy arrays (a view counts its base), in containers
    picture = Image.new("RGB", (1024, 1024))
    assert PortType.nbytes(picture) >= 3 * 1024 * 1024
    array = np.zeros((1024, 1024), np.float32)
    assert PortType.nbytes({"a": [picture, array[:1]]}) >= 7 * 1024 * 1024


def test_fingerprint_follows_file_content_not_path_or_time(tmp_path):
    path = tmp_path / "f.png"
    Image.new("RGB", (2, 2), (1, 2, 3)).save(path)
    first = LoadImage.fingerprint({"image": str(path)}, FileAccess())
    Image.new("RGB", (2, 2), (1, 2, 3)).save(path)  # rewritten, same bytes
    assert LoadImage.fingerprint({"image": str(path)}, FileAccess()) == first
    Image.new("RGB", (2, 2), (9, 9, 9)).save(path)
    assert LoadImage.fingerprint({"image": str(path)}, FileAccess()) != first
    assert LoadImage.fingerprint({"image": str(tmp_path / "missing.png")}, FileAccess()) == "unreadable"
    assert LoadImage.fingerprint({}, FileAccess()) is None  # the path arrives through a link: nothing to read at plan time


# ---------------------------------------------------------------------------------------------
# SaveImage and PreviewImage


def ctx_for(output_dir: Path, workflow=None, params=None) -> RunContext:
    return RunContext(node_id="save", output_dir=output_dir, workflow=workflow, template_params=params or {})


def random_images(batch=2, height=8, width=6, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, height, width), generator=generator).float() / 255.0


def numbered(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_save_writes_numbered_pngs_with_exact_pixels(tmp_path):
    images = random_images()
    files = run_node(SaveImage, ctx_for(tmp_path / "out" / "nested"), images=images, prefix="cat")["files"]
    assert [Path(f).name for f in files] == ["cat_00001.png", "cat_00002.png"]
    assert all(Path(f).is_absolute() and Path(f).is_file() for f in files)
    for index, path in enumerate(files):
        back = Image.open(path)
        assert back.format == "PNG" and back.mode == "RGB" and back.size == (6, 8)
        assert torch.equal(torch.from_numpy(np.array(back)).permute(2, 0, 1).float() / 255.0, images[index])
    assert numbered(tmp_path / "out" / "nested") == ["cat_00001.png", "cat_00002.png"]  # no temporary left


def test_save_rounds_clamps_and_survives_nan_like_diffusers(tmp_path):
    images = torch.tensor([[[[-0.5, 0.5 / 255, 1.5 / 255, 2.0, float("nan")]]]]).expand(1, 3, 1, 5)
    files = run_node(SaveImage, ctx_for(tmp_path), images=images.contiguous())["files"]
    assert np.asarray(Image.open(files[0]))[0, :, 0].tolist() == [0, 0, 2, 255, 0]  # round half to even, as numpy


def test_save_never_overwrites_and_continues_after_the_highest_number(tmp_path):
    (tmp_path / "diffgraph_00001.png").write_bytes(b"mine")
    (tmp_path / "diffgraph_00007.png").write_bytes(b"also mine")
    (tmp_path / "diffgraph_notanumber.png").write_bytes(b"other")
    files = run_node(SaveImage, ctx_for(tmp_path), images=random_images(batch=1))["files"]
    assert Path(files[0]).name == "diffgraph_00008.png"
    assert (tmp_path / "diffgraph_00001.png").read_bytes() == b"mine"
    assert (tmp_path / "diffgraph_00007.png").read_bytes() == b"also mine"


def test_concurrent_saves_get_distinct_names_and_all_survive(tmp_path):
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def save(seed: int) -> None:
        try:
            results.append(run_node(SaveImage, ctx_for(tmp_path), images=random_images(batch=3, seed=seed))["files"])
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    written = [path for files in results for path in files]
    assert len(written) == len(set(written)) == 18
    assert numbered(tmp_path) == [f"diffgraph_{n:05d}.png" for n in range(1, 19)]
    for path in written:
        Image.open(path).load()


def test_a_half_written_png_is_never_visible(tmp_path):
    """A watcher polls the folder while a large picture is saved: every PNG it sees decodes fully."""
    images = torch.rand(1, 3, 768, 768, generator=torch.Generator().manual_seed(3))
    seen: list[str] = []
    failures: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for name in os.listdir(tmp_path):
                if name.endswith(".png"):
                    try:
                        with Image.open(tmp_path / name) as picture:
                            picture.load()
                            seen.append(name)
                    except Exception as exc:  # noqa: BLE001 - any failure is a visible partial file
                        failures.append(f"{name}: {exc}")

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(3):
            run_node(SaveImage, ctx_for(tmp_path), images=images)
    finally:
        done.set()
        watcher.join()
    assert not failures
    assert numbered(tmp_path) == ["diffgraph_00001.png", "diffgraph_00002.png", "diffgraph_00003.png"]


def test_without_hard_links_the_save_still_lands_whole(tmp_path, monkeypatch):
    def no_links(src, dst, *args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)  # a FAT or network file system
    (tmp_path / "diffgraph_00001.png").write_bytes(b"keep")
    files = run_node(SaveImage, ctx_for(tmp_path), images=random_images())["files"]
    assert [Path(f).name for f in files] == ["diffgraph_00002.png", "diffgraph_00003.png"]
    assert (tmp_path / "diffgraph_00001.png").read_bytes() == b"keep"
    assert numbered(tmp_path) == ["diffgraph_00001.png", "diffgraph_00002.png", "diffgraph_00003.png"]
    Image.open(files[1]).load()


def test_a_failed_save_leaves_no_temporary_file(tmp_path, monkeypatch):
    def disk_full(src, dst, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "link", disk_full)
    with pytest.raises(NodeError, match="No space left on device"):
        run_node(SaveImage, ctx_for(tmp_path), images=random_images())
    assert os.listdir(tmp_path) == []


def test_an_output_dir_that_is_a_file_fails_cleanly(tmp_path):
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(NodeError, match="cannot write pictures"):
        run_node(SaveImage, ctx_for(tmp_path / "taken"), images=random_images())


def test_the_workflow_and_params_round_trip_through_the_png(tmp_path):
    workflow = {"format": "diffgraph/v1", "name": "café ☕",
                "nodes": {"save": {"type": "SaveImage", "inputs": {"images": "load.image"},
                                   "params": {"prefix": "$prefix"}}},
                "params": {"prefix": {"type": "STRING", "default": "x"}}}
    params = {"prefix": "x", "prompt": "a red circle, \"quoted\"\nnew line ✓", "seed": 2**63}
    files = run_node(SaveImage, ctx_for(tmp_path, workflow, params), images=random_images(batch=1),
                     prefix="x")["files"]
    picture = Image.open(files[0])
    assert json.loads(picture.text["diffgraph"]) == {"workflow": workflow, "params": params}
    assert picture.text["diffgraph"].isascii()  # a plain tEXt chunk every reader can parse


@pytest.mark.parametrize("prefix", ["../escape", "/abs/name", "a/b", "a\\b", ".hidden", "..", "", " x",
                                    "C:evil", "x" * 101, "nul\x00byte"])
def test_prefixes_that_could_escape_the_output_folder_are_refused(tmp_path, prefix):
    out = tmp_path / "out"
    with pytest.raises(NodeError) as caught:
        run_node(SaveImage, ctx_for(out), images=random_images(), prefix=prefix)
    assert caught.value.field == "prefix"
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == []


def test_a_prefix_with_spaces_and_unicode_inside_is_fine(tmp_path):
    files = run_node(SaveImage, ctx_for(tmp_path), images=random_images(batch=1), prefix="my cat ☕")["files"]
    assert Path(files[0]).name == "my cat ☕_00001.png"


def test_save_refuses_what_is_not_an_image(tmp_path):
    with pytest.raises(NodeError) as caught:
        run_node(SaveImage, ctx_for(tmp_path), images=torch.zeros(1, 1, 4, 4))
    assert caught.value.field == "images" and "[B, 3, H, W]" in str(caught.value)


def test_preview_writes_numbered_pngs_under_previews_without_a_recipe(tmp_path):
    files = run_node(PreviewImage, ctx_for(tmp_path), images=random_images())["files"]
    again = run_node(PreviewImage, ctx_for(tmp_path), images=random_images(batch=1))["files"]
    assert [Path(f).name for f in files + again] == ["preview_00001.png", "preview_00002.png", "preview_00003.png"]
    assert all(Path(f).parent == tmp_path / "previews" for f in files)
    assert "diffgraph" not in Image.open(files[0]).text


# ---------------------------------------------------------------------------------------------
# Mask


def single_pixel(height=7, width=7, y=3, x=3) -> torch.Tensor:
    mask = torch.zeros(1, 1, height, width)
    mask[0, 0, y, x] = 1.0
    return mask


def block(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the nonzero region."""
    ys, xs = torch.nonzero(mask[0, 0], as_tuple=True)
    return int(ys.min()), int(xs.min()), int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)


def test_grow_by_one_turns_a_pixel_into_a_three_by_three_block():
    out = run_node(MaskNode, mask=single_pixel(), grow=1)["mask"]
    assert out.shape == (1, 1, 7, 7) and out.dtype == torch.float32
    assert block(out) == (2, 2, 3, 3) and out.sum() == 9


def test_grow_by_two_gives_five_by_five_clipped_at_the_border():
    assert block(run_node(MaskNode, mask=single_pixel(), grow=2)["mask"]) == (1, 1, 5, 5)
    corner = run_node(MaskNode, mask=single_pixel(y=0, x=0), grow=2)["mask"]
    assert block(corner) == (0, 0, 3, 3) and corner.sum() == 9


def test_negative_grow_shrinks_but_the_image_border_is_not_outside():
    grown = run_node(MaskNode, mask=single_pixel(), grow=1)["mask"]
    assert torch.equal(run_node(MaskNode, mask=grown, grow=-1)["mask"], single_pixel())
    assert run_node(MaskNode, mask=single_pixel(), grow=-1)["mask"].sum() == 0
    full = torch.ones(1, 1, 5, 5)
    assert torch.equal(run_node(MaskNode, mask=full, grow=-2)["mask"], full)


def test_grow_and_shrink_of_soft_masks_are_a_square_max_and_min():
    soft = torch.rand(2, 1, 9, 11, generator=torch.Generator().manual_seed(4))
    grown = run_node(MaskNode, mask=soft, threshold=0.0, grow=2)["mask"]
    shrunk = run_node(MaskNode, mask=soft, threshold=0.0, grow=-2)["mask"]
    padded_max = torch.nn.functional.pad(soft, (2, 2, 2, 2), value=0.0)
    padded_min = torch.nn.functional.pad(soft, (2, 2, 2, 2), value=1.0)
    for y in range(9):
        for x in range(11):
            assert torch.equal(grown[:, 0, y, x], padded_max[:, 0, y:y + 5, x:x + 5].amax(dim=(1, 2)))
            assert torch.equal(shrunk[:, 0, y, x], padded_min[:, 0, y:y + 5, x:x + 5].amin(dim=(1, 2)))


def test_threshold_binarises_and_zero_keeps_soft_values():
    soft = torch.tensor([0.0, 0.2, 0.49, 0.5, 0.7, 1.0]).view(1, 1, 1, 6)
    assert run_node(MaskNode, mask=soft)["mask"].flatten().tolist() == [0, 0, 0, 1, 1, 1]
    assert run_node(MaskNode, mask=soft, threshold=0.7)["mask"].flatten().tolist() == [0, 0, 0, 0, 1, 1]
    assert torch.equal(run_node(MaskNode, mask=soft, threshold=0.0)["mask"], soft)


def test_invert_swaps_repaint_and_keep():
    out = run_node(MaskNode, mask=single_pixel(3, 3, 1, 1), invert=True)["mask"]
    assert out.sum() == 8 and out[0, 0, 1, 1] == 0


def test_image_luminance_is_the_mask_when_no_mask_is_linked():
    image = torch.zeros(1, 3, 2, 3)
    image[0, :, 0, 0] = 1.0  # white
    image[0, :, 0, 1] = 0.4  # dark grey
    image[0, 1, 0, 2] = 1.0  # pure green: luminance 150 of 255, as Pillow computes it
    out = run_node(MaskNode, image=image)["mask"]
    assert out.shape == (1, 1, 2, 3)
    assert out[0, 0].tolist() == [[1, 0, 1], [0, 0, 0]]
    soft = run_node(MaskNode, image=image, threshold=0.0)["mask"]
    assert soft[0, 0, 0, 2].item() == pytest.approx(150 / 255) and soft[0, 0, 0, 1].item() == pytest.approx(0.4)


def test_luminance_matches_pillows_greyscale_conversion_exactly():
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    image = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0).float() / 255.0
    expected = torch.from_numpy(np.array(Image.fromarray(pixels, "RGB").convert("L"))).float() / 255.0
    assert torch.equal(run_node(MaskNode, image=image, threshold=0.0)["mask"][0, 0], expected)


def test_a_rectangle_is_added_to_the_mask_and_clipped_at_the_edge():
    out = run_node(MaskNode, mask=single_pixel(8, 10, 7, 0), x=2, y=1, width=3, height=4)["mask"]
    expected = single_pixel(8, 10, 7, 0)
    expected[:, :, 1:5, 2:5] = 1
    assert torch.equal(out, expected)
    clipped = run_node(MaskNode, mask=torch.zeros(1, 1, 8, 10), x=8, y=6, width=5, height=5)["mask"]
    assert block(clipped) == (6, 8, 2, 2)


def test_a_rectangle_on_an_image_sized_canvas_then_inverted_repaints_outside():
    image = torch.ones(2, 3, 6, 6)  # white, but used only for its size
    out = run_node(MaskNode, image=image, use_luminance=False, x=1, y=1, width=2, height=2, invert=True)["mask"]
    assert out.shape == (2, 1, 6, 6)
    assert out[:, :, 1:3, 1:3].sum() == 0 and out.sum() == 2 * (36 - 4)


def test_a_rectangle_wholly_outside_is_an_error():
    with pytest.raises(NodeError) as caught:
        run_node(MaskNode, mask=torch.zeros(1, 1, 4, 4), x=4, y=0, width=2, height=2)
    assert caught.value.field == "x" and "outside the 4x4 mask" in str(caught.value)


def test_feather_makes_a_symmetric_ramp_of_the_given_reach():
    mask = torch.zeros(1, 1, 4, 20)
    mask[..., 10:] = 1.0
    out = run_node(MaskNode, mask=mask, feather=3)["mask"]
    row = out[0, 0, 0]
    assert torch.equal(out[0, 0, 0], out[0, 0, 3])  # replicate padding: rows stay identical
    assert torch.all(row[:7] == 0) and torch.allclose(row[13:], torch.ones(7))  # unchanged beyond 3 pixels
    assert torch.all(row[7:13] > 0) and torch.all(row[7:13] < 1)
    assert torch.all(row[1:] >= row[:-1])  # monotone ramp
    assert torch.allclose(row[7:10] + row[10:13].flip(0), torch.ones(3))  # symmetric about the edge


def test_feather_leaves_uniform_masks_uniform():
    for value in (0.0, 1.0):
        mask = torch.full((1, 1, 5, 5), value)
        assert torch.allclose(run_node(MaskNode, mask=mask, feather=4)["mask"], mask)


def test_batches_are_kept():
    masks = torch.stack([single_pixel()[0], torch.zeros(1, 7, 7)])
    out = run_node(MaskNode, mask=masks, grow=1)["mask"]
    assert out.shape == (2, 1, 7, 7) and out[0].sum() == 9 and out[1].sum() == 0


def test_without_mask_or_image_the_size_is_unknown():
    with pytest.raises(NodeError) as caught:
        run_node(MaskNode, width=4, height=4)
    assert caught.value.field == "mask" and "size is unknown" in str(caught.value)


def test_a_mask_of_another_size_than_the_image_is_an_error():
    with pytest.raises(NodeError) as caught:
        run_node(MaskNode, mask=torch.zeros(1, 1, 4, 4), image=torch.zeros(1, 3, 4, 5))
    assert caught.value.field == "mask" and "4x4" in str(caught.value) and "5x4" in str(caught.value)


@pytest.mark.parametrize("field, value", [("mask", torch.zeros(1, 4, 4)), ("mask", torch.zeros(1, 3, 4, 4)),
                                          ("image", torch.zeros(1, 1, 4, 4))])
def test_tensors_of_the_wrong_shape_are_refused(field, value):
    with pytest.raises(NodeError) as caught:
        run_node(MaskNode, **{field: value})
    assert caught.value.field == field


def test_mask_params_are_bounded():
    spec = MaskNode.__node_spec__
    for bad in ({"threshold": 1.5}, {"threshold": -0.1}, {"feather": -1}, {"grow": 5000}, {"x": -1}):
        with pytest.raises(Exception, match="validation error"):
            spec.params_model.model_validate(bad)


# ---------------------------------------------------------------------------------------------
# PasteBack


def test_paste_back_keeps_the_original_exactly_where_the_mask_is_zero():
    new, original = random_images(2, seed=1), random_images(1, seed=2)
    mask = torch.zeros(1, 1, 8, 6)
    mask[:, :, 2:5, 1:4] = 1.0
    out = run_node(PasteBack, image=new, original=original, mask=mask)["image"]
    assert out.shape == new.shape
    keep = (mask == 0).expand(2, 3, 8, 6)
    assert torch.equal(out[keep], original.expand(2, 3, 8, 6)[keep])  # bit for bit, every image
    assert torch.equal(out[~keep], new[~keep])


def test_paste_back_blends_by_a_soft_mask():
    new, original = torch.ones(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
    mask = torch.full((1, 1, 4, 4), 0.25)
    out = run_node(PasteBack, image=new, original=original, mask=mask)["image"]
    assert torch.allclose(out, torch.full((1, 3, 4, 4), 0.25))


def test_paste_back_refuses_an_original_or_mask_of_another_size():
    new = random_images(1)
    error = error_of(PasteBack, image=new, original=random_images(1, height=8, width=8), mask=torch.zeros(1, 1, 8, 6))
    assert error.field == "original" and "8x8" in str(error) and "6x8" in str(error)
    error = error_of(PasteBack, image=new, original=new, mask=torch.zeros(1, 1, 4, 6))
    assert error.field == "mask" and "6x4" in str(error)
    error = error_of(PasteBack, image=random_images(3), original=random_images(2), mask=torch.zeros(1, 1, 8, 6))
    assert error.field == "original" and "2 originals for 3 images" in str(error)
    error = error_of(PasteBack, image=new, original=new, mask=torch.zeros(1, 3, 8, 6))
    assert error.field == "mask" and "MASK" in str(error)
