"""OnACID with numpy/scipy/OpenCV: the item's movie is read frame by frame, never held.

Steps: the first ``init_batch`` frames are read, registered (``motion_correct``) and
initialised (``init_method``: ``bare`` = the cnmf core's greedy seeds on the ``tsub``-averaged
batch, then HALS sparse on each seed's disk (:class:`~.online.OnlineCNMF`'s ``refine``),
``cnmf`` = a full builtin CNMF fit, ``seeded`` = ``Ain_path`` masks, whose shapes are then
kept: a seed silent for long has no data to reshape it); then every frame is registered to the
init batch's template (matched on a central ``CROP`` px window, shifted by a separable bicubic
filter), fitted by :class:`~.online.OnlineCNMF` (traces, new components, shapes) for
``epochs`` passes. At the end the traces of the last pass are deconvolved (OASIS, as cnmf),
the SNR and spatial r-values computed (one more read of the frames around each component's
peaks) and CaImAn's accept rule applied.

Outputs (keys as for cnmf, files ``{uuid}...``): ``cnmf-hdf5-path`` (CaImAn's layout, online
shifts also as ``estimates/shifts``), the projections and ``corr-img-path`` (of the registered
frames of the first pass), ``shifts`` (``_shifts.npy``: (T, 2) [dy, dx] applied to each frame,
zeros without motion correction), ``n-components-path`` (``_n_components.npy``: int32, the number
of components after each frame processed, all epochs in order, the init batch counted as one
step per frame), ``live-path`` (see below), ``n_components``, ``n_accepted``.

Live components: every ``live_every`` frames (= update_freq, at most 200) and at the end,
``{uuid}_live.npz`` is replaced atomically in the item's output directory, which while the
item runs is the runner's temporary folder (written and read by :mod:`mesmerize_widgets.algorithms.onacid.live`).

Bad input raises a ``ValueError`` naming it: an init_batch longer than the movie, fewer than
:data:`MIN_FRAMES` frames, seed masks of the wrong shape, NaN/inf in any frame, CNN options.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import scipy.sparse as sp

from ...arrays import open_movie
from ...formats.cnmf_hdf5 import Estimates, default_params, save_cnmf
from ..cnmf import core, model
from ..cnmf.builtin import load_masks
from ..cnmf.deconvolution import deconvolve_traces
from ..cnmf.evaluation import accept_thresholds, select_components
from ..context import RunContext
from ..images import SummaryAccumulator
from ..mcorr import registration as R
from ..summary.builtin import save_summary_images
from . import ONACID_GROUPS, SCHEMA
from .live import LIVE_SUFFIX, write_live
from .online import OnlineCNMF, OnlineOptions

MIN_FRAMES = 10  # fewer frames cannot give a noise estimate or a transient
CHUNK = 64  # frames read at once


CROP = 256  # side of the central window frames are matched on (the whole frame when smaller)


def shift_frame(frame: np.ndarray, shift: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``registered(q) = frame(q - shift)`` by separable bicubic interpolation (the bicubic warp
    of :func:`~..mcorr.registration.shift_rigid`, in a quarter of its time): the fractional part
    is a 4-tap filter per axis, the integer part a slice; uncovered borders copy the nearest
    row or column, values are clipped to the frame's range (no cubic overshoot)."""
    frame = np.ascontiguousarray(frame, np.float32)
    h, w = frame.shape
    src = -np.asarray(shift, np.float64)  # sample position relative to q
    n = np.floor(src).astype(int)
    u = src - n
    if u[0] or u[1]:
        g = cv2.sepFilter2D(frame, -1, R.cubic_weights(float(u[1]), -0.75), R.cubic_weights(float(u[0]), -0.75),
                            anchor=(1, 1), borderType=cv2.BORDER_REPLICATE)
    else:
        g = frame
    ny, nx = (int(np.clip(v, -(s - 1), s - 1)) for v, s in zip(n, (h, w), strict=True))
    lo, hi, _, _ = cv2.minMaxLoc(frame)
    out = np.empty_like(frame) if out is None else out
    # out[q] = g[q + n]; the rows/columns that would come from outside copy the nearest edge
    y0, y1 = max(0, -ny), min(h, h - ny)
    x0, x1 = max(0, -nx), min(w, w - nx)
    out[y0:y1, x0:x1] = g[y0 + ny : y1 + ny, x0 + nx : x1 + nx]
    out[:y0, x0:x1] = out[y0, x0:x1]
    out[y1:, x0:x1] = out[y1 - 1, x0:x1]
    out[:, :x0] = out[:, x0 : x0 + 1]
    out[:, x1:] = out[:, x1 - 1 : x1]
    np.minimum(out, hi, out=out)
    np.maximum(out, lo, out=out)
    return out


