"""Built-in NoRMCorre-class motion correction, streamed in frame chunks over worker processes.

Passes over the movie, as CaImAn's ``MotionCorrect.motion_correct``:

1. an initial template from 12 blocks of 5 consecutive frames spread over the movie, placed at
   the centre of the movie's motion (see :func:`_initial_template`) and refined;
2. ``niter_rig`` rigid passes, each giving a new template: the median over ``splits_rig``
   time splits of the mean corrected frame, moved to the mid-range of the pass's shifts (the
   last rigid pass writes the movie if rigid);
3. piecewise-rigid (``pw_rigid``): one pass registering each patch within
   ``max_deviation_rigid`` of the frame's rigid shift, writing the movie.

Each pass cuts the movie into chunks of at most ``chunk_frames`` frames; a worker opens the
lazy movie itself and streams its chunk SUB_BATCH frames at a time (read, register, warp,
write straight into the preallocated F-order memmap), returning only shifts, template sums and
summary-image partial sums. Memory is bounded by ``n_processes * SUB_BATCH`` frames (plus the
initial template's sample) whatever the movie length.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy.ndimage import median_filter

from ...arrays import open_movie
from ...formats.memmap import memmap_name, require_free_space, reserve
from ...processes import spawn_pool
from ..checkpoint import fsync_file, report_resume
from ..context import RunContext
from ..images import SummaryAccumulator
from ..summary.builtin import save_summary_images
from . import registration as R
from . import resume
from .common import (
    check_movie,
    full_params,
    merge_summary,
    save_shifts,
)

log = logging.getLogger(__name__)

SUB_BATCH = 16  # frames read, registered and written together (bounds worker memory)
N_TEMPLATE_BLOCKS = 12  # blocks of consecutive frames sampled for the initial template
BLOCK_FRAMES = 5  # frames per block: 60 frames in all, as CaImAn's ~50 (the passes refine it)
N_TEMPLATE_ROUNDS = 2  # register-and-median rounds of the initial template
N_MIN_FRAMES = 400  # CaImAn's min_mov: minimum of the first 400 frames


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs besides its frame range and the template (picklable)."""

    path: str
    var_name_hdf5: str
    crop: tuple[slice, slice]
    dims: tuple[int, int]
    max_shifts: tuple[int, int]
    strides: tuple[int, int]
    overlaps: tuple[int, int]
    max_deviation_rigid: int
    upsample_factor_grid: int
    shifts_opencv: bool
    shifts_interpolate: bool
    border_nan: Any
    gSig_filt: tuple[int, ...] | None
    add_to_output: float
    out_path: str | None = None
    summary_ref: np.ndarray | None = None
    #: flush the written frames to disk before returning (a checkpoint will say they are there)
    sync_output: bool = False


# -- per-process state -------------------------------------------------------------------------
_MOVIES: dict[tuple[str, str], Any] = {}


def _movie(s: Settings):
    key = (s.path, s.var_name_hdf5)
    if key not in _MOVIES:
        _MOVIES.clear()
        _MOVIES[key] = open_movie(s.path, var_name_hdf5=s.var_name_hdf5)
    return _MOVIES[key]


def _worker_init() -> None:
    cv2.setNumThreads(1)  # one process per core: no oversubscription


def read_frames(s: Settings, start: int, stop: int) -> np.ndarray:
    """Frames [start, stop) as float32, cropped; NaN/inf is an error naming the frame."""
    frames = np.asarray(_movie(s)[start:stop, s.crop[0], s.crop[1]], dtype=np.float32)
    finite = np.isfinite(frames).reshape(len(frames), -1).all(axis=1)
    if not finite.all():
        bad = start + int(np.flatnonzero(~finite)[0])
        raise ValueError(
            f"frame {bad} of {s.path} contains NaN or infinite values: motion correction needs "
            "finite pixels (CaImAn refuses NaN movies too)"
        )
    return frames


