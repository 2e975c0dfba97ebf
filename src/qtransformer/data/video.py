"""Camera frames as video: encoded with PyAV, decoded by timestamp, read like an array.

:class:`VideoFrames` stands where a dataset keeps ``images`` ``(T, H, W, C)`` uint8: indexing it
decodes only the frames asked for (seeking to the keyframe before each), so a dataset whose
frames would not fit in memory is read batch by batch. Every process opens its own decoders,
so a :class:`VideoFrames` can be handed to data-loading workers.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from qtransformer.data.episodes import DatasetError

DEFAULT_CODEC = "libsvtav1"
"""AV1 (SVT-AV1), as LeRobot writes its datasets; PyAV's wheels encode it and decode it with
dav1d. ``h264`` is the other codec their wheels encode."""


@dataclass(frozen=True)
class VideoSettings:
    """How frames are encoded.

    Attributes:
        codec: An encoder PyAV has (``libsvtav1``, ``h264``, ``libx264``).
        crf: Constant rate factor: lower is closer to the frames and larger.
        gop: Frames between keyframes; reading a random frame decodes at most this many.
        pix_fmt: Pixel format of the stream (``yuv420p``: chroma at half resolution).
    """

    codec: str = DEFAULT_CODEC
    crf: int = 30
    gop: int = 2
    pix_fmt: str = "yuv420p"

    def options(self) -> dict[str, str]:
        return {"g": str(self.gop), "crf": str(self.crf)}


class VideoWriter:
    """Appends ``(n, H, W, 3)`` uint8 frames to one MP4 file, frame ``i`` at ``i / fps`` s."""

    def __init__(
        self, path: str | Path, fps: float, height: int, width: int, settings: VideoSettings
    ) -> None:
        import av

        # SVT-AV1 prints a banner of its settings to stderr at every file unless told not to.
        os.environ.setdefault("SVT_LOG", "1")
        if height % 2 or width % 2:
            raise ValueError(
                f"video frames need even sides for {settings.pix_fmt}, got {height}x{width}"
            )
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = Fraction(fps).limit_denominator(1001)
        container: Any = av.open(str(self.path), mode="w")
        stream: Any = container.add_stream(settings.codec, rate=self.fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = settings.pix_fmt
        stream.options = settings.options()
        self._container, self._stream = container, stream
        self.frames = 0

    def _mux(self, packets: Any) -> None:
        for packet in packets:
            self._container.mux(packet)

    def write(self, frames: np.ndarray) -> None:
        import av

        for img in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = self.frames
            frame.time_base = 1 / self.fps
            self._mux(self._stream.encode(frame))
            self.frames += 1

    def close(self) -> None:
        self._mux(self._stream.encode())
        self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def encode_video(
    path: str | Path, frames: np.ndarray, fps: float, settings: VideoSettings | None = None
) -> None:
    """Write ``frames`` ``(n, H, W, 3)`` uint8 as one MP4 file."""
    with VideoWriter(path, fps, frames.shape[1], frames.shape[2], settings or VideoSettings()) as w:
        w.write(frames)


def video_duration(path: str | Path) -> float:
    """Seconds of a file's first video stream (what the next file appended after it starts at)."""
    import av

    with av.open(str(path)) as c:
        s: Any = c.streams.video[0]
        if s.duration is not None:
            return float(s.duration * s.time_base)
        return float(c.duration or 0) / av.time_base


def concatenate_videos(parts: Sequence[Path], out: Path) -> None:
    """Append MP4 files of one codec and size into ``out`` without re-encoding (ffmpeg's
    concat demuxer, packets copied): part ``k`` starts at the summed durations of the
    parts before it."""
    import av

    if len(parts) == 1:
        parts[0].replace(out)
        return
    listing = out.with_suffix(".ffconcat")
    listing.write_text("ffconcat version 1.0\n" + "".join(f"file '{p.resolve()}'\n" for p in parts))
    with (
        av.open(str(listing), format="concat", options={"safe": "0"}) as src,
        av.open(str(out), mode="w") as dst,
    ):
        stream_in = src.streams.video[0]
        stream_out = dst.add_stream_from_template(template=stream_in, opaque=True)
        stream_out.time_base = stream_in.time_base
        for packet in src.demux(stream_in):
            if packet.dts is None:  # the demuxer's flush packet
                continue
            packet.stream = stream_out
            dst.mux(packet)
    listing.unlink()
    for p in parts:
        p.unlink()


def video_stream_info(path: str | Path) -> dict[str, Any]:
    """Codec, pixel format, size, frame rate and frame count of a file's first video stream."""
    import av

    with av.open(str(path)) as c:
        if not c.streams.video:
            raise DatasetError(f"{path}: has no video stream")
        s = c.streams.video[0]
        return {
            "codec": s.codec_context.name,
            "pix_fmt": s.codec_context.pix_fmt,
            "height": s.codec_context.height,
            "width": s.codec_context.width,
            "fps": float(s.average_rate) if s.average_rate else None,
            "frames": int(s.frames),
        }


