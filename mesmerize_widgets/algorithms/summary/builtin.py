"""Summary images with numpy, streaming the movie in chunks."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...arrays import open_movie
from ..context import RunContext
from ..images import SummaryAccumulator, TransposedSummary


def save_summary_images(ctx: RunContext, acc: SummaryAccumulator | TransposedSummary) -> dict[str, Any]:
    """Write the images with mesmerize-core's file names and output keys."""
    outputs: dict[str, Any] = {}
    for kind, image in (("mean", acc.mean()), ("std", acc.std()), ("max", acc.max())):
        path = ctx.output(f"_{kind}_projection.npy")
        np.save(path, image)
        outputs[f"{kind}-projection-path"] = path
    corr = ctx.output("_cn.npy")
    np.save(corr, acc.correlation_image())
    outputs["corr-img-path"] = corr
    return outputs


def run(ctx: RunContext) -> dict[str, Any]:
    p = ctx.main
    movie = open_movie(ctx.input_path, var_name_hdf5=p.get("var_name_hdf5", "mov"))
    n = len(movie) if p.get("max_frames") is None else min(len(movie), p["max_frames"])
    chunk = p.get("chunk_frames", 200)
    acc = SummaryAccumulator(movie.shape[1:3], 8 if p.get("eight_neighbours", True) else 4)
    for start in range(0, n, chunk):
        frames = np.asarray(movie[start : min(start + chunk, n)], dtype=np.float32)
        if not np.isfinite(frames).all():
            bad = start + int(np.flatnonzero(~np.isfinite(frames).reshape(len(frames), -1).all(1))[0])
            raise ValueError(f"frame {bad} of {ctx.input_path} contains NaN or infinite values")
        acc.add(frames)
        ctx.progress(min(start + chunk, n) / n, f"{min(start + chunk, n)}/{n} frames")
    outputs = save_summary_images(ctx, acc)
    outputs["n_frames"] = n
    outputs["dims"] = tuple(int(d) for d in movie.shape[1:3])
    return outputs
