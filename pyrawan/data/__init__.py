"""Data: video I/O (PyAV)."""
from pyrawan.data.video import probe_video, read_video, write_video

__all__ = ["probe_video", "read_video", "write_video"]