class _Decoder:
    """One open file: decodes forward, seeking back only when a wanted frame is behind (or
    far ahead of) the last one decoded."""

    def __init__(self, path: Path) -> None:
        import av

        try:
            self.container = av.open(str(path))
        except (OSError, av.error.FFmpegError) as e:
            raise DatasetError(f"{path}: cannot open the video ({e})") from None
        if not self.container.streams.video:
            raise DatasetError(f"{path}: has no video stream")
        self.path = path
        self.stream = self.container.streams.video[0]
        # One thread: no decoder threads that a forked worker process could inherit mid-task,
        # and small frames gain nothing from more.
        self.stream.thread_type = "SLICE"
        self.stream.codec_context.thread_count = 1
        self.time_base = float(self.stream.time_base or 0)
        self._frames: Iterator[Any] | None = None
        self._last: tuple[float, np.ndarray] | None = None

    def _next(self) -> tuple[float, np.ndarray] | None:
        assert self._frames is not None
        try:
            frame = next(self._frames)
        except StopIteration:
            return None
        t = float(frame.pts) * self.time_base
        self._last = (t, frame.to_ndarray(format="rgb24"))
        return self._last

    def frames_at(self, times: np.ndarray, tolerance: float, ahead: float) -> np.ndarray:
        """Frames at sorted ``times`` (seconds), each within ``tolerance`` of its time."""
        out = []
        for t in times:
            last = self._last
            if (
                self._frames is None
                or last is None
                or t < last[0] - tolerance
                or t > last[0] + ahead
            ):
                # The keyframe at or before t; decoding then runs forward to t.
                self.container.seek(
                    max(int((t - tolerance) / self.time_base), 0),
                    stream=self.stream,
                    backward=True,
                    any_frame=False,
                )
                self._frames = self.container.decode(self.stream)
                last = self._next()
            while last is not None and last[0] < t - tolerance:
                last = self._next()
            if last is None or abs(last[0] - t) > tolerance:
                found = "the end of the video" if last is None else f"a frame at {last[0]:.4f} s"
                raise DatasetError(
                    f"{self.path}: no frame at {t:.4f} s (within {tolerance:.4f} s); found {found}"
                )
            out.append(last[1])
        return np.stack(out)

    def close(self) -> None:
        self.container.close()


_INHERITED: list[Any] = []
"""Decoders a forked process inherited: never used, never closed."""


class VideoFrames:
    """A read-only ``(T, H, W, C)`` uint8 array of frames kept in video files.

    Row ``i`` is the frame at ``times[i]`` seconds of ``files[file_index[i]]``. Indexing with an
    integer, a slice or an integer array decodes those frames (each file's in time order, from
    the keyframe before each unless it is within ``ahead`` seconds of the last one decoded);
    ``np.asarray`` decodes them all. Up to ``open_files`` decoders stay open per process.
    """

    def __init__(
        self,
        files: Sequence[str | Path],
        file_index: np.ndarray,
        times: np.ndarray,
        frame_shape: tuple[int, int, int],
        fps: float,
        open_files: int = 8,
    ) -> None:
        self.files = [Path(f) for f in files]
        self.file_index = np.asarray(file_index, np.int32)
        self.times = np.asarray(times, np.float64)
        if self.file_index.shape != self.times.shape or self.file_index.ndim != 1:
            raise ValueError("file_index and times must be 1-D and of one length")
        self.shape = (len(self.times), *(int(s) for s in frame_shape))
        self.dtype = np.dtype(np.uint8)
        self.ndim = 4
        self.fps = float(fps)
        self.tolerance = 0.5 / self.fps
        # Sequential reads within a GOP or two decode forward instead of seeking.
        self.ahead = 4.0 / self.fps
        self.open_files = open_files
        self._decoders: OrderedDict[int, _Decoder] = OrderedDict()
        self._pid = os.getpid()
        self.frames_decoded = 0

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_decoders"] = OrderedDict()  # decoders never cross processes
        return state

    def _decoder(self, f: int) -> _Decoder:
        if self._pid != os.getpid():
            # A forked worker: the parent's decoders are not ours. Closing them here would
            # wait for decoding threads that exist only in the parent, so they are kept.
            _INHERITED.append(self._decoders)
            self._decoders, self._pid = OrderedDict(), os.getpid()
        d = self._decoders.get(f)
        if d is None:
            d = _Decoder(self.files[f])
            self._decoders[f] = d
            while len(self._decoders) > self.open_files:
                self._decoders.popitem(last=False)[1].close()
        self._decoders.move_to_end(f)
        return d

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Frames of ``rows`` (any order, repeats allowed): ``(len(rows), H, W, C)``."""
        rows = np.asarray(rows, np.int64).reshape(-1)
        out = np.empty((len(rows), *self.shape[1:]), np.uint8)
        if len(rows) == 0:
            return out
        if rows.min() < -len(self) or rows.max() >= len(self):
            raise IndexError(f"row out of range for {len(self)} frames")
        rows = np.where(rows < 0, rows + len(self), rows)
        unique, inverse = np.unique(rows, return_inverse=True)
        # Each file's frames in time order, so that neighbours decode forward.
        order = np.lexsort((self.times[unique], self.file_index[unique]))
        decoded = np.empty((len(unique), *self.shape[1:]), np.uint8)
        files = self.file_index[unique[order]]
        cuts = np.flatnonzero(np.diff(files)) + 1
        for group in np.split(order, cuts):
            f = int(self.file_index[unique[group[0]]])
            frames = self._decoder(f).frames_at(
                self.times[unique[group]], self.tolerance, self.ahead
            )
            if frames.shape[1:] != self.shape[1:]:
                raise DatasetError(
                    f"{self.files[f]}: frames are {frames.shape[1:]}, the dataset says "
                    f"{self.shape[1:]}"
                )
            decoded[group] = frames
        self.frames_decoded += len(unique)
        out[:] = decoded[inverse.reshape(-1)]
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self.read(np.array([key]))[0]
        if isinstance(key, slice):
            return self.read(np.arange(len(self))[key])
        return self.read(np.asarray(key))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self.read(np.arange(len(self)))
        return a if dtype is None else a.astype(dtype)

    def fingerprint(self, h: Any) -> None:
        """Feed the files' bytes and the frame table to hash ``h`` (no decoding)."""
        for f in self.files:
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        h.update(self.file_index.tobytes())
        h.update(self.times.tobytes())

    def close(self) -> None:
        for d in self._decoders.values():
            d.close()
        self._decoders.clear()