class Registration:
    """Rigid registration of single frames to a fixed template (the mcorr matcher).

    Only a central ``CROP`` x ``CROP`` window is matched: rigid motion is the same everywhere,
    and a 256 px window holds enough structure for sub-pixel accuracy at a fraction of the
    FFT and refinement cost of a whole 512 px frame."""

    def __init__(self, template: np.ndarray, max_shift: int):
        self.ms = float(max_shift)
        h, w = template.shape
        self.ch, self.cw = min(h, CROP), min(w, CROP)
        self.r0, self.c0 = (h - self.ch) // 2, (w - self.cw) // 2
        self.pad = int(max_shift) + 2
        inset = (int(max_shift) + 1,) * 2
        self.match = R.Matcher(template[self.r0 : self.r0 + self.ch, self.c0 : self.c0 + self.cw], inset, inset)

    def _window(self, frames: np.ndarray) -> np.ndarray:
        """The matched window of each frame with ``pad`` px around it (edge-replicated where
        the frame ends)."""
        k = self.pad
        h, w = frames.shape[1:]
        a0, a1 = self.r0 - k, self.r0 + self.ch + k
        b0, b1 = self.c0 - k, self.c0 + self.cw + k
        sub = frames[:, max(a0, 0) : min(a1, h), max(b0, 0) : min(b1, w)]
        pads = (max(-a0, 0), max(a1 - h, 0), max(-b0, 0), max(b1 - w, 0))
        if any(pads):
            return np.stack([cv2.copyMakeBorder(np.ascontiguousarray(f, np.float32), *pads, cv2.BORDER_REPLICATE)
                             for f in sub])
        return np.ascontiguousarray(sub, np.float32)

    def shifts(self, frames: np.ndarray) -> np.ndarray:
        """Applied shifts (n, 2) [dy, dx] registering ``frames``."""
        if self.ms <= 0:
            return np.zeros((len(frames), 2))
        hp = R.highpass_for_matching(self._window(frames))
        lo, hi = (-self.ms, -self.ms), (self.ms, self.ms)
        k, ch, cw = self.pad, self.ch, self.cw
        d0 = self.match.coarse(hp[:, k : k + ch, k : k + cw], lo, hi).astype(int)
        aligned = np.stack([f[k + dy : k + dy + ch, k + dx : k + dx + cw] for f, (dy, dx) in zip(hp, d0, strict=True)])
        d = np.clip(d0 + self.match.fine(aligned), -self.ms, self.ms)
        return -d

    @staticmethod
    def apply(frames: np.ndarray, shifts: np.ndarray) -> np.ndarray:
        """The registered frames (n, h, w) float32."""
        out = np.empty(frames.shape, np.float32)
        for f, s, o in zip(frames, shifts, out, strict=True):
            shift_frame(f, s, o)
        return out


def _check_finite(frames: np.ndarray, start: int, path: Any) -> None:
    finite = np.isfinite(frames).reshape(len(frames), -1).all(1)
    if not finite.all():
        bad = start + int(np.flatnonzero(~finite)[0])
        raise ValueError(f"frame {bad} of {path} contains NaN or infinite values")


def _downsample(frames: np.ndarray, ds: int) -> np.ndarray:
    if ds <= 1:
        return frames
    h, w = frames.shape[1] // ds, frames.shape[2] // ds
    return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames])


def _rows_F(frames: np.ndarray) -> np.ndarray:
    """(T, d1, d2) -> (T, P): each frame a Fortran-order pixel vector (per-frame transposes are
    cache-friendly, a 3-D transpose is not)."""
    return np.stack([cv2.transpose(np.ascontiguousarray(f, np.float32)).ravel() for f in frames])


def _to_Yr(frames: np.ndarray) -> np.ndarray:
    """(T, d1, d2) -> (P, T) with Fortran pixel order (CaImAn's)."""
    return np.ascontiguousarray(cv2.transpose(_rows_F(frames)))


