"""Video I/O with PyAV: mp4 round trip, probing, padding, atomic writes and clear errors."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from pyrawan.data.video import probe_video, read_video, write_video
from pyrawan.errors import InputError
from pyrawan.fsutil import atomic_write_bytes, sha256_file


def smooth_pattern(frames: int = 17, height: int = 64, width: int = 64) -> torch.Tensor:
    """A slowly moving colour gradient [T, 3, H, W] in [0.1, 0.9]."""
    t = torch.linspace(0, 1, frames).view(frames, 1, 1, 1)
    y = torch.linspace(0, 1, height).view(1, 1, height, 1)
    x = torch.linspace(0, 1, width).view(1, 1, 1, width)
    c = torch.arange(3).view(1, 3, 1, 1)
    return 0.5 + 0.4 * torch.sin(math.pi * (x + 0.5 * y + 0.3 * t + 0.25 * c))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / ((a - b) ** 2).mean()))


def test_roundtrip_frames_fps_and_quality(tmp_path):
    video = smooth_pattern()
    path = write_video(tmp_path / "clip.mp4", video, fps=16)
    assert probe_video(path) == {"frames": 17, "fps": 16.0, "width": 64, "height": 64}
    frames, fps = read_video(path)
    assert frames.shape == (17, 3, 64, 64) and frames.dtype == torch.float32 and fps == 16.0
    assert psnr(frames, video) > 35.0
    part, _ = read_video(path, num_frames=5, start=3)
    torch.testing.assert_close(part, frames[3:8])
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]     # no temp files left


def test_encoder_threads_reach_libx264_and_the_clip_reads_back(tmp_path):
    """x264 writes its settings into the stream (an SEI message); previews ask for one thread. (At 128 rows
    x264 would use 2 on this machine; it never uses more threads than rows of macroblocks.)"""
    video = smooth_pattern(5, 128, 128)
    one = write_video(tmp_path / "one.mp4", video, fps=5, threads=1)
    assert b" threads=1 " in one.read_bytes()
    assert b" threads=2 " in write_video(tmp_path / "two.mp4", video, fps=5, threads=2).read_bytes()
    frames, fps = read_video(one)
    assert frames.shape == (5, 3, 128, 128) and fps == 5.0 and psnr(frames, video) > 35.0


def test_uint8_input_and_odd_size_padding(tmp_path):
    video = (smooth_pattern(5, 63, 61) * 255).round().to(torch.uint8)
    path = write_video(tmp_path / "odd.mp4", video, fps=8)
    assert probe_video(path) == {"frames": 5, "fps": 8.0, "width": 62, "height": 64}
    frames, _ = read_video(path)
    assert psnr(frames[:, :, :63, :61], video.float() / 255) > 35.0
    with pytest.raises(InputError, match="even"):
        write_video(tmp_path / "strict.mp4", video, pad_odd=False)


def test_bad_inputs_raise_input_error(tmp_path):
    bad = atomic_write_bytes(tmp_path / "broken.mp4", b"\x00" * 512 + b"not a video" * 50)
    for call in (probe_video, read_video):
        with pytest.raises(InputError, match="broken.mp4"):
            call(bad)
    with pytest.raises(InputError, match="does not exist"):
        read_video(tmp_path / "missing.mp4")
    with pytest.raises(InputError, match=r"\[T, 3, H, W\]"):
        write_video(tmp_path / "x.mp4", torch.rand(4, 8, 8, 3))
    path = write_video(tmp_path / "short.mp4", smooth_pattern(5, 16, 16))
    with pytest.raises(InputError, match="too few frames"):
        read_video(path, num_frames=9)


def test_overwrite_is_atomic_replace(tmp_path):
    path = write_video(tmp_path / "a.mp4", smooth_pattern(5, 16, 16))
    first = sha256_file(path)
    write_video(path, smooth_pattern(9, 16, 16))
    assert sha256_file(path) != first and probe_video(path)["frames"] == 9
    assert len(list(tmp_path.iterdir())) == 1


def test_a_failed_encode_leaves_the_old_video_and_no_temporary_file(tmp_path, monkeypatch):
    from pyrawan.data import video

    path = write_video(tmp_path / "a.mp4", smooth_pattern(5, 16, 16))
    first = sha256_file(path)

    def half_written(out, *args):
        Path(out).write_bytes(b"\x00" * 100)                        # some bytes, then the encoder fails
        raise RuntimeError("encoder died")

    monkeypatch.setattr(video, "_encode", half_written)
    with pytest.raises(RuntimeError, match="encoder died"):
        write_video(path, smooth_pattern(9, 16, 16))
    assert sha256_file(path) == first and [p.name for p in tmp_path.iterdir()] == ["a.mp4"]


def test_atomic_path_failure_leaves_target_untouched(tmp_path):
    from pyrawan.fsutil import atomic_path

    target = atomic_write_bytes(tmp_path / "keep.bin", b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["keep.bin"]
