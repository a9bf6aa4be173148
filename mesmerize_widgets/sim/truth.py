"""Ground truth of a simulated movie, in CaImAn's conventions so results compare directly.

Conventions (shared by every function of :mod:`mesmerize_widgets.sim`):

* Movies are ``(T, d1, d2)`` arrays: frame, row (y), column (x).
* Spatial matrices (``A``, ``b``) index pixels in Fortran order, ``p = row + col * d1``,
  exactly like CaImAn's ``estimates.A`` / ``estimates.b``.
* Shifts are ``[dy, dx]`` in pixels and are the shift a motion corrector must APPLY to
  register the frame back onto the motion-free reference: CaImAn's
  ``apply_shift_iteration(frame, shifts[t])`` (or ``cv2.warpAffine`` with
  ``M = [[1, 0, dx], [0, 1, dy]]``) gives ``registered(q) = frame(q - shift) = reference(q)``.
  Equivalently, the tissue content of frame ``t`` is displaced by ``-shifts[t]``.
* Intensities are in photon-like units before any TIFF scaling; ``tiff_scale`` and
  ``tiff_offset`` record ``stored = movie * tiff_scale + tiff_offset`` once written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = ["GroundTruth", "load_truth", "field_modes"]


def field_modes(rows: np.ndarray, cols: np.ndarray, dims: tuple[int, int]) -> np.ndarray:
    """Zero-mean low-frequency modes (DCT-II shapes) of the non-rigid field at (rows, cols).

    They average to exactly zero over the pixel grid, so the rigid part of a piecewise
    field equals its spatial mean.  Returns an array ``(3, *rows.shape)``.
    """
    py = np.cos(np.pi * (np.asarray(rows, dtype=np.float64) + 0.5) / dims[0])
    px = np.cos(np.pi * (np.asarray(cols, dtype=np.float64) + 0.5) / dims[1])
    py, px = np.broadcast_arrays(py, px)
    return np.stack([py, px, py * px])


@dataclass
class GroundTruth:
    """Everything that generated a simulated movie (see the module docstring for conventions).

    The motion-free movie is ``A @ C + b @ f + baseline`` plus Poisson-Gaussian noise of
    variance ``noise_sigma**2 + gain * (A @ C + b @ f)``.
    """

    A: sp.csc_matrix  # (d1*d2, K) float32, unit L2-norm columns, Fortran pixel order
    C: np.ndarray  # (K, T) float32 calcium traces (no baseline), C = AR(S)
    S: np.ndarray  # (K, T) float32 AR input: spike_counts * amplitudes[:, None]
    spike_counts: np.ndarray  # (K, T) uint8 number of action potentials per frame
    amplitudes: np.ndarray  # (K,) float32 increment of S per action potential
    g: tuple[float, ...]  # AR coefficients: c_t = sum_i g[i] c_{t-1-i} + s_t
    b: np.ndarray  # (d1*d2, nb) float32 background footprints (incl. resting neuron glow)
    f: np.ndarray  # (nb, T) float32 background traces
    baseline: float  # constant detector offset added to every pixel
    centers: np.ndarray  # (K, 2) float32 [row, col] of each footprint's centre
    shifts: np.ndarray  # (T, 2) float32 [dy, dx] registering shifts (zeros if no motion)
    appear_frame: np.ndarray  # (K,) int first frame at which the neuron may fire
    dims: tuple[int, int]
    fr: float
    noise_sigma: float  # Gaussian (read-out) noise std
    gain: float  # shot-noise variance per unit of signal
    motion: str | None = None
    field_coeffs: np.ndarray | None = None  # (T, 3, 2) non-rigid mode amplitudes [dy, dx]
    params: dict[str, Any] = field(default_factory=dict)
    tiff_scale: float = 1.0
    tiff_offset: float = 0.0

    @property
    def n_neurons(self) -> int:
        return int(self.A.shape[1])

    @property
    def n_frames(self) -> int:
        return int(self.C.shape[1])

    def footprints(self) -> np.ndarray:
        """Dense footprints ``(K, d1, d2)`` float32 (for plotting and matching)."""
        d1, d2 = self.dims
        dense = self.A.toarray().reshape((d1, d2, self.n_neurons), order="F")
        return np.ascontiguousarray(dense.transpose(2, 0, 1))

    def _frames(self, pix_by_time: np.ndarray) -> np.ndarray:
        d1, d2 = self.dims
        n = pix_by_time.shape[1]
        return np.ascontiguousarray(pix_by_time.reshape((d1, d2, n), order="F").transpose(2, 0, 1))

    def background(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Background ``b @ f`` as frames ``(n, d1, d2)`` (no baseline)."""
        return self._frames(self.b @ self.f[:, start:stop])

    def neural(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Neural signal ``A @ C`` as frames ``(n, d1, d2)``."""
        return self._frames(np.asarray(self.A @ self.C[:, start:stop]))

    def clean(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Noise-free, motion-free movie ``A @ C + b @ f + baseline`` for frames [start, stop)."""
        out = self.neural(start, stop)
        out += self.background(start, stop)
        out += np.float32(self.baseline)
        return out

    def noise_std(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Expected per-pixel noise std of the motion-free frames ``(n, d1, d2)``."""
        sig = self.clean(start, stop) - np.float32(self.baseline)
        return np.sqrt(self.noise_sigma**2 + self.gain * np.maximum(sig, 0)).astype(np.float32)

    def shift_field(self, t: int) -> np.ndarray:
        """Registering displacement ``(2, d1, d2)`` [dy, dx] of frame ``t`` at every pixel.

        ``registered(q) = frame(q - field(q))``: i.e. ``cv2.remap(frame, x - field[1],
        y - field[0], ...)`` registers the frame.  For rigid motion every pixel holds
        ``shifts[t]``; for piecewise motion the spatial mean equals ``shifts[t]``.
        """
        d1, d2 = self.dims
        out = np.empty((2, d1, d2), dtype=np.float32)
        out[0] = self.shifts[t, 0]
        out[1] = self.shifts[t, 1]
        if self.field_coeffs is not None:
            modes = field_modes(np.arange(d1)[:, None], np.arange(d2)[None, :], self.dims)
            out += np.einsum("myx,mc->cyx", modes, self.field_coeffs[t]).astype(np.float32)
        return out

    def shift_at(self, t: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Registering displacement [dy, dx] of frame ``t`` at arbitrary (sub-)pixel points.

        Handy to compare with per-patch shifts of a piecewise-rigid corrector (evaluate at
        patch centres).  Returns ``(2, *rows.shape)``.
        """
        rows, cols = np.broadcast_arrays(np.asarray(rows, float), np.asarray(cols, float))
        out = np.empty((2, *rows.shape))
        out[0] = self.shifts[t, 0]
        out[1] = self.shifts[t, 1]
        if self.field_coeffs is not None:
            out += np.einsum(
                "m...,mc->c...", field_modes(rows, cols, self.dims), self.field_coeffs[t]
            )
        return out

    def save(self, path: str | Path) -> Path:
        """Write to a compressed ``.npz`` (no pickles); read back with :func:`load_truth`."""
        path = Path(path)
        A = sp.csc_matrix(self.A)
        arrays: dict[str, Any] = {
            "A_data": A.data,
            "A_indices": A.indices,
            "A_indptr": A.indptr,
            "A_shape": np.asarray(A.shape),
            "C": self.C,
            "S": self.S,
            "spike_counts": self.spike_counts,
            "amplitudes": self.amplitudes,
            "g": np.asarray(self.g, dtype=np.float64),
            "b": self.b,
            "f": self.f,
            "centers": self.centers,
            "shifts": self.shifts,
            "appear_frame": self.appear_frame,
            "dims": np.asarray(self.dims),
            "scalars": np.asarray(
                [
                    self.baseline,
                    self.fr,
                    self.noise_sigma,
                    self.gain,
                    self.tiff_scale,
                    self.tiff_offset,
                ]
            ),
            "motion": np.asarray("" if self.motion is None else self.motion),
            "params": np.asarray(json.dumps(self.params, default=_json_default)),
        }
        if self.field_coeffs is not None:
            arrays["field_coeffs"] = self.field_coeffs
        with open(path, "wb") as fh:  # a file object keeps the exact name (no '.npz' appended)
            np.savez_compressed(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> GroundTruth:
        with np.load(Path(path), allow_pickle=False) as z:
            A = sp.csc_matrix(
                (z["A_data"], z["A_indices"], z["A_indptr"]),
                shape=tuple(int(s) for s in z["A_shape"]),
            )
            baseline, fr, noise_sigma, gain, tscale, toffset = (float(v) for v in z["scalars"])
            motion = str(z["motion"]) or None
            return cls(
                A=A,
                C=z["C"],
                S=z["S"],
                spike_counts=z["spike_counts"],
                amplitudes=z["amplitudes"],
                g=tuple(float(v) for v in z["g"]),
                b=z["b"],
                f=z["f"],
                baseline=baseline,
                centers=z["centers"],
                shifts=z["shifts"],
                appear_frame=z["appear_frame"],
                dims=(int(z["dims"][0]), int(z["dims"][1])),
                fr=fr,
                noise_sigma=noise_sigma,
                gain=gain,
                motion=motion,
                field_coeffs=z["field_coeffs"] if "field_coeffs" in z.files else None,
                params=json.loads(str(z["params"])),
                tiff_scale=tscale,
                tiff_offset=toffset,
            )


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def load_truth(path: str | Path) -> GroundTruth:
    """Read ground truth saved next to a movie: pass the ``.npz`` or the movie path itself.

    For a movie ``name.tif`` the truth is looked up as ``name_truth.npz``.
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.stem + "_truth.npz")
    return GroundTruth.load(path)