def _greedy_seeds(Yr: np.ndarray, dims: tuple[int, int], opts: core.Options) -> tuple[sp.csc_matrix, np.ndarray]:
    """The cnmf core's greedy seeds on the temporally downsampled (``tsub``) batch, with their
    traces then projected on every frame of the batch. Footprints are kept sparse: dense
    (P, K) products over the batch cost more than the whole online pass on 512 x 512 frames."""
    P, T0 = Yr.shape
    ts = int(opts.tsub) if T0 >= 2 * int(opts.tsub) > 1 else 1
    Tt = T0 // ts
    Ys = Yr
    if ts > 1:  # mean of ts consecutive frames (strided sums: a mean over a short last axis is slow)
        Ys = Yr[:, 0 : Tt * ts : ts].astype(np.float32)
        for q in range(1, ts):
            Ys += Yr[:, q : Tt * ts : ts]
        Ys /= ts
    Y3 = np.ascontiguousarray(Ys.reshape(dims[1], dims[0], Tt).transpose(1, 0, 2), np.float32)
    del Ys
    nrm = None
    if opts.normalize_init:
        # the noise normalisation greedy_init would do, done once here: it recomputes the
        # normaliser's percentile for every seed it keeps (a second per seed on 512 x 512)
        sn = core.noise_psd(Y3, opts.noise_range)
        nrm = np.maximum(sn, np.percentile(sn, 10) + 1e-6)
        Y3 /= nrm[..., None]
        opts = dataclasses.replace(opts, normalize_init=False)
    A, _ = core.greedy_init(Y3, opts, int(opts.K or 0))
    del Y3
    A = sp.csc_matrix(A)
    if nrm is not None:
        A.data *= nrm.ravel(order="F")[A.indices]
    A = A[:, np.diff(A.indptr) >= 3]
    if not A.shape[1]:
        return A, np.zeros((0, T0), np.float32)
    G = (A.T @ A).toarray().astype(np.float64)
    C = np.linalg.solve(G + 1e-9 * np.eye(len(G)), np.asarray(A.T @ Yr, np.float64))
    C -= np.median(C, axis=1, keepdims=True)  # the baseline: greedy's traces start at the median
    C = np.maximum(C, 0).astype(np.float32)
    keep = C.max(1) > 0
    return A[:, keep], C[keep]


def _initialise(Yr: np.ndarray, dims: tuple[int, int], main: dict[str, Any], params: dict[str, Any],
                input_path: Path | None) -> tuple[np.ndarray, ...]:
    """A, C, b, f on the init batch, by ``init_method``."""
    opts = core.Options.from_main(
        {k: main[k] for k in ("fr", "decay_time", "gSig", "K", "p", "nb", "min_SNR", "rval_thr")})
    core.check_geometry(dims, opts)
    mov = model.Movie(Yr)
    rng = np.random.default_rng(0)
    method = main["init_method"]
    if method == "cnmf":
        res = core.fit(Yr, dims, opts)
        C = res["C"] + res["YrA"]
        return res["A"], C, res["b"], res["f"]
    if method == "seeded":
        if not params.get("Ain_path"):
            raise ValueError("init_method='seeded' needs seed masks: set params['Ain_path'] to an .npy")
        A = load_masks(params["Ain_path"], dims, input_path)
        G = A.astype(np.float64).T @ A
        C = np.maximum(np.linalg.lstsq(G + 1e-9 * np.eye(len(G)), mov.AtY(A), rcond=None)[0], 0)
        C = (C - C.min(1, keepdims=True)).astype(np.float32)
    else:
        A, C = _greedy_seeds(Yr, dims, opts)
    b, f = model.init_background(mov, A, C, opts.nb, rng)
    if method == "seeded":
        # seeds keep their shapes (a neuron silent in the init batch has no data to reshape it):
        # only traces and background are fitted, by HALS sweeps on AᵀY, AᵀA
        Ab = np.hstack([A, b]).astype(np.float64)
        Cf = np.vstack([C, f]).astype(np.float64)
        AtY, AtA = mov.AtY(Ab), Ab.T @ Ab
        for _ in range(10):
            for k in range(len(Cf)):
                if AtA[k, k] > 0:
                    Cf[k] = np.maximum(Cf[k] + (AtY[k] - AtA[k] @ Cf) / AtA[k, k], 0)
        K = A.shape[1]
        return A, Cf[:K], b, Cf[K:]
    # shapes and traces are refined by OnlineCNMF(refine=...), sparse on each neuron's disk
    return A, C, b, f


