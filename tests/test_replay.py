"""ReplaySource: image folders and MJPEG files, order, decoding, pacing, looping, faults."""

from __future__ import annotations

import io
import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from node.capture.frame import CaptureError, Frame
from node.capture.replay import ReplaySource, fit_within, natural_key, split_mjpeg
from node.config import CaptureConfig

CFG = CaptureConfig(fps=10, lores_width=320, lores_height=240)
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (250, 250, 20), (10, 10, 10)]


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> PILImage.Image:
    return PILImage.new("RGB", size, colour)


def jpeg_bytes(image: PILImage.Image, quality: int = 95) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def noise_jpeg(size: tuple[int, int], seed: int = 1) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return jpeg_bytes(PILImage.fromarray(pixels), quality=98)


def with_thumbnail(jpeg: bytes, thumbnail: bytes) -> bytes:
    """The JPEG with an APP1 segment holding another JPEG (SOI..EOI), as an EXIF thumbnail."""
    payload = b"Exif\x00\x00" + thumbnail
    segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    return jpeg[:2] + segment + jpeg[2:]


def read_all(src: ReplaySource, limit: int = 100) -> list[Frame]:
    frames: list[Frame] = []
    while len(frames) < limit and (frame := src.read()) is not None:
        frames.append(frame)
    return frames


@pytest.fixture
def stop() -> threading.Event:
    return threading.Event()


@pytest.fixture
def opened(stop: threading.Event) -> Iterator[list[ReplaySource]]:
    sources: list[ReplaySource] = []
    yield sources
    for src in sources:
        src.close()


def replay(url: str, stop: threading.Event, opened: list[ReplaySource]) -> ReplaySource:
    src = ReplaySource(url, CFG)
    src.open(stop)
    opened.append(src)
    return src


def test_folder_replays_in_natural_order_with_content(
    tmp_path: Path, stop: threading.Event, opened: list[ReplaySource]
) -> None:
    names = ["frame10.png", "frame2.png", "frame1.png", "Frame3.bmp"]
    for name, colour in zip(names, COLOURS, strict=False):
        solid(colour).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".frame0.png").write_bytes(b"hidden, ignored")
    src = replay(f"replay://{tmp_path}?fps=0", stop, opened)
    frames = read_all(src)
    order = ["frame1.png", "frame2.png", "Frame3.bmp", "frame10.png"]
    assert [f.meta["file"] for f in frames] == order
    assert [f.meta["index"] for f in frames] == [0, 1, 2, 3]
    assert [f.seq for f in frames] == [1, 2, 3, 4]
    expected = [COLOURS[2], COLOURS[1], COLOURS[3], COLOURS[0]]
    for frame, colour in zip(frames, expected, strict=True):
        assert frame.main.shape == (48, 64, 3)
        assert (frame.main.array() == np.array(colour, dtype=np.uint8)).all()
        assert (frame.lores == np.array(colour, dtype=np.uint8)).all()  # small: not upscaled
    assert (src.stats()["frames"], src.stats()["bad_files"]) == (4, 0)


def test_lores_fits_within_the_configured_size_keeping_aspect(
    tmp_path: Path, stop: threading.Event, opened: list[ReplaySource]
) -> None:
    solid((90, 120, 200), (1000, 400)).save(tmp_path / "wide.jpg", quality=95)
    frame = read_all(replay(f"replay://{tmp_path}?fps=0", stop, opened))[0]
    assert frame.main.shape == (400, 1000, 3)
    assert frame.lores.shape == (128, 320, 3)
    assert np.abs(frame.lores.astype(int) - [90, 120, 200]).max() <= 4
    assert np.abs(frame.main.array().astype(int) - [90, 120, 200]).max() <= 4
    assert frame.lores_to_main == (1000 / 320, 400 / 128)
    assert fit_within(640, 480, 320, 240) == (320, 240)
    assert fit_within(200, 100, 320, 240) == (200, 100)
    assert fit_within(480, 960, 320, 240) == (120, 240)


def test_frames_carry_wall_and_monotonic_time(
    tmp_path: Path, stop: threading.Event, opened: list[ReplaySource]
) -> None:
    solid((1, 2, 3)).save(tmp_path / "a.png")
    before_utc, before_mono = time.time_ns(), time.monotonic_ns()
    frame = read_all(replay(f"replay://{tmp_path}?fps=0", stop, opened))[0]
    assert before_utc <= frame.utc_ns <= time.time_ns()
    assert before_mono <= frame.mono_ns <= time.monotonic_ns()


