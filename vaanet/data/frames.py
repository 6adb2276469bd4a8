"""Frame storage formats of the ``vaanet prepare`` cache: one writer and one reader per format.

``write_frames(folder, frames, fmt)`` stores uint8 [T, H, W, 3] frames of one video in ``folder`` and
returns the file name; ``open_frames(path, fmt)`` returns an object with ``.shape`` (T, H, W, 3) and
``[indices, rows, cols]`` indexing that returns uint8 [N, h, w, 3] numpy arrays (the frames are
decoded only where a format needs it, and only the requested ones).

Formats (``vaanet prepare --frames``; recorded as ``frames`` in the cache's ``prepare.json``, absent =
``raw``; numbers measured by ``benchmarks/data_throughput.py``, see docs/performance.md):

* ``raw``  - ``frames.npy``, the uint8 array, memory-mapped: no decoding, T x H x W x 3 bytes.
* ``jpeg`` - ``frames.jpegs``: every frame a JPEG (quality ``JPEG_QUALITY``, 4:2:0) packed in one file
  with an offset table, decoded with ``torchvision.io.decode_jpeg`` (a batched list decode; on the GPU
  with ``device="cuda"``). Layout: magic ``VAJPEG01``, uint32 T, H, W, quality, uint64 offsets[T + 1]
  (into the data that follows; offsets[T] = data length, so a truncated file is detected on open),
  then the JPEG streams back to back.

Every file is written under a temporary name and renamed into place.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

FORMATS = ("raw", "jpeg")
FILE_NAMES = {"raw": "frames.npy", "jpeg": "frames.jpegs"}
JPEG_QUALITY = 90
JPEG_MAGIC = b"VAJPEG01"
NPY_MAGIC = b"\x93NUMPY"
_HEADER = struct.Struct("<8s4I")


class FrameCacheError(ValueError):
    """A frame file that cannot be read; the message names the file and the fix."""


def _redo(path: Path) -> str:
    folder = Path(path).parent
    return (f"delete {folder} and run `vaanet prepare` again with the same --root and --out "
            f"(it re-decodes only the videos whose folder is missing)")


def check_format(fmt, source="prepare.json", load_decoder: bool = False) -> str:
    """``fmt`` if this vaanet reads it. ``load_decoder`` imports its decoder now (a reader calls this once,
    before DataLoader workers fork, so that they do not each spend seconds importing torchvision)."""
    if fmt == "jpeg" and load_decoder:
        import torchvision.io  # noqa: F401
    if fmt not in FORMATS:
        raise FrameCacheError(
            f"unknown frame format {fmt!r} in {source} (this vaanet reads {', '.join(FORMATS)}); the cache was "
            f"written by another vaanet version or edited: prepare it again into a new folder with "
            f"`vaanet prepare --frames {{{','.join(FORMATS)}}} --out NEW`")
    return fmt


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        write(f)
    tmp.replace(path)


def encode_jpeg_frames(frames: np.ndarray, quality: int = JPEG_QUALITY) -> list[bytes]:
    """Baseline JPEG, 4:2:0, optimised Huffman tables (PIL's libjpeg: a light import for the prepare
    processes, and faster here than torchvision's encoder)."""
    import io

    from PIL import Image

    out = []
    for f in frames:
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(f)).save(buf, format="JPEG", quality=quality, subsampling=2, optimize=True)
        out.append(buf.getvalue())
    return out


def write_frames(folder: str | Path, frames: np.ndarray, fmt: str = "raw", quality: int = JPEG_QUALITY) -> str:
    """Store uint8 [T, H, W, 3] ``frames`` in ``folder`` in format ``fmt``; returns the file name."""
    check_format(fmt, "write_frames")
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
        raise ValueError(f"frames must be uint8 [T, H, W, 3] with T >= 1, got {frames.dtype} {frames.shape}")
    path = Path(folder) / FILE_NAMES[fmt]
    if fmt == "raw":
        _atomic(path, lambda f: np.save(f, frames))
    else:
        blobs = encode_jpeg_frames(frames, quality)
        offsets = np.zeros(len(blobs) + 1, "<u8")
        offsets[1:] = np.cumsum([len(b) for b in blobs])
        T, H, W = frames.shape[:3]

        def write(f):
            f.write(_HEADER.pack(JPEG_MAGIC, T, H, W, quality))
            f.write(offsets.tobytes())
            for b in blobs:
                f.write(b)

        _atomic(path, write)
    return path.name


def _sniff(path: Path) -> str | None:
    with path.open("rb") as f:
        head = f.read(8)
    if head.startswith(NPY_MAGIC):
        return "raw"
    if head == JPEG_MAGIC:
        return "jpeg"
    return None