def r_values_streamed(read: Callable[[np.ndarray], np.ndarray], A: sp.csc_matrix, C: np.ndarray,
                      b: np.ndarray, f: np.ndarray, fr: float, Athresh: float = 0.1,
                      c_order: tuple[int, int] | None = None) -> np.ndarray:
    """The cnmf core's spatial r-values, reading only the frames around each component's peaks
    (``read(frames) -> (n, P)`` registered frames) in chunks, so the movie is never held.

    ``c_order=dims``: ``read`` gives each frame's pixels in C order (no transposes needed);
    by default in Fortran order, as A's rows."""
    K = A.shape[1]
    rv = np.zeros(K)
    if K == 0:
        return rv
    Ad = A.tocsc()
    nA = np.sqrt(np.asarray(Ad.multiply(Ad).sum(0)).ravel())
    AA = (Ad.T @ Ad).toarray() / np.maximum(np.outer(nA, nA), 1e-12)
    np.fill_diagonal(AA, 0)
    loc = model.activity_frames(C, fr)
    frames: list[np.ndarray | None] = []
    for i in range(K):
        if loc[i] is None:
            frames.append(None)
            continue
        idx = set(loc[i].tolist())
        for j in np.flatnonzero(AA[:, i] > Athresh):
            if loc[j] is not None:
                idx -= set(loc[j].tolist())
        frames.append(np.array(sorted(idx if idx else set(loc[i].tolist())), int))
    px = [Ad.indices[Ad.indptr[k] : Ad.indptr[k + 1]] for k in range(K)]
    sums = [np.zeros(len(p)) for p in px]
    # where each footprint's pixels are in what ``read`` returns
    pxr = px if c_order is None else [(p % c_order[0]) * c_order[1] + p // c_order[0] for p in px]
    need = np.unique(np.concatenate([fr_ for fr_ in frames if fr_ is not None] or [np.zeros(0, int)]))
    member = np.zeros((K, C.shape[1]), bool)  # frames each component's sum reads (K x T, as C)
    for k, fr_ in enumerate(frames):
        if fr_ is not None:
            member[k, fr_] = True
    for s in range(0, len(need), CHUNK):
        idx = need[s : s + CHUNK]
        Y = read(idx)
        sel = member[:, idx]
        for k in np.flatnonzero(sel.any(1)):
            sums[k] += Y[np.flatnonzero(sel[k])[:, None], pxr[k]].sum(0)
    for k in range(K):
        if frames[k] is None or len(px[k]) < 3:
            continue
        y = sums[k] / len(frames[k]) - b[px[k]] @ f[:, frames[k]].mean(1)
        a = Ad.data[Ad.indptr[k] : Ad.indptr[k + 1]]
        if np.std(y) > 0 and np.std(a) > 0:
            rv[k] = float(np.corrcoef(y, a)[0, 1])
    return rv


def grouped_params(main: dict[str, Any], dims: tuple[int, int], fname: str) -> dict[str, dict[str, Any]]:
    """Flat ``main`` -> CaImAn's groups, each key in every group that has it."""
    defaults = default_params()
    out: dict[str, dict[str, Any]] = {g: {} for g in ONACID_GROUPS}
    for key, value in main.items():
        for g in ONACID_GROUPS:
            if key in defaults[g]:
                out[g][key] = list(value) if isinstance(value, tuple) and key == "gSig" else value
    out["data"].update(dims=dims, fnames=[fname])
    return out


@dataclasses.dataclass
class _Input:
    """The item's movie as OnACID reads it: float32 frames downsampled by ``ds``."""

    movie: Any
    path: Path | None
    ds: int

    def __len__(self) -> int:
        return len(self.movie)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop), checked for NaN/inf (the passes read every frame once this way)."""
        fr = np.asarray(self.movie[start:stop], np.float32)
        _check_finite(fr, start, self.path)
        return _downsample(fr, self.ds)

    def read_at(self, idx: np.ndarray) -> np.ndarray:
        """Frames ``idx`` again (already checked by the first pass)."""
        return _downsample(np.asarray(self.movie[idx], np.float32), self.ds)


@dataclasses.dataclass
class _Online:
    """What the passes over the movie carry from the initialisation to the results."""

    on: OnlineCNMF
    opts: OnlineOptions
    reg: Registration | None
    shifts: np.ndarray  # (T, 2) [dy, dx] applied to each frame
    acc: SummaryAccumulator
    sn: np.ndarray
    dims: tuple[int, int]
    live: Path
    n_comp: list[int]


def _open_input(ctx: RunContext, main: dict[str, Any]) -> _Input:
    """The item's movie, or a ValueError naming why OnACID cannot run on it."""
    if main["use_cnn"] or main["sniper_mode"]:
        raise ValueError("the CNN classifiers (use_cnn, sniper_mode) are CaImAn-only: set them to "
                         "False or run the item with backend='caiman'")
    movie = open_movie(ctx.input_path, var_name_hdf5=main.get("var_name_hdf5", "mov"))
    if movie.ndim != 3:
        raise ValueError(f"OnACID needs a 2-D movie (t, rows, cols); {ctx.input_path} has shape {movie.shape}")
    T = len(movie)
    if T < MIN_FRAMES:
        raise ValueError(f"{ctx.input_path} has {T} frame(s); OnACID needs at least {MIN_FRAMES}")
    T0 = int(main["init_batch"])
    if T0 > T:
        raise ValueError(f"init_batch={T0} is longer than the movie ({T} frames): set init_batch <= {T}")
    if T0 < MIN_FRAMES:
        raise ValueError(f"init_batch={T0} is too short: OnACID initialises on at least {MIN_FRAMES} frames")
    return _Input(movie, ctx.input_path, int(main["ds_factor"]))