def test_relative_path_is_relative_to_the_working_directory(
    tmp_path: Path,
    stop: threading.Event,
    opened: list[ReplaySource],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "clips" / "day one").mkdir(parents=True)
    solid((5, 6, 7)).save(tmp_path / "clips" / "day one" / "a.png")
    monkeypatch.chdir(tmp_path)
    frames = read_all(replay("replay://clips/day%20one?fps=0", stop, opened))
    assert [f.meta["file"] for f in frames] == ["a.png"]


def test_mjpeg_file_is_split_into_frames(
    tmp_path: Path, stop: threading.Event, opened: list[ReplaySource]
) -> None:
    big = noise_jpeg((1200, 900))
    assert len(big) > 1 << 20  # spans a chunk boundary of the 1 MiB reader
    thumb = jpeg_bytes(solid((0, 0, 0), (16, 16)))
    parts = [
        jpeg_bytes(solid(COLOURS[0])),
        b"\x00garbage between frames\xff",
        with_thumbnail(jpeg_bytes(solid(COLOURS[1])), thumb),
        big,
        jpeg_bytes(solid(COLOURS[2])),
    ]
    path = tmp_path / "clip.mjpeg"
    path.write_bytes(b"".join(parts))
    frames = read_all(replay(f"replay://{path}?fps=0", stop, opened))
    assert [f.main.shape for f in frames] == [(48, 64, 3), (48, 64, 3), (900, 1200, 3), (48, 64, 3)]
    assert [f.meta["file"] for f in frames] == ["clip.mjpeg"] * 4
    assert [f.meta["index"] for f in frames] == [0, 1, 2, 3]
    for i, colour in ((0, COLOURS[0]), (1, COLOURS[1]), (3, COLOURS[2])):
        frame = frames[i]
        assert np.abs(frame.main.array().astype(int) - colour).max() <= 4


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096])
def test_splitter_finds_the_same_frames_at_any_chunk_size(chunk: int) -> None:
    thumb = jpeg_bytes(solid((0, 0, 0), (8, 8)))
    frames = [
        jpeg_bytes(solid(COLOURS[0])),
        with_thumbnail(jpeg_bytes(solid(COLOURS[1])), thumb),
        noise_jpeg((96, 64)),
    ]
    found = list(split_mjpeg(io.BytesIO(b"junk" + b"".join(frames)), chunk=chunk))
    assert found == frames


