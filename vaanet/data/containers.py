"""What counts as a video file: a container FFmpeg demuxes into a real video stream.

FFmpeg opens more than videos. Its ``tty`` demuxer renders any ``.txt`` (or ``.ans``, ``.nfo``...) file as
ANSI-art video frames, and ``bin``/``xbin``/``adf``/``idf`` do the same for other text-art formats; its image
demuxers turn a picture into a one-frame video; subtitle files (``.srt``, ``.vtt``) open with no video stream.
Classifying any of them prints a confident-looking emotion for a README. :func:`check_container` refuses them by
their demuxer and video codec, in ``vaanet predict``, ``analysis.figure3`` and ``vaanet prepare`` alike.
"""
from __future__ import annotations

# demuxers that draw text as frames, and the codecs they yield
TEXT_DEMUXERS = frozenset({"tty", "bin", "xbin", "adf", "idf"})
TEXT_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})
# demuxers of single pictures (a still image is no video either)
IMAGE_DEMUXERS = frozenset({"image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe", "gif_pipe",
                            "svg_pipe", "jpegls_pipe", "qoi_pipe", "pgm_pipe", "ppm_pipe", "pam_pipe"})


def check_container(container, path) -> None:
    """Raise ValueError, naming ``path`` and the fix, unless the open PyAV ``container`` is a video file: one
    with a video stream, from neither a text-art nor an image demuxer, nor a text-art codec."""
    formats = set(container.format.name.split(","))
    if formats & TEXT_DEMUXERS:
        raise ValueError(f"{path} is a text file (FFmpeg would draw it as ANSI art, format "
                         f"{container.format.name}), not a video; pass a video file (mp4, avi, mkv, ...)")
    if formats & IMAGE_DEMUXERS:
        raise ValueError(f"{path} is an image ({container.format.name}), not a video; pass a video file")
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise ValueError(f"{path} has no video stream (format {container.format.name}, streams: "
                         f"{', '.join(kinds)}); pass a video file")
    codec = container.streams.video[0].codec_context.name
    if codec in TEXT_CODECS:
        raise ValueError(f"{path} holds text drawn as video (codec {codec}), not a video; pass a video file")