def _online_options(main: dict[str, Any], gSig: tuple[int, ...]) -> OnlineOptions:
    return OnlineOptions(
        gSig=gSig, fr=main["fr"], decay_time=main["decay_time"], min_SNR=main["min_SNR"],
        rval_thr=main["rval_thr"], thresh_fitness_raw=main["thresh_fitness_raw"],
        thresh_overlap=main["thresh_overlap"], N_samples_exceptionality=main["N_samples_exceptionality"],
        max_num_added=main["max_num_added"], min_num_trial=main["min_num_trial"],
        update_freq=int(main["update_freq"]), minibatch_shape=main["minibatch_shape"],
        update_num_comps=main["update_num_comps"], expected_comps=main["expected_comps"],
    )


def _start(ctx: RunContext, src: _Input, main: dict[str, Any], params: dict[str, Any]) -> _Online:
    """Read, register and initialise the first ``init_batch`` frames; write the first snapshot."""
    T, T0, ds = len(src), int(main["init_batch"]), src.ds
    gSig = tuple(max(1, int(round(g / ds))) for g in main["gSig"])
    mshift = int(main["max_shifts_online"]) // ds
    ctx.progress(0.0, f"initialising on {T0} frames")
    init = src.read(0, T0)
    dims = (int(init.shape[1]), int(init.shape[2]))
    shifts = np.zeros((T, 2), np.float32)
    reg = None
    if main["motion_correct"]:
        # register to the median of 10-frame means (robust to bursts; 10x cheaper than a median
        # of frames), then to the mean of the registered batch
        reg = Registration(R.bin_median(init), mshift)
        template = Registration.apply(init, reg.shifts(init)).mean(0)
        reg = Registration(template, mshift)
        sh = reg.shifts(init)
        init = Registration.apply(init, sh)
        shifts[:T0] = sh
    acc = SummaryAccumulator(dims, chunk_dtype=np.float32)
    acc.add(init)
    Yr = _to_Yr(init)
    del init
    sn = core.noise_psd(Yr)
    A, C, b, f = _initialise(Yr, dims, {**main, "gSig": gSig}, params, ctx.input_path)
    oopts = _online_options(main, gSig)
    on = OnlineCNMF(dims, oopts, A if sp.issparse(A) else np.asarray(A), np.asarray(C), np.asarray(b),
                    np.asarray(f), Yr, sn, fixed=main["init_method"] == "seeded",
                    refine=2 if main["init_method"] == "bare" else 0)
    del Yr, A, C
    live = ctx.output(LIVE_SUFFIX)
    write_live(live, on.footprints(), dims, T0, 0, T)
    return _Online(on, oopts, reg, shifts, acc, sn, dims, live, [on.K] * T0)


