"""OnACID with numpy/scipy/OpenCV: the item's movie is read frame by frame, never held.

Steps: the first ``init_batch`` frames are read, registered (``motion_correct``) and
initialised (``init_method``: ``bare`` = the cnmf core's greedy seeds + HALS, ``cnmf`` = a full
builtin CNMF fit, ``seeded`` = ``Ain_path`` masks, whose shapes are then kept: a seed
silent for long has no data to reshape it); then every frame is registered to the
init batch's template, fitted by :class:`~.online.OnlineCNMF` (traces, new components, shapes)
for ``epochs`` passes. At the end the traces of the last pass are deconvolved (OASIS, as cnmf),
the SNR and spatial r-values computed (one more read of the frames around each component's
peaks) and CaImAn's accept rule applied.

Outputs (keys as for cnmf, files ``{uuid}...``): ``cnmf-hdf5-path`` (CaImAn's layout, online
shifts also as ``estimates/shifts``), the projections and ``corr-img-path`` (of the registered
frames of the first pass), ``shifts`` (``_shifts.npy``: (T, 2) [dy, dx] applied to each frame,
zeros without motion correction), ``n-components-path`` (``_n_components.npy``: int32, the number
of components after each frame processed, all epochs in order, the init batch counted as one
step per frame), ``live-path`` (see below), ``n_components``, ``n_accepted``.

Live components: every ``live_every`` frames (= update_freq, at most 200) and at the end,
``{uuid}_live.npz`` is replaced atomically (temporary file + os.replace) in the item's output
directory, which while the item runs is the runner's temporary folder. It holds ``A_data``,
``A_indices``, ``A_indptr``, ``A_shape`` (CSC, Fortran pixel order, unit-norm columns), ``dims``,
``n_components``, ``frame`` (frames processed in this epoch), ``epoch``, ``n_frames``.

Bad input raises a ``ValueError`` naming it: an init_batch longer than the movie, fewer than
:data:`MIN_FRAMES` frames, seed masks of the wrong shape, NaN/inf in any frame, CNN options.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import scipy.sparse as sp

from ...arrays import open_movie
from ...formats.cnmf_hdf5 import Estimates, default_params, save_cnmf
from ..cnmf import core
from ..cnmf.builtin import load_masks
from ..cnmf.evaluation import select_components
from ..context import RunContext
from ..images import SummaryAccumulator
from ..mcorr import registration as R
from ..summary.builtin import save_summary_images
from . import ONACID_GROUPS, SCHEMA
from .online import OnlineCNMF, OnlineOptions

MIN_FRAMES = 10  # fewer frames cannot give a noise estimate or a transient
CHUNK = 64  # frames read at once


class Registration:
    """Rigid registration of single frames to a fixed template (the mcorr matcher)."""

    def __init__(self, template: np.ndarray, max_shift: int):
        self.ms = float(max_shift)
        inset = (int(max_shift) + 1,) * 2
        self.match = R.Matcher(template, inset, inset)
        self.pad = int(max_shift) + 2

    def shifts(self, frames: np.ndarray) -> np.ndarray:
        """Applied shifts (n, 2) [dy, dx] registering ``frames``."""
        if self.ms <= 0:
            return np.zeros((len(frames), 2))
        hp = R.highpass_for_matching(frames)
        lo, hi = (-self.ms, -self.ms), (self.ms, self.ms)
        d0 = self.match.coarse(hp, lo, hi).astype(int)
        k = self.pad
        h, w = frames.shape[1:]
        aligned = np.stack([
            cv2.copyMakeBorder(f, k, k, k, k, cv2.BORDER_REPLICATE)[k + dy : k + dy + h, k + dx : k + dx + w]
            for f, (dy, dx) in zip(hp, d0, strict=True)
        ])
        d = np.clip(d0 + self.match.fine(aligned), -self.ms, self.ms)
        return -d

    @staticmethod
    def apply(frames: np.ndarray, shifts: np.ndarray) -> np.ndarray:
        return np.stack([R.shift_rigid(f, s, "copy") for f, s in zip(frames, shifts, strict=True)])


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


def _to_Yr(frames: np.ndarray) -> np.ndarray:
    """(T, d1, d2) -> (P, T) with Fortran pixel order (CaImAn's)."""
    return np.ascontiguousarray(frames.transpose(2, 1, 0).reshape(-1, len(frames)))


def write_live(path: Path, A: sp.csc_matrix, dims: tuple[int, int], frame: int, epoch: int, n_frames: int) -> None:
    """Replace the live snapshot atomically, so a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, A_data=A.data.astype(np.float32), A_indices=A.indices, A_indptr=A.indptr,
                     A_shape=np.array(A.shape), dims=np.array(dims), n_components=A.shape[1],
                     frame=frame, epoch=epoch, n_frames=n_frames)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_live(path: str | os.PathLike) -> dict[str, Any]:
    """The live snapshot as ``{"A": csc, "dims", "n_components", "frame", "epoch", "n_frames"}``."""
    with np.load(path) as z:
        A = sp.csc_matrix((z["A_data"], z["A_indices"], z["A_indptr"]), shape=tuple(z["A_shape"]))
        return {"A": A, "dims": tuple(int(d) for d in z["dims"]), "n_components": int(z["n_components"]),
                "frame": int(z["frame"]), "epoch": int(z["epoch"]), "n_frames": int(z["n_frames"])}


def _initialise(Yr: np.ndarray, dims: tuple[int, int], main: dict[str, Any], params: dict[str, Any],
                input_path: Path | None) -> tuple[np.ndarray, ...]:
    """A, C, b, f on the init batch, by ``init_method``."""
    opts = core.Options.from_main(
        {k: main[k] for k in ("fr", "decay_time", "gSig", "K", "p", "nb", "min_SNR", "rval_thr")})
    core.check_geometry(dims, opts)
    mov = core._Movie(Yr)
    rng = np.random.default_rng(0)
    method = main["init_method"]
    T0 = Yr.shape[1]
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
        Y3 = Yr.reshape(dims[1], dims[0], T0).transpose(1, 0, 2)
        A, C = core._init_patch(Y3, opts, opts.K)
        A, C = core._drop_empty(A, C)
    b, f = core._init_background(mov, A, C, opts.nb, rng)
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
    A, C, b, f = core.hals(mov, A, C, b, f, dims, opts, n_outer=2)
    A, C = core._drop_empty(A, C)
    return A, C, b, f


def r_values_streamed(read: Callable[[np.ndarray], np.ndarray], A: sp.csc_matrix, C: np.ndarray,
                      b: np.ndarray, f: np.ndarray, fr: float, Athresh: float = 0.1) -> np.ndarray:
    """The cnmf core's spatial r-values, reading only the frames around each component's peaks
    (``read(frames) -> (n, P)`` registered frames) in chunks, so the movie is never held."""
    K = A.shape[1]
    rv = np.zeros(K)
    if K == 0:
        return rv
    Ad = A.tocsc()
    nA = np.sqrt(np.asarray(Ad.multiply(Ad).sum(0)).ravel())
    AA = (Ad.T @ Ad).toarray() / np.maximum(np.outer(nA, nA), 1e-12)
    np.fill_diagonal(AA, 0)
    loc = core._activity_frames(C, fr)
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
    need = np.unique(np.concatenate([fr_ for fr_ in frames if fr_ is not None] or [np.zeros(0, int)]))
    for s in range(0, len(need), CHUNK):
        idx = need[s : s + CHUNK]
        Y = read(idx)
        for k in range(K):
            if frames[k] is None:
                continue
            m = np.isin(idx, frames[k], assume_unique=True)
            if m.any():
                sums[k] += Y[np.flatnonzero(m)[:, None], px[k]].sum(0)
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


def run(ctx: RunContext) -> dict[str, Any]:
    """OnACID, builtin (see the module docstring)."""
    params = SCHEMA.validate(ctx.params, fill_defaults=True)
    main = params["main"]
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
    ds = int(main["ds_factor"])
    gSig = tuple(max(1, int(round(g / ds))) for g in main["gSig"])
    mshift = int(main["max_shifts_online"]) // ds
    epochs = int(main["epochs"])
    update_freq = int(main["update_freq"])
    live_every = min(update_freq, 200)

    def read(start: int, stop: int) -> np.ndarray:
        fr = np.asarray(movie[start:stop], np.float32)
        _check_finite(fr, start, ctx.input_path)
        return _downsample(fr, ds)

    # -- initialisation ------------------------------------------------------------------------
    ctx.progress(0.0, f"initialising on {T0} frames")
    init = read(0, T0)
    dims = (int(init.shape[1]), int(init.shape[2]))
    shifts = np.zeros((T, 2), np.float32)
    reg = None
    if main["motion_correct"]:
        template = np.median(init, axis=0)
        for _ in range(2):  # register to the median, then to the registered mean
            reg = Registration(template, mshift)
            sh = reg.shifts(init)
            template = Registration.apply(init, sh).mean(0)
        reg = Registration(template, mshift)
        sh = reg.shifts(init)
        init = Registration.apply(init, sh)
        shifts[:T0] = sh
    acc = SummaryAccumulator(dims)
    acc.add(init)
    Yr = _to_Yr(init)
    del init
    sn = core.noise_psd(Yr)
    main_g = {**main, "gSig": gSig}
    A, C, b, f = _initialise(Yr, dims, main_g, params, ctx.input_path)
    oopts = OnlineOptions(
        gSig=gSig, fr=main["fr"], decay_time=main["decay_time"], min_SNR=main["min_SNR"],
        rval_thr=main["rval_thr"], thresh_fitness_raw=main["thresh_fitness_raw"],
        thresh_overlap=main["thresh_overlap"], N_samples_exceptionality=main["N_samples_exceptionality"],
        max_num_added=main["max_num_added"], min_num_trial=main["min_num_trial"],
        update_freq=update_freq, minibatch_shape=main["minibatch_shape"],
        update_num_comps=main["update_num_comps"], expected_comps=main["expected_comps"],
    )
    on = OnlineCNMF(dims, oopts, np.asarray(A), np.asarray(C), np.asarray(b), np.asarray(f), Yr, sn,
                     fixed=main["init_method"] == "seeded")
    del Yr, A, C
    live = ctx.output("_live.npz")
    write_live(live, on.footprints(), dims, T0, 0, T)
    n_comp = [on.K] * T0

    # -- online passes -------------------------------------------------------------------------
    total = epochs * T - T0
    done = 0
    for ep in range(epochs):
        start = T0 if ep == 0 else 0
        if ep:
            on.start_epoch(0)
        for s in range(start, T, CHUNK):
            e = min(s + CHUNK, T)
            frames = read(s, e)
            if reg is not None:
                if ep == 0:
                    shifts[s:e] = reg.shifts(frames)
                frames = Registration.apply(frames, shifts[s:e])
            if ep == 0:
                acc.add(frames)
            for y in frames:
                on.fit_next(y.ravel(order="F"))
                n_comp.append(on.K)
                done += 1
                if done % live_every == 0:
                    write_live(live, on.footprints(), dims, s, ep, T)
            ctx.progress(0.9 * done / max(total, 1),
                         f"epoch {ep + 1}/{epochs}: {e}/{T} frames, {on.K} components")
    write_live(live, on.footprints(), dims, T, epochs - 1, T)

    # -- results -------------------------------------------------------------------------------
    ctx.progress(0.9, "deconvolving")
    A = on.footprints()
    noisy, fb = on.traces()
    dec = core.deconvolve_traces(noisy, int(main["p"]), False, (0.25, 0.5))
    YrA = (noisy - dec["C"]).astype(np.float32)
    N = oopts.n_samples
    snr = core.snr_from_traces(dec["C"] + YrA, N)

    def read_registered(idx: np.ndarray) -> np.ndarray:
        fr = _downsample(np.asarray(movie[idx], np.float32), ds)
        if reg is not None:
            fr = Registration.apply(fr, shifts[idx])
        return _to_Yr(fr).T

    ctx.progress(0.93, "r-values")
    rv = r_values_streamed(read_registered, A, dec["C"], on.b, fb, main["fr"])
    quality = {"min_SNR": main["min_SNR"], "rval_thr": main["rval_thr"], "SNR_lowest": 0.5,
               "rval_lowest": -1.0}
    good, bad = select_components(snr, rv, quality)
    outputs: dict[str, Any] = save_summary_images(ctx, acc)
    corr = np.load(outputs["corr-img-path"])
    est = Estimates(
        A=A, C=dec["C"], S=dec["S"], YrA=YrA, b=on.b.copy(), f=fb, g=dec["g"], sn=sn.astype(np.float32),
        bl=dec["bl"], c1=dec["c1"], neurons_sn=dec["neurons_sn"], lam=dec["lam"],
        idx_components=good, idx_components_bad=bad, SNR_comp=np.asarray(snr, float),
        r_values=rv, cnn_preds=np.zeros(0), dims=dims, Cn=corr, noisyC=noisy,
        extra={"shifts": shifts},
    )
    fname = str(ctx.input_path)
    hdf5 = save_cnmf(ctx.output(".hdf5"), est, grouped_params(main, dims, fname), dims=dims, mmap_file=fname)
    np.save(ctx.output("_shifts.npy"), shifts)
    np.save(ctx.output("_n_components.npy"), np.asarray(n_comp, np.int32))
    outputs.update({
        "cnmf-hdf5-path": hdf5, "shifts": ctx.output("_shifts.npy"),
        "n-components-path": ctx.output("_n_components.npy"), "live-path": live,
        "n_components": int(A.shape[1]), "n_accepted": int(len(good)),
    })
    ctx.progress(1.0, f"{len(good)} of {A.shape[1]} components accepted")
    return outputs