def open_frames(path: str | Path, fmt: str = "raw", device: str = "cpu"):
    """The frames of one video, lazily: ``.shape`` and ``[indices, rows, cols]`` -> uint8 [N, h, w, 3].

    ``fmt`` is the cache's format (``prepare.json``); a file of another format, a truncated or corrupt
    file raise :class:`FrameCacheError` naming the file and the fix."""
    path = Path(path)
    check_format(fmt)
    if not path.exists():
        raise FrameCacheError(f"frame file {path} is missing; {_redo(path)}")
    actual = _sniff(path)
    if actual is None:
        raise FrameCacheError(f"frame file {path} is corrupt (not a {fmt} frame file); {_redo(path)}")
    if actual != fmt:
        raise FrameCacheError(
            f"frame file {path} holds {actual!r} frames but the cache's prepare.json says frames={fmt!r}: the "
            f"folder mixes formats; prepare it again into a new folder with `vaanet prepare --frames {fmt} --out NEW`")
    if fmt == "raw":
        try:
            frames = np.load(path, mmap_mode="r")
        except (ValueError, OSError) as e:
            raise FrameCacheError(f"frame file {path} is truncated or corrupt ({e}); {_redo(path)}") from None
        if frames.dtype != np.uint8 or frames.ndim != 4:
            raise FrameCacheError(f"frame file {path} is not uint8 [T, H, W, 3] ({frames.dtype} {frames.shape}); "
                                  f"{_redo(path)}")
        return frames
    return JpegFrames(path, device)


class JpegFrames:
    """Reader of a packed JPEG frame file (see the module docstring for the layout)."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        self.path, self.device = Path(path), device
        size = self.path.stat().st_size
        with self.path.open("rb") as f:
            head = f.read(_HEADER.size)
            if len(head) < _HEADER.size or head[:8] != JPEG_MAGIC:
                raise FrameCacheError(f"frame file {self.path} is corrupt (bad header); {_redo(self.path)}")
            _, T, H, W, self.quality = _HEADER.unpack(head)
            table = f.read(8 * (T + 1))
        if len(table) < 8 * (T + 1):
            raise FrameCacheError(f"frame file {self.path} is truncated (offset table incomplete); {_redo(self.path)}")
        start = _HEADER.size + 8 * (T + 1)
        self.offsets = np.frombuffer(table, "<u8").astype(np.int64) + start
        if self.offsets[-1] != size or T < 1 or np.any(np.diff(self.offsets) <= 0):
            raise FrameCacheError(
                f"frame file {self.path} is truncated or corrupt ({size} bytes, its offset table says "
                f"{int(self.offsets[-1])}); {_redo(self.path)}")
        self.shape = (T, H, W, 3)
        self._data = None

    def __len__(self) -> int:
        return self.shape[0]

    def _blobs(self, frames: np.ndarray) -> list:
        """The JPEG streams of sorted unique ``frames``, read one contiguous run at a time."""
        import torch

        if self._data is None:
            self._data = np.memmap(self.path, np.uint8, mode="r")
        o = self.offsets
        breaks = np.flatnonzero(np.diff(frames) != 1) + 1
        out = []
        for run in np.split(frames, breaks):
            a = o[run[0]]
            buf = torch.from_numpy(np.array(self._data[a:o[run[-1] + 1]]))
            out += [buf[o[i] - a:o[i + 1] - a] for i in run]
        return out

    def _decode_unique(self, indices, device, crop=()):
        """Frames ``indices`` decoded once each: (uint8 [U, h, w, 3] HWC-contiguous, the gather index into
        it or None). ``crop`` (row and column slices) is applied before the one copy."""
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        idx = np.atleast_1d(np.arange(self.shape[0])[indices])
        uniq, inverse = np.unique(idx, return_inverse=True)
        try:
            imgs = decode_jpeg(self._blobs(uniq), mode=ImageReadMode.RGB, device=device or self.device)
        except RuntimeError as e:
            raise FrameCacheError(f"frame file {self.path}: a frame cannot be decoded ({e}); {_redo(self.path)}") from None
        if any(tuple(im.shape[1:]) != self.shape[1:3] for im in imgs):
            raise FrameCacheError(f"frame file {self.path}: a frame decodes to another size than "
                                  f"{self.shape[1:3]}; {_redo(self.path)}")
        # decode_jpeg returns HWC memory as a CHW view: crop the HWC views, then one contiguous copy
        out = torch.stack([im.permute(1, 2, 0)[crop] for im in imgs])
        same = len(uniq) == len(idx) and bool((np.diff(idx) > 0).all())
        return out, None if same else torch.from_numpy(inverse.reshape(-1))

    def decode(self, indices, device: str | None = None):
        """uint8 [N, H, W, 3] tensor of frames ``indices`` (on ``device``; decoded there for CUDA)."""
        out, inverse = self._decode_unique(indices, device)
        return out if inverse is None else out[inverse.to(out.device)]

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        scalar = np.ndim(key[0]) == 0 and not isinstance(key[0], slice)
        out, inverse = self._decode_unique(key[0], None, key[1:])
        out = (out if inverse is None else out[inverse]).cpu().numpy()
        return out[0] if scalar else out


def open_mfcc(path: str | Path) -> np.ndarray:
    """A video's cached MFCCs, float [frames, n_mfcc] (memory-mapped); a missing, truncated or corrupt
    file raises :class:`FrameCacheError` naming the file and the fix."""
    path = Path(path)
    if not path.exists():
        raise FrameCacheError(f"MFCC file {path} is missing; {_redo(path)}")
    try:
        mfcc = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise FrameCacheError(f"MFCC file {path} is truncated or corrupt ({e}); {_redo(path)}") from None
    if mfcc.ndim != 2 or mfcc.dtype.kind != "f":
        raise FrameCacheError(f"MFCC file {path} is not float [frames, n_mfcc] ({mfcc.dtype} {mfcc.shape}); "
                              f"{_redo(path)}")
    return mfcc