def _passes(ctx: RunContext, src: _Input, st: _Online, main: dict[str, Any]) -> None:
    """``epochs`` passes, frame by frame, over the frames after the init batch (every frame
    after the first pass); a live snapshot every ``live_every`` frames and at the end."""
    T, T0, epochs = len(src), int(main["init_batch"]), int(main["epochs"])
    live_every = min(int(main["update_freq"]), 200)
    on, reg, shifts = st.on, st.reg, st.shifts
    total = epochs * T - T0
    done = 0
    for ep in range(epochs):
        start = T0 if ep == 0 else 0
        if ep:
            on.start_epoch(0)
        for s in range(start, T, CHUNK):
            e = min(s + CHUNK, T)
            frames = src.read(s, e)
            if reg is not None:
                if ep == 0:
                    shifts[s:e] = reg.shifts(frames)
                frames = Registration.apply(frames, shifts[s:e])
            if ep == 0:
                st.acc.add(frames)
            for y in frames:
                on.fit_next(cv2.transpose(y).ravel())  # Fortran pixel order
                st.n_comp.append(on.K)
                done += 1
                if done % live_every == 0:
                    write_live(st.live, on.footprints(), st.dims, s, ep, T)
            ctx.progress(0.9 * done / max(total, 1),
                         f"epoch {ep + 1}/{epochs}: {e}/{T} frames, {on.K} components")
    write_live(st.live, on.footprints(), st.dims, T, epochs - 1, T)


def _results(ctx: RunContext, src: _Input, st: _Online, main: dict[str, Any]) -> dict[str, Any]:
    """Deconvolve the last pass's traces, evaluate and accept the components, write the files."""
    ctx.progress(0.9, "deconvolving")
    on, dims, shifts = st.on, st.dims, st.shifts
    A = on.footprints()
    noisy, fb = on.traces()
    dec = deconvolve_traces(noisy, int(main["p"]), False, (0.25, 0.5))
    YrA = (noisy - dec["C"]).astype(np.float32)
    snr = core.snr_from_traces(dec["C"] + YrA, st.opts.n_samples)

    def read_registered(idx: np.ndarray) -> np.ndarray:
        fr = src.read_at(idx)
        if st.reg is not None:
            fr = Registration.apply(fr, shifts[idx])
        return fr.reshape(len(fr), -1)  # C pixel order: r_values_streamed(c_order=dims)

    ctx.progress(0.93, "r-values")
    rv = r_values_streamed(read_registered, A, dec["C"], on.b, fb, main["fr"], c_order=dims)
    good, bad = select_components(snr, rv, accept_thresholds(main))
    outputs: dict[str, Any] = save_summary_images(ctx, st.acc)
    corr = np.load(outputs["corr-img-path"])
    est = Estimates(
        A=A, C=dec["C"], S=dec["S"], YrA=YrA, b=on.b.copy(), f=fb, g=dec["g"], sn=st.sn.astype(np.float32),
        bl=dec["bl"], c1=dec["c1"], neurons_sn=dec["neurons_sn"], lam=dec["lam"],
        idx_components=good, idx_components_bad=bad, SNR_comp=np.asarray(snr, float),
        r_values=rv, cnn_preds=np.zeros(0), dims=dims, Cn=corr, noisyC=noisy,
        extra={"shifts": shifts},
    )
    fname = str(ctx.input_path)
    hdf5 = save_cnmf(ctx.output(".hdf5"), est, grouped_params(main, dims, fname), dims=dims, mmap_file=fname)
    np.save(ctx.output("_shifts.npy"), shifts)
    np.save(ctx.output("_n_components.npy"), np.asarray(st.n_comp, np.int32))
    outputs.update({
        "cnmf-hdf5-path": hdf5, "shifts": ctx.output("_shifts.npy"),
        "n-components-path": ctx.output("_n_components.npy"), "live-path": st.live,
        "n_components": int(A.shape[1]), "n_accepted": int(len(good)),
    })
    ctx.progress(1.0, f"{len(good)} of {A.shape[1]} components accepted")
    return outputs


def run(ctx: RunContext) -> dict[str, Any]:
    """OnACID, builtin (see the module docstring)."""
    params = SCHEMA.validate(ctx.params, fill_defaults=True)
    main = params["main"]
    src = _open_input(ctx, main)
    st = _start(ctx, src, main, params)
    _passes(ctx, src, st, main)
    return _results(ctx, src, st, main)
