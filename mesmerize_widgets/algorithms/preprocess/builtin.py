"""Crop and downsample with OpenCV's area interpolation, streaming chunks into an F-order memmap."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from ...arrays import open_movie
from ...formats.memmap import MemmapWriter
from ..context import RunContext
from ..images import SummaryAccumulator
from ..summary.builtin import save_summary_images


def _output_shape(shape: tuple[int, int], crop, ds: int) -> tuple[tuple[slice, slice], tuple[int, int]]:
    h, w = shape
    r0, r1, c0, c1 = crop if crop is not None else (0, h, 0, w)
    if not (0 <= r0 < r1 <= h and 0 <= c0 < c1 <= w):
        raise ValueError(f"crop {crop} does not fit inside frames of shape {shape}")
    out = ((r1 - r0) // ds, (c1 - c0) // ds)
    if min(out) < 1:
        raise ValueError(f"ds_factor {ds} leaves no pixels of the {r1 - r0}x{c1 - c0} (cropped) frame")
    return (slice(r0, r0 + out[0] * ds), slice(c0, c0 + out[1] * ds)), out


def run(ctx: RunContext) -> dict[str, Any]:
    p = ctx.main
    movie = open_movie(ctx.input_path, var_name_hdf5=p.get("var_name_hdf5", "mov"))
    ds, tds = p.get("ds_factor", 1), p.get("temporal_ds", 1)
    (rows, cols), out_shape = _output_shape(movie.shape[1:3], p.get("crop"), ds)
    n_out = len(movie) // tds
    if n_out < 1:
        raise ValueError(f"temporal_ds {tds} is longer than the movie ({len(movie)} frames)")
    chunk = max(tds, p.get("chunk_frames", 200) // tds * tds)
    acc = SummaryAccumulator(out_shape)
    with MemmapWriter(ctx.output_dir, f"{ctx.prefix}_preprocess", out_shape, order="F") as writer:
        for start in range(0, n_out * tds, chunk):
            stop = min(start + chunk, n_out * tds)
            frames = np.asarray(movie[start:stop, rows, cols], dtype=np.float32)
            if tds > 1:
                frames = frames.reshape(-1, tds, *frames.shape[1:]).mean(axis=1)
            if ds > 1:
                frames = np.stack(
                    [cv2.resize(f, out_shape[::-1], interpolation=cv2.INTER_AREA) for f in frames]
                )
            writer.write(frames)
            acc.add(frames)
            ctx.progress(stop / (n_out * tds), f"{stop // tds}/{n_out} frames")
    outputs = save_summary_images(ctx, acc)
    outputs["preprocess-output-path"] = writer.path
    return outputs