def test_splitter_reports_truncated_and_broken_frames() -> None:
    good = jpeg_bytes(solid(COLOURS[0]))
    stream = good[:100] + good + good[: len(good) // 2]  # cut short, then whole, then cut
    assert list(split_mjpeg(io.BytesIO(stream), chunk=64)) == [None, good, None]


def test_file_starting_with_soi_is_mjpeg_whatever_its_name(
    tmp_path: Path, stop: threading.Event, opened: list[ReplaySource]
) -> None:
    path = tmp_path / "recording.bin"
    path.write_bytes(jpeg_bytes(solid(COLOURS[0])) * 3)
    assert len(read_all(replay(f"replay://{path}?fps=0", stop, opened))) == 3


def test_pacing_follows_fps(
    tmp_path: Path, stop: threading.Event, opened: list[ReplaySource]
) -> None:
    for i in range(10):
        solid(COLOURS[i % 5]).save(tmp_path / f"f{i}.png")
    src = replay(f"replay://{tmp_path}?fps=20", stop, opened)
    assert src.fps == 20
    started = time.monotonic()
    frames = read_all(src)
    elapsed = time.monotonic() - started
    assert len(frames) == 10
    assert 0.35 <= elapsed <= 1.5  # 9 intervals of 50 ms after the first frame


def test_default_fps_comes_from_config(tmp_path: Path) -> None:
    solid(COLOURS[0]).save(tmp_path / "a.png")
    assert ReplaySource(f"replay://{tmp_path}", CFG).fps == CFG.fps


def test_fps_zero_is_unpaced(
    tmp_path: Path, stop: threading.Event, opened: list[ReplaySource]
) -> None:
    for i in range(10):
        solid(COLOURS[i % 5]).save(tmp_path / f"f{i}.png")
    src = replay(f"replay://{tmp_path}?fps=0", stop, opened)
    started = time.monotonic()
    assert len(read_all(src)) == 10
    assert time.monotonic() - started < 0.3


def test_loop_starts_again_at_the_end(
    tmp_path: Path, stop: threading.Event, opened: list[ReplaySource]
) -> None:
    for i in range(3):
        solid(COLOURS[i]).save(tmp_path / f"f{i}.png")
    src = replay(f"replay://{tmp_path}?fps=0&loop=1", stop, opened)
    frames = read_all(src, limit=7)
    assert [f.meta["index"] for f in frames] == [0, 1, 2, 0, 1, 2, 0]
    assert [f.seq for f in frames] == list(range(1, 8))
    assert src.stats()["passes"] == 3


def test_loop_over_mjpeg(tmp_path: Path, stop: threading.Event, opened: list[ReplaySource]) -> None:
    path = tmp_path / "clip.mjpg"
    path.write_bytes(jpeg_bytes(solid(COLOURS[0])) + jpeg_bytes(solid(COLOURS[1])))
    frames = read_all(replay(f"replay://{path}?fps=0&loop=1", stop, opened), limit=5)
    assert [f.meta["index"] for f in frames] == [0, 1, 0, 1, 0]


def test_corrupt_files_are_skipped_and_counted(
    tmp_path: Path,
    stop: threading.Event,
    opened: list[ReplaySource],
    caplog: pytest.LogCaptureFixture,
) -> None:
    solid(COLOURS[0]).save(tmp_path / "f1.png")
    (tmp_path / "f2.jpg").write_bytes(b"\xff\xd8 this is not really a jpeg")
    good = jpeg_bytes(solid(COLOURS[1]))
    (tmp_path / "f3.jpg").write_bytes(good[: len(good) // 2])  # truncated
    (tmp_path / "f4.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (tmp_path / "f5.jpeg").write_bytes(good)
    src = replay(f"replay://{tmp_path}?fps=0", stop, opened)
    with caplog.at_level(logging.WARNING, logger="node.capture.replay"):
        frames = read_all(src)
    assert [f.meta["file"] for f in frames] == ["f1.png", "f5.jpeg"]
    assert src.stats()["bad_files"] == 3
    logged = " ".join(r.getMessage() for r in caplog.records)
    for name in ("f2.jpg", "f3.jpg", "f4.png"):
        assert name in logged


def test_loop_of_only_bad_files_ends(
    tmp_path: Path, stop: threading.Event, opened: list[ReplaySource]
) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    src = replay(f"replay://{tmp_path}?fps=0&loop=1", stop, opened)
    assert src.read() is None
    assert src.stats()["bad_files"] == 1


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("?speed=2", "unknown query key speed"),
        ("?fps=fast", "fps='fast' is not a number"),
        ("?fps=-1", "fps=-1 is out of range"),
        ("?loop=maybe", "loop='maybe'"),
    ],
)
def test_bad_query_is_a_capture_error(tmp_path: Path, query: str, needle: str) -> None:
    with pytest.raises(CaptureError, match=needle):
        ReplaySource(f"replay://{tmp_path}{query}", CFG)


def test_missing_path_is_a_capture_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match=r"no such file or folder: .*nowhere"):
        ReplaySource(f"replay://{tmp_path}/nowhere", CFG)


def test_folder_without_images_is_a_capture_error(tmp_path: Path, stop: threading.Event) -> None:
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(CaptureError, match=re.escape("no .jpg/.jpeg/.png/.bmp images")):
        ReplaySource(f"replay://{tmp_path}", CFG).open(stop)


def test_read_before_open_is_a_capture_error(tmp_path: Path) -> None:
    solid(COLOURS[0]).save(tmp_path / "a.png")
    with pytest.raises(CaptureError, match="before open"):
        ReplaySource(f"replay://{tmp_path}", CFG).read()


def test_stop_makes_read_return_promptly(
    tmp_path: Path, stop: threading.Event, opened: list[ReplaySource]
) -> None:
    for i in range(3):
        solid(COLOURS[i]).save(tmp_path / f"f{i}.png")
    src = replay(f"replay://{tmp_path}?fps=0.5", stop, opened)
    assert src.read() is not None  # the first frame is due at once, the next in 2 s
    threading.Timer(0.1, stop.set).start()
    started = time.monotonic()
    assert src.read() is None
    assert time.monotonic() - started < 0.8
    assert src.read() is None


def test_natural_key_orders_digit_runs_by_value() -> None:
    names = ["img10.png", "img2.png", "img1.png", "10.png", "9.png", "img2b.png"]
    assert sorted(names, key=natural_key) == [
        "9.png", "10.png", "img1.png", "img2.png", "img2b.png", "img10.png",
    ]  # fmt: skip