# -- registration of one chunk ----------------------------------------------------------------
class _Registrar:
    """Template matchers and warpers for one template, reused over a chunk's frames."""

    def __init__(self, s: Settings, template: np.ndarray, piecewise: bool):
        self.s = s
        self.kernel = R.highpass_kernel(s.gSig_filt) if s.gSig_filt else None
        self.ms = np.asarray(s.max_shifts, dtype=np.float64)
        inset = tuple(int(m) + 1 for m in s.max_shifts)
        self.match = R.Matcher(template, inset, inset, smooth=R.TEMPLATE_SIGMA)
        self.piecewise = piecewise and s.max_deviation_rigid > 0
        self.pad = int(self.ms.max()) + 2
        if self.piecewise:
            self.rows, self.cols, self.psize = R.patch_grid(s.dims, s.strides, s.overlaps)
            dev = s.max_deviation_rigid
            lim = np.array([(p - 1) // 2 for p in self.psize], dtype=np.float64)
            if dev + 2 > lim.min():
                log.warning("max_deviation_rigid %s is more than half the %s patch; searching "
                            "only +-%s px", dev, self.psize, lim.min() - 2)
            self.dev = np.minimum(dev, lim - 2)
            self.pad += int(np.ceil(self.dev.max())) + 2
            tp = R.extract_patches(template, self.rows, self.cols, self.psize)
            pin = tuple(int(np.ceil(d)) + 2 for d in self.dev)
            self.pmatch = R.Matcher(tp, pin, pin)
            grid = (len(self.rows), len(self.cols))
            if s.shifts_opencv:
                self.fine_grid = grid
            else:  # CaImAn's FFT path reports shifts on a grid upsample_factor_grid x finer
                fs = tuple(max(1, round(st / s.upsample_factor_grid)) for st in s.strides)
                fr, fc, _ = R.patch_grid(s.dims, fs, s.overlaps)
                self.fine_grid = (len(fr), len(fc))
            centers = R.patch_centers(s.dims, s.strides, s.overlaps) if s.shifts_interpolate else None
            if centers is not None and self.fine_grid != grid:
                centers = None
            self.field = R.FieldUpsampler(s.dims, centers)
            self.warp = R.PiecewiseWarper(s.dims, s.border_nan)

    @property
    def n_patches(self) -> int:
        return self.fine_grid[0] * self.fine_grid[1] if self.piecewise else 1

    def reg_frames(self, frames: np.ndarray) -> np.ndarray:
        """The frames as the matcher compares them (1p high-pass if gSig_filt, then its band)."""
        x = R.highpass(frames, self.kernel) if self.kernel is not None else frames
        return R.highpass_for_matching(x)

    def _padded(self, hp: np.ndarray) -> np.ndarray:
        k = self.pad
        return cv2.copyMakeBorder(hp, k, k, k, k, cv2.BORDER_REPLICATE)

    def rigid(self, hp: np.ndarray) -> np.ndarray:
        """Applied rigid shifts (n, 2) of high-passed frames."""
        out = []
        h, w = self.s.dims
        k = self.pad
        for a in range(0, len(hp), SUB_BATCH):
            batch = hp[a : a + SUB_BATCH]
            d0 = self.match.coarse(batch, -self.ms, self.ms).astype(int)
            aligned = np.stack([
                self._padded(f)[k + dy : k + dy + h, k + dx : k + dx + w]
                for f, (dy, dx) in zip(batch, d0, strict=True)
            ])
            d = np.clip(d0 + self.match.fine(aligned), -self.ms, self.ms)
            out.append(-d)
        return np.concatenate(out) if out else np.zeros((0, 2))

    def patches(self, hp_frame: np.ndarray, shift: np.ndarray) -> np.ndarray:
        """Applied per-patch shifts (n_rows, n_cols, 2) within max_deviation_rigid of ``shift``."""
        d_r = -np.asarray(shift, dtype=np.float64)
        base = np.round(d_r).astype(int)
        padded = self._padded(hp_frame)
        k = self.pad
        ph, pw = self.psize

        def cut(offsets: np.ndarray) -> np.ndarray:
            return np.stack([
                padded[k + r + oy : k + r + oy + ph, k + c + ox : k + c + ox + pw]
                for (r, c), (oy, ox) in zip(((r, c) for r in self.rows for c in self.cols), offsets, strict=True)
            ])

        n = len(self.rows) * len(self.cols)
        at_base = cut(np.broadcast_to(base, (n, 2)))
        rel = self.pmatch.coarse(at_base, d_r - self.dev - base, d_r + self.dev - base, center=d_r - base)
        offs = base + rel.astype(int)
        d = offs + self.pmatch.fine(cut(offs))
        d = np.clip(d, d_r - self.dev, d_r + self.dev)
        return (-d).reshape(len(self.rows), len(self.cols), 2)

    def apply(self, frame: np.ndarray, shift: np.ndarray, grid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Corrected frame, and the saved per-patch shifts (n_patches, 2) when piecewise."""
        if grid is None:
            return R.shift_rigid(frame, shift, self.s.border_nan, self.s.shifts_opencv), None
        gy, gx = grid[..., 0].astype(np.float32), grid[..., 1].astype(np.float32)
        if self.fine_grid != gy.shape:
            size = self.fine_grid[::-1]
            gy = cv2.resize(gy, size, interpolation=cv2.INTER_CUBIC)
            gx = cv2.resize(gx, size, interpolation=cv2.INTER_CUBIC)
        out = self.warp(frame, self.field(gy), self.field(gx))
        return out, np.stack([gy.ravel(), gx.ravel()], axis=1)


def process_chunk(task: dict[str, Any]) -> dict[str, Any]:
    """Correct frames [start, stop): the unit of work of a worker process.

    Streams the chunk SUB_BATCH frames at a time (read, register, warp, write, accumulate), so
    a worker holds a few sub-batches, not several copies of its chunk.
    """
    s: Settings = task["settings"]
    start, stop = task["start"], task["stop"]
    reg = _Registrar(s, task["template"], task["piecewise"])
    n = stop - start
    shifts = np.zeros((n, 2))
    els = np.zeros((n, reg.n_patches, 2)) if reg.piecewise else None
    sums = {split: [np.zeros(s.dims), b - a] for split, a, b in task["splits"]}
    acc = None
    if s.out_path is not None:
        acc = SummaryAccumulator(s.dims)
        acc._shift = s.summary_ref  # shared reference so partial sums add up across workers
    for a in range(start, stop, SUB_BATCH):
        b = min(a + SUB_BATCH, stop)
        frames = read_frames(s, a, b)
        reg_frames = reg.reg_frames(frames)
        sh = reg.rigid(reg_frames)
        shifts[a - start : b - start] = sh
        for i in range(len(frames)):  # corrected in place: the raw frame is not needed again
            grid = reg.patches(reg_frames[i], sh[i]) if reg.piecewise else None
            frames[i], e = reg.apply(frames[i], sh[i], grid)
            if e is not None:
                els[a - start + i] = e
        del reg_frames
        for split, lo, hi in task["splits"]:
            lo, hi = max(lo, a), min(hi, b)
            if hi > lo:
                sums[split][0] += np.nansum(frames[lo - a : hi - a], axis=0, dtype=np.float64)
        if s.out_path is not None:
            if s.add_to_output:
                frames += np.float32(s.add_to_output)
            _write_frames(s.out_path, a, frames)
            nan = np.isnan(frames)
            if nan.any():  # border_nan=True: NaN pixels count as the reference (template) value
                np.copyto(frames, s.summary_ref[None].astype(np.float32), where=nan)
            acc.add(frames)
    if s.out_path is not None and s.sync_output:
        fsync_file(s.out_path)
    result: dict[str, Any] = {"start": start, "shifts": shifts, "els": els,
                              "sums": {k: (v[0], v[1]) for k, v in sums.items()}}
    if acc is not None:
        result["acc"] = acc
    return result


def _write_frames(path: str, start: int, frames: np.ndarray) -> None:
    """Write frames at their place in the F-order memmap (pixels in Fortran order per frame)."""
    data = np.ascontiguousarray(frames.transpose(0, 2, 1), dtype="<f4")
    with open(path, "r+b") as fh:
        fh.seek(start * data[0].size * 4)
        fh.write(memoryview(data).cast("B"))


# -- orchestration ----------------------------------------------------------------------------
@contextlib.contextmanager
def _executor(n: int) -> Iterator[Executor | None]:
    """A pool of ``n`` fresh worker processes with single-threaded BLAS/OpenMP (None if n == 1).

    One process per core: multi-threaded BLAS inside each worker only fights for the same
    cores. Fresh interpreters ("spawn") read these variables at start and inherit no threads.
    """
    if n <= 1:
        yield None
        return
    ex = spawn_pool(n, initializer=_worker_init, threads_per_worker=1)
    try:
        yield ex
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def _bounded_map(ex: Executor | None, fn: Callable, tasks: Iterable, limit: int) -> Iterator:
    """Results in task order with at most ``limit`` tasks in flight (bounded memory)."""
    if ex is None:
        for t in tasks:
            yield fn(t)
        return
    it = iter(tasks)
    pending: deque = deque(ex.submit(fn, t) for _, t in zip(range(limit), it, strict=False))
    try:
        while pending:
            res = pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(ex.submit(fn, nxt))
            yield res
    finally:
        for f in pending:
            f.cancel()


def _tasks(n_frames: int, n_splits: int, chunk: int) -> list[tuple[int, int, list]]:
    """Chunks [a, b) of ``chunk`` frames, each with the (split, a, b) pieces of the splits it covers.

    The chunk size alone sets the memory of a task, whatever the movie length or the splits.
    """
    edges = np.linspace(0, n_frames, min(n_splits, n_frames) + 1).round().astype(int)
    out = []
    for a in range(0, n_frames, chunk):
        b = min(a + chunk, n_frames)
        pieces = [(k, max(a, int(edges[k])), min(b, int(edges[k + 1])))
                  for k in range(len(edges) - 1) if edges[k] < b and edges[k + 1] > a]
        out.append((a, b, pieces))
    return out


def _sample_blocks(n_frames: int) -> list[tuple[int, int]]:
    """[a, b) ranges of N_TEMPLATE_BLOCKS runs of consecutive frames spread over the whole movie.

    Consecutive frames barely move, so each block's mean is sharp even under a large slow
    drift; the blocks span the movie (first and last frames included), so together they show
    the movie's range of motion.
    """
    n_blocks = min(N_TEMPLATE_BLOCKS, max(1, n_frames // BLOCK_FRAMES))
    length = min(BLOCK_FRAMES, n_frames // n_blocks)
    starts = np.unique(np.linspace(0, n_frames - length, n_blocks).round().astype(int))
    return [(int(a), int(a) + length) for a in starts]


def wide_search(max_shifts: tuple[int, int], dims: tuple[int, int]) -> tuple[int, int]:
    """Search range for matching two frames that may each lie ``max_shifts`` from the centre.

    Twice ``max_shifts``, bounded so that a quarter of the frame still overlaps at the largest
    shift (and never below ``max_shifts``).
    """
    return tuple(int(max(m, min(2 * m, (3 * d) // 8 - 1))) for m, d in zip(max_shifts, dims, strict=True))


def motion_centre(shifts: np.ndarray, window: int = 5) -> np.ndarray:
    """The centre of a time series of shifts (n, 2): the middle of their range along each axis.

    The mid-range, not the mean or median: a template there leaves every frame within
    ``max_shifts`` whenever the motion spans at most ``2 * max_shifts``, even when most frames
    sit at one end (a one-sided drift). The range is that of a running median over ``window``
    consecutive frames: a few frames matched to a wrong peak (noisy data) would otherwise set
    it, while real motion lasts longer than that.
    """
    shifts = np.asarray(shifts, dtype=np.float64).reshape(-1, 2)
    if window > 1 and len(shifts) > window:
        shifts = median_filter(shifts, size=(window, 1), mode="nearest")
    return 0.5 * (shifts.min(axis=0) + shifts.max(axis=0))


def recentre(template: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """The template moved so that shifts relative to it are the old ones minus ``centre``.

    ``T'(q) = T(q + c)``: a frame registered to T by ``s`` is registered to T' by ``s - c``.
    Below 0.05 px the template is kept as it is (an interpolation would only blur it).
    """
    c = np.asarray(centre, dtype=np.float64)
    if np.abs(c).max() < 0.05:
        return template
    return R.shift_rigid(template, -c, "copy").astype(np.float32)


def _for_template_matching(frames: np.ndarray) -> np.ndarray:
    """Sample frames as the template rounds match them: the matcher's band, pixel noise blurred.

    These rounds search up to twice ``max_shifts`` with a template of few frames; on noisy
    movies the pixel noise then gives spurious peaks far from the true one (a real Allen crop:
    3 frames of 5 matched 10 px off), which a 1 px blur removes.
    """
    x = np.stack([cv2.GaussianBlur(f, (0, 0), 1.0, borderType=cv2.BORDER_REFLECT) for f in frames])
    return R.highpass_for_matching(x)


def _initial_template(s: Settings, n_frames: int, kernel) -> tuple[np.ndarray, np.ndarray]:
    """(template in the registration domain, raw mean) at the centre of the movie's motion.

    A template built from the raw frames sits wherever most frames are, and under a one-sided
    drift the frames at the other end then need more than ``max_shifts``. Here the means of
    blocks of consecutive frames (spread over the movie) are matched to the middle block over
    twice ``max_shifts`` (two frames each within ``max_shifts`` of the centre can be that far
    apart) and their median, each moved to the median position, is a first template. Then
    each round registers every sampled frame to the template (the first round again over twice
    ``max_shifts``), takes each block's median shift as its position (robust to a few frames
    matched to a wrong peak) and builds the next template from the frames moved to the
    mid-range of those positions.
    """
    blocks = _sample_blocks(n_frames)
    sample = [read_frames(s, a, b) for a, b in blocks]
    raw_mean = np.mean([f.mean(axis=0) for f in sample], axis=0)
    if kernel is not None:
        sample = [R.highpass(f, kernel) for f in sample]
    means = np.stack([f.mean(axis=0) for f in sample]).astype(np.float32)
    wide_s = _replace(s, max_shifts=wide_search(s.max_shifts, s.dims))
    pos = _Registrar(wide_s, means[len(means) // 2], False).rigid(_for_template_matching(means))
    c = np.median(pos, axis=0)
    template = np.median([R.shift_rigid(m, sh - c, "copy") for m, sh in zip(means, pos, strict=True)], axis=0)
    for k in range(N_TEMPLATE_ROUNDS):
        reg = _Registrar(wide_s if k == 0 else s, template.astype(np.float32), piecewise=False)
        shifts = [reg.rigid(_for_template_matching(part)) for part in sample]
        c = motion_centre(np.stack([np.median(sh, axis=0) for sh in shifts]), window=1)
        means = np.stack([
            np.mean([R.shift_rigid(f, sh - c, "copy") for f, sh in zip(part, sh_part, strict=True)], axis=0)
            for part, sh_part in zip(sample, shifts, strict=True)
        ])
        template = np.median(means, axis=0)
    return template.astype(np.float32), raw_mean


def _min_mov(s: Settings, n_frames: int, kernel) -> float:
    lo = np.inf
    for a in range(0, min(n_frames, N_MIN_FRAMES), 100):
        f = read_frames(s, a, min(a + 100, n_frames, N_MIN_FRAMES))
        if kernel is not None:
            f = R.highpass(f, kernel)
        lo = min(lo, float(f.min()))
    return lo


def _settings(path: str, p: dict[str, Any], crop: tuple[slice, slice], dims: tuple[int, int]) -> Settings:
    """The workers' settings from the full params (no output yet: the passes add it)."""
    return Settings(
        path=path, var_name_hdf5=p["var_name_hdf5"], crop=crop, dims=dims,
        max_shifts=tuple(p["max_shifts"]), strides=tuple(p["strides"]), overlaps=tuple(p["overlaps"]),
        max_deviation_rigid=int(p["max_deviation_rigid"]), upsample_factor_grid=int(p["upsample_factor_grid"]),
        shifts_opencv=bool(p["shifts_opencv"]), shifts_interpolate=bool(p["shifts_interpolate"]),
        border_nan=p["border_nan"], gSig_filt=p["gSig_filt"], add_to_output=0.0,
    )


def _pass_settings(s: Settings, p: dict[str, Any], final: bool, tmp: Path, n_frames: int,
                   min_mov: float, raw_mean: np.ndarray) -> Settings:
    """One pass's settings: the final pass writes the movie, so it allocates the output file.

    Earlier passes only build templates, which need no NaN border strips. With a checkpoint
    folder, workers flush the frames they write before reporting a chunk done.
    """
    if final:  # kept if there: the chunks an interrupted attempt wrote are in it
        reserve(tmp, n_frames * s.dims[0] * s.dims[1] * 4, f"the motion-corrected movie of {n_frames} frames")
        add = -min_mov if p["nonneg_movie"] else 0.0
        return _replace(s, out_path=str(tmp), add_to_output=add,
                        summary_ref=(raw_mean + add).astype(np.float64))
    if s.border_nan is True:
        return _replace(s, border_nan="copy")  # templates need no NaN strips
    return s


def _run_pass(ctx: RunContext, ex: Executor | None, tasks: Iterable[dict[str, Any]], summary: SummaryAccumulator,
              n_frames: int, k: int, n_passes: int) -> tuple[list[dict[str, Any]], dict[int, list]]:
    """The chunks' results of pass ``k`` (template sums taken out) and the sums per time split.

    Summary partial sums are merged into ``summary`` as they come, so memory does not grow
    with the movie's length. Chunks an interrupted attempt saved are loaded, the others
    registered and saved (see :mod:`.resume`).
    """
    n_proc = max(1, int(ctx.n_processes))
    sums: dict[int, list] = {}
    results: list[dict[str, Any]] = []
    done = 0
    resumed = [""]

    def note(starts: list[int], total: int) -> None:
        text = report_resume(f"chunks of pass {k + 1}/{n_passes}", starts, total)
        resumed[0] = f" ({text})" if text else ""

    def compute(todo: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        return _bounded_map(ex, process_chunk, todo, 2 * n_proc)

    for res in resume.results_in_order(ctx.checkpoint_dir, k, tasks, compute, note):
        for key, (tot, cnt) in res["sums"].items():
            acc = sums.setdefault(key, [0.0, 0])
            acc[0] = acc[0] + tot
            acc[1] += cnt
        res.pop("sums")
        part = res.pop("acc", None)
        if part is not None:  # merged at once: memory must not grow with length
            merge_summary(summary, part)
        results.append(res)
        done += len(res["shifts"])
        ctx.progress((k + done / n_frames) / n_passes * 0.97,
                     f"pass {k + 1}/{n_passes}: {done}/{n_frames} frames{resumed[0]}")
    return results, sums


def _next_template(sums: dict[int, list], results: list[dict[str, Any]], kernel: np.ndarray | None) -> np.ndarray:
    """The median over time splits of the mean corrected frame, at the centre of the pass's motion."""
    means = np.stack([tot / cnt for tot, cnt in sums.values() if cnt])
    template = np.median(means, axis=0).astype(np.float32)
    if kernel is not None:
        template = R.highpass(template, kernel)
    # the next pass's shifts are relative to the centre of this pass's motion
    return recentre(template, motion_centre(np.concatenate([r["shifts"] for r in results])))


def _save_outputs(ctx: RunContext, results: list[dict[str, Any]], tmp: Path, summary: SummaryAccumulator,
                  dims: tuple[int, int], n_frames: int, pw: bool) -> dict[str, Any]:
    """Move the written movie to its CaImAn name and save shifts and summary images."""
    kind = "els" if pw else "rig"
    results.sort(key=lambda r: r["start"])
    final_path = ctx.output_dir / memmap_name(f"{ctx.prefix}_{kind}_", dims, n_frames, "F")
    os.replace(tmp, final_path)
    rigid = np.concatenate([r["shifts"] for r in results])
    els = np.concatenate([r["els"] for r in results]) if pw else None
    outputs = save_summary_images(ctx, summary)
    outputs["mcorr-output-path"] = final_path
    outputs["shifts"] = save_shifts(ctx, rigid if not pw else None, els)
    outputs["n_frames"] = n_frames
    outputs["dims"] = dims
    ctx.progress(1.0, "done")
    return outputs


def run(ctx: RunContext) -> dict[str, Any]:
    p = full_params(ctx.main)
    if p["is3D"]:
        raise ValueError("is3D=True (3-D motion correction) is caiman backend only; run with backend='caiman'")
    movie = open_movie(ctx.input_path, var_name_hdf5=p["var_name_hdf5"])
    crop, dims, n_frames = check_movie(movie, p, str(ctx.input_path))
    require_free_space(ctx.output_dir, n_frames * dims[0] * dims[1] * 4,
                       f"the motion-corrected movie ({n_frames} float32 frames of {dims[0]} x {dims[1]})")
    _MOVIES[(str(ctx.input_path), p["var_name_hdf5"])] = movie
    kernel = R.highpass_kernel(p["gSig_filt"]) if p["gSig_filt"] else None
    s = _settings(str(ctx.input_path), p, crop, dims)
    ctx.progress(0.0, "template")
    min_mov = float(p["min_mov"]) if p["min_mov"] is not None else _min_mov(s, n_frames, kernel)
    template, raw_mean = _initial_template(s, n_frames, kernel)

    pw = bool(p["pw_rigid"])
    n_rigid = int(p["niter_rig"]) if pw else max(1, int(p["niter_rig"]))
    n_passes = n_rigid + (1 if pw else 0)
    chunk = int(p["chunk_frames"])
    ck = ctx.checkpoint_dir  # the movie being written stays there until the run succeeds
    tmp = ck / resume.MOVIE_NAME if ck is not None else ctx.output_dir / f".{ctx.prefix}_mcorr.partial"
    s = _replace(s, sync_output=ck is not None)
    first, saved = resume.start_pass(ck, n_passes)
    template = template if saved is None else saved
    results: list[dict[str, Any]] = []
    summary = SummaryAccumulator(dims)
    try:
        with _executor(max(1, int(ctx.n_processes))) as ex:
            for k in range(first, n_passes):
                if k > first or saved is None:
                    resume.save_template(ck, k, template)
                final = k == n_passes - 1
                piecewise = pw and final
                splits = int(p["splits_els"] if piecewise else p["splits_rig"])
                if final:
                    resume.keep_chunks_if_written(ck, k, tmp, n_frames * dims[0] * dims[1] * 4)
                pass_s = _pass_settings(s, p, final, tmp, n_frames, min_mov, raw_mean)
                tasks = ({"settings": pass_s, "start": a, "stop": b, "splits": sp, "template": template,
                          "piecewise": piecewise} for a, b, sp in _tasks(n_frames, splits, chunk))
                results, sums = _run_pass(ctx, ex, tasks, summary, n_frames, k, n_passes)
                if not final:
                    template = _next_template(sums, results, kernel)
    except BaseException:
        if ck is None:  # a checkpoint's movie is kept for the next attempt
            tmp.unlink(missing_ok=True)
        raise
    return _save_outputs(ctx, results, tmp, summary, dims, n_frames, pw)


def _replace(s: Settings, **kw: Any) -> Settings:
    from dataclasses import replace

    return replace(s, **kw)
