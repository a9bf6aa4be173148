"""NoRMCorre-style registration primitives, numpy/scipy/OpenCV only.

Conventions (CaImAn's, and :mod:`mesmerize_widgets.sim`'s): a shift ``s = [dy, dx]`` is the
shift to APPLY to a frame to register it, ``registered(q) = frame(q - s)``. Internally the
cross-correlation peak gives the displacement ``d = -s`` of the frame relative to the template.

Sub-pixel accuracy: the integer peak of the FFT cross-correlation is refined by evaluating the
correlation on a 1/10 px grid around it with a matrix-multiply DFT (Guizar-Sicairos et al. 2008,
as CaImAn and scikit-image do), then by a parabola through the best grid point and its
neighbours, so estimates are continuous rather than quantised to 0.1 px. FFTs are OpenCV's
(float32); template spectra are computed once per template.
"""

from __future__ import annotations

import cv2
import numpy as np
import scipy.fft as sfft

UPSAMPLE = 10  # refinement grid: 1/UPSAMPLE px
_BLAS_1THREAD = 1 << 18  # multiply-adds below which OpenBLAS keeps a product on one thread
_HALF_WINDOW = int(np.ceil(UPSAMPLE * 1.5)) // 2  # +-0.7 px around the integer peak


# -- 1-photon high-pass ----------------------------------------------------------------------
def highpass_kernel(gSig_filt: tuple[int, ...]) -> np.ndarray:
    """Zero-mean Gaussian kernel on an elliptic support: removes the smooth 1p background.

    Same size rule as CaImAn (``(3 * g) // 2 * 2 + 1`` taps per axis), so ``gSig_filt`` values
    tuned for CaImAn select the same spatial scale here.
    """
    sig = [float(g) for g in gSig_filt][:2]
    if len(sig) == 1:
        sig = sig * 2
    sizes = [(3 * int(g)) // 2 * 2 + 1 for g in sig]
    ky = cv2.getGaussianKernel(sizes[0], sig[0]).ravel()
    kx = cv2.getGaussianKernel(sizes[1], sig[1]).ravel()
    k = np.outer(ky, kx)
    ry, rx = (np.arange(s) - s // 2 for s in sizes)
    inside = (ry[:, None] / max(sizes[0] // 2, 1)) ** 2 + (rx[None, :] / max(sizes[1] // 2, 1)) ** 2 <= 1
    k = np.where(inside, k - k[inside].mean(), 0.0)
    return k.astype(np.float32)


def highpass(frames: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Filter one frame (2-D) or each frame of a stack with ``kernel`` (reflected borders)."""
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim == 2:
        return cv2.filter2D(frames, -1, kernel, borderType=cv2.BORDER_REFLECT)
    return np.stack([cv2.filter2D(f, -1, kernel, borderType=cv2.BORDER_REFLECT) for f in frames])


# -- patch grid ------------------------------------------------------------------------------
def patch_starts(n: int, stride: int, overlap: int) -> list[int]:
    """First pixel of each patch along an axis: every ``stride`` px, the last one flush with the edge.

    CaImAn's layout, so patch counts (and the columns of the saved piecewise shifts) agree.
    """
    size = stride + overlap
    if size > n:
        raise ValueError(f"patch size {size} exceeds the axis length {n}")
    return [*range(0, n - size, stride), n - size]


def patch_grid(dims: tuple[int, int], strides: tuple[int, int], overlaps: tuple[int, int]):
    """``(row_starts, col_starts, (patch_h, patch_w))`` of the piecewise-rigid patches."""
    rows = patch_starts(dims[0], strides[0], overlaps[0])
    cols = patch_starts(dims[1], strides[1], overlaps[1])
    return rows, cols, (strides[0] + overlaps[0], strides[1] + overlaps[1])


def patch_centers(dims, strides, overlaps) -> tuple[np.ndarray, np.ndarray]:
    """Centre coordinates (rows, cols) of the patches, in pixels."""
    rows, cols, (ph, pw) = patch_grid(dims, strides, overlaps)
    return np.asarray(rows) + (ph - 1) / 2, np.asarray(cols) + (pw - 1) / 2


def extract_patches(image: np.ndarray, rows, cols, size) -> np.ndarray:
    """(n_patches, ph, pw) patches of a 2-D image, row-major (C order of the patch grid)."""
    ph, pw = size
    return np.stack([image[r : r + ph, c : c + pw] for r in rows for c in cols])


# -- cross-correlation ---------------------------------------------------------------------------
# OpenCV's DFT is 1.5-2x faster than pocketfft on these float32 sizes, and its packed (CCS)
# spectra multiply and invert without complex temporaries: the coarse stage uses those. The fine
# stage needs the complex spectrum for the matrix-multiply DFT, so it asks for complex output.
_REAL_INV = cv2.DFT_REAL_OUTPUT | cv2.DFT_SCALE


def _as_stack(images: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(images, dtype=np.float32)
    return x[None] if x.ndim == 2 else x


def _dft_packed(images: np.ndarray) -> np.ndarray:
    """Packed (CCS) real spectra (B, N1, N2) float32 of a stack."""
    x = _as_stack(images)
    out = np.empty_like(x)
    for i in range(len(x)):
        cv2.dft(x[i], out[i])
    return out


def _dft_complex(images: np.ndarray) -> np.ndarray:
    """Full complex spectra (B, N1, N2) complex64 of a real stack."""
    x = _as_stack(images)
    out = np.empty(x.shape, np.complex64)
    view = out.view(np.float32).reshape(*x.shape, 2)
    for i in range(len(x)):
        cv2.dft(x[i], view[i], flags=cv2.DFT_COMPLEX_OUTPUT)
    return out


HP_SIGMA = 3.0  # the template is high-passed at this scale (px) before correlating


def taper_mask(shape: tuple[int, int], inset: tuple[int, int], taper: int = 8) -> np.ndarray:
    """Weights that are 0 within ``inset`` px of the edges, rising to 1 over ``taper`` px (cosine)."""
    axes = []
    for n, k in zip(shape, inset, strict=True):
        k = int(min(max(k, 0), (n - 1) // 2))
        t = max(1, min(taper, (n - 2 * k) // 2))
        x = np.arange(n, dtype=np.float64)
        depth = np.minimum(x - k, n - 1 - k - x) + 1  # 1 at the first pixel past the inset
        ramp = np.clip(depth / t, 0.0, 1.0)
        axes.append(0.5 - 0.5 * np.cos(np.pi * ramp))
    return np.outer(*axes).astype(np.float32)


def _hp(stack: np.ndarray) -> np.ndarray:
    out = np.empty_like(stack)
    for i, im in enumerate(stack):
        cv2.GaussianBlur(im, (0, 0), HP_SIGMA, out[i], borderType=cv2.BORDER_REFLECT)
        np.subtract(im, out[i], out=out[i])
    return out


def highpass_for_matching(images: np.ndarray) -> np.ndarray:
    """The band the matcher compares: smooth background removed (float32, same shape)."""
    x = np.ascontiguousarray(images, dtype=np.float32)
    return _hp(x[None])[0] if x.ndim == 2 else _hp(x)


def _windowed(hp: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``(hp - weighted mean) * mask``: zero-mean under the window, so the DC term drops out."""
    x = hp * mask
    mu = x.sum(axis=(-2, -1), keepdims=True) / mask.sum()
    x -= mu * mask
    return x


TEMPLATE_SIGMA = 0.7  # px: light blur of the rigid template (its pixel noise, not the cells)


def smooth_template(template: np.ndarray, sigma: float = TEMPLATE_SIGMA) -> np.ndarray:
    """The template (or a stack of templates) lightly blurred, float32.

    A template averages a limited number of frames, and its leftover pixel noise correlates
    with every frame the same way, biasing each estimate by an amount that depends on where
    the frame sits. A 0.7 px Gaussian removes most of that noise and keeps cell-sized structure;
    being symmetric it does not move the correlation peak. Measured on simulated drift movies:
    rigid shift error 0.124 -> 0.095 px with the initial template; patch templates, already
    blurred by the non-rigid motion the rigid template averages over, do not gain (0.207 ->
    0.224 px), so the piecewise pass matches them unblurred.
    """
    t = np.asarray(template, dtype=np.float32)
    if t.ndim == 2:
        return cv2.GaussianBlur(t, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return np.stack([cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REFLECT) for x in t])


class Matcher:
    """Two-stage sub-pixel matcher of images (already high-passed) to one template or a stack.

    Plain circular FFT correlation is biased by the wrapped-around edges and by smooth
    background, by up to tenths of a pixel. Here:

    1. coarse: the high-passed template, windowed to zero within ``search + 1`` px of its
       edges, is correlated with the whole image, so every candidate shift up to ``search``
       overlaps real image content: an unbiased integer peak;
    2. fine: the image is moved by that integer shift (exactly, by slicing) and both it and the
       template are multiplied by the same tapered window; their correlation is then symmetric
       about the true residual (< 1 px), located on a 1/10 px grid (matrix-multiply DFT around
       the peak only) and by a parabola.

    Template spectra are computed once per template; with a stack of templates (patches) the
    i-th image is matched to the i-th template.
    """

    def __init__(self, template: np.ndarray, coarse_inset: tuple[int, int], fine_inset: tuple[int, int],
                 smooth: float = 0.0):
        t = np.asarray(template, dtype=np.float32)
        t = _as_stack(highpass_for_matching(smooth_template(t, smooth) if smooth > 0 else t))
        self.shape = t.shape[-2:]
        self.coarse_ref = _dft_packed(_windowed(t, taper_mask(self.shape, coarse_inset)))
        self.fine_mask = taper_mask(self.shape, fine_inset)
        self.fine_ref = np.conj(_dft_complex(_windowed(t, self.fine_mask)))
        self._refine = _Refiner(self.shape)

    def _ref(self, refs: np.ndarray, i: int) -> np.ndarray:
        return refs[i if len(refs) > 1 else 0]

    def coarse(self, hp_images: np.ndarray, lo, hi, center=(0.0, 0.0)) -> np.ndarray:
        """Integer displacements (B, 2) within [lo, hi]."""
        x = _as_stack(hp_images)
        win = _Window(self.shape, lo, hi)
        corr = np.empty((len(x), len(win.r), len(win.c)), np.float32)
        spec = np.empty(self.shape, np.float32)
        for i in range(len(x)):
            cv2.dft(x[i], spec)
            cc = cv2.idft(cv2.mulSpectrums(spec, self._ref(self.coarse_ref, i), 0, conjB=True), flags=_REAL_INV)
            corr[i] = win.take(cc)
        d0, is_flat = win.peak(corr)
        d0[is_flat] = np.clip(np.round(np.asarray(center, dtype=np.float64)), win.ilo, win.ihi)
        return d0

    def fine(self, aligned_hp: np.ndarray) -> np.ndarray:
        """Sub-pixel residual displacements (B, 2) of integer-aligned images, within +-1 px."""
        x = _windowed(_as_stack(aligned_hp), self.fine_mask)
        prod = _dft_complex(x)
        prod *= self.fine_ref
        win = _Window(self.shape, (-1.0, -1.0), (1.0, 1.0))
        corr = np.empty((len(x), len(win.r), len(win.c)), np.float32)
        pv = prod.view(np.float32).reshape(*prod.shape, 2)
        for i in range(len(x)):
            corr[i] = win.take(cv2.idft(pv[i], flags=_REAL_INV))
        d0, is_flat = win.peak(corr)
        d = self._refine(prod, d0)
        d[is_flat] = 0.0
        return np.clip(d, -1.0, 1.0)


class _Window:
    """The integer lags in [lo, hi] of a circular correlation, and its peak there."""

    def __init__(self, shape: tuple[int, int], lo, hi):
        self.ilo = np.ceil(np.asarray(lo, dtype=np.float64) - 1e-9).astype(int)
        self.ihi = np.floor(np.asarray(hi, dtype=np.float64) + 1e-9).astype(int)
        self.r = np.arange(self.ilo[0], self.ihi[0] + 1)
        self.c = np.arange(self.ilo[1], self.ihi[1] + 1)
        self._ix = np.ix_(self.r % shape[0], self.c % shape[1])

    def take(self, cc: np.ndarray) -> np.ndarray:
        return cc[self._ix]

    def peak(self, corr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(integer displacements (B, 2), flat-correlation flags (B,)).

        A flat correlation (constant image) gives no evidence of motion; callers choose its value.
        """
        flat = corr.reshape(len(corr), -1).astype(np.float64)
        best = flat.argmax(axis=1)
        nc = len(self.c)
        d0 = np.stack([self.r[best // nc], self.c[best % nc]], axis=1).astype(np.float64)
        spread = flat.max(axis=1) - flat.min(axis=1)
        is_flat = spread <= 1e-6 * np.maximum(np.abs(flat).max(axis=1), 1e-30)
        return d0, is_flat


def _parabola(fm: np.ndarray, f0: np.ndarray, fp: np.ndarray) -> np.ndarray:
    denom = fm - 2 * f0 + fp
    with np.errstate(invalid="ignore", divide="ignore"):
        off = np.where(denom < 0, 0.5 * (fm - fp) / denom, 0.0)
    return np.clip(np.nan_to_num(off), -0.5, 0.5)


class _Refiner:
    """Correlation on a 1/UPSAMPLE px grid around integer peaks, from the product spectrum.

    A matrix-multiply DFT evaluated only on the (2k+1)^2 grid points (Guizar-Sicairos et al.
    2008): the phase factors split into a per-peak part and a fixed grid part, computed once,
    so each call costs two small complex64 matrix products per image.
    """

    def __init__(self, shape: tuple[int, int]):
        n1, n2 = shape
        self.shape = shape
        self.h2 = n2 // 2 + 1
        k = _HALF_WINDOW
        offs = np.arange(-k, k + 1) / UPSAMPLE
        self.f1 = sfft.fftfreq(n1, 1.0 / n1)
        self.f2 = np.arange(self.h2, dtype=np.float64)
        w2 = np.full(self.h2, 2.0)  # the half spectrum stands for both k and -k
        w2[0] = 1.0
        if n2 % 2 == 0:
            w2[-1] = 1.0
        self.w2 = w2
        self.g1 = np.exp((2j * np.pi / n1) * offs[:, None] * self.f1[None, :]).astype(np.complex64)  # (m, n1)
        self.g2 = (np.exp((2j * np.pi / n2) * self.f2[:, None] * offs[None, :]) * w2[:, None]).astype(np.complex64)

    def __call__(self, prod: np.ndarray, d0: np.ndarray) -> np.ndarray:
        """Refined displacements (B, 2) near the integer peaks ``d0`` of the full spectra ``prod``."""
        n1, n2 = self.shape
        b = len(d0)
        a1 = np.exp((2j * np.pi / n1) * d0[:, 0, None] * self.f1[None, :]).astype(np.complex64)  # (B, n1)
        a2 = np.exp((2j * np.pi / n2) * d0[:, 1, None] * self.f2[None, :]).astype(np.complex64)  # (B, h2)
        k = _HALF_WINDOW
        m = 2 * k + 1
        prod = np.broadcast_to(prod, (b, n1, n2))
        # one image at a time, the contraction over n1 in row blocks small enough that BLAS runs
        # each product on one thread (OpenBLAS threads products above 2**18 multiply-adds, and
        # its threads spin: on a busy machine a threaded product of this size takes 10-100x
        # longer than a single-threaded one)
        step = max(1, _BLAS_1THREAD // (m * self.h2))
        fine = np.empty((b, m, m))
        for i in range(b):
            e1 = self.g1 * a1[i]  # (m, n1)
            e2 = self.g2 * a2[i][:, None]  # (h2, m)
            x = np.zeros((m, self.h2), np.complex64)
            for r in range(0, n1, step):
                x += e1[:, r : r + step] @ prod[i, r : r + step, : self.h2]
            fine[i] = np.real(x @ e2)
        idx = fine.reshape(b, -1).argmax(axis=1)
        i, j = idx // m, idx % m
        bi = np.arange(b)
        ic, jc = np.clip(i, 1, m - 2), np.clip(j, 1, m - 2)
        fi = _parabola(fine[bi, ic - 1, j], fine[bi, ic, j], fine[bi, ic + 1, j])
        fj = _parabola(fine[bi, i, jc - 1], fine[bi, i, jc], fine[bi, i, jc + 1])
        fi = np.where((i == ic), fi, 0.0)
        fj = np.where((j == jc), fj, 0.0)
        return d0 + np.stack([(i - k + fi) / UPSAMPLE, (j - k + fj) / UPSAMPLE], axis=1)


# -- applying shifts -------------------------------------------------------------------------
def _fill_border(img: np.ndarray, shift: np.ndarray, border_nan, low: float) -> None:
    """Overwrite the strips a rigid shift uncovered, as CaImAn does for each border_nan mode."""
    if border_nan is False:
        return
    h, w = img.shape
    # only one of top/bottom (left/right) is non-zero: the sign of the shift picks the side
    top, left = (min(int(np.ceil(max(v, 0.0))), n - 1) for v, n in zip(shift, (h, w), strict=True))
    bottom, right = (min(int(np.ceil(max(-v, 0.0))), n - 1) for v, n in zip(shift, (h, w), strict=True))
    if border_nan == "copy":
        if top:
            img[:top] = img[top]
        if bottom:
            img[h - bottom :] = img[h - bottom - 1]
        if left:
            img[:, :left] = img[:, left, None]
        if right:
            img[:, w - right :] = img[:, w - right - 1, None]
        return
    value = np.nan if border_nan is True else low
    if top:
        img[:top] = value
    if bottom:
        img[h - bottom :] = value
    if left:
        img[:, :left] = value
    if right:
        img[:, w - right :] = value


def cubic_weights(frac: float, a: float = -0.5) -> np.ndarray:
    """Cubic-convolution weights of the 4 samples at -1, 0, 1, 2 around a point ``frac`` past
    sample 0: a translation has the same weights at every pixel, so a separable 4-tap filter
    shifts a frame exactly. ``a=-0.5``: Keys (Catmull-Rom); ``a=-0.75``: OpenCV's INTER_CUBIC."""
    x = np.array([1.0 + frac, frac, 1.0 - frac, 2.0 - frac])
    near = (a + 2) * x**3 - (a + 3) * x**2 + 1
    far = a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return np.where(x <= 1, near, far).astype(np.float32)


def shift_rigid(frame: np.ndarray, shift, border_nan="copy", use_opencv: bool = True) -> np.ndarray:
    """Apply a rigid shift ``[dy, dx]``: bicubic warp (clipped to the frame's range) or FFT phase."""
    frame = np.asarray(frame, dtype=np.float32)
    s = np.asarray(shift, dtype=np.float64)
    lo, hi = float(frame.min()), float(frame.max())
    if use_opencv:
        m = np.array([[1.0, 0.0, s[1]], [0.0, 1.0, s[0]]], dtype=np.float64)
        out = cv2.warpAffine(frame, m, frame.shape[::-1], flags=cv2.INTER_CUBIC,
                             borderMode=cv2.BORDER_REFLECT)
        np.clip(out, lo, hi, out=out)
    else:
        n1, n2 = frame.shape
        ramp = np.exp(-2j * np.pi * (sfft.fftfreq(n1)[:, None] * s[0] + sfft.rfftfreq(n2)[None, :] * s[1]))
        out = sfft.irfft2(sfft.rfft2(frame, workers=1) * ramp, s=frame.shape, workers=1).astype(np.float32)
    _fill_border(out, s, border_nan, lo)
    return out


def _interp_matrix(n: int, centers: np.ndarray) -> np.ndarray:
    """(n, len(centers)) linear-interpolation weights from patch centres to pixels (clamped)."""
    x = np.clip(np.arange(n, dtype=np.float64), centers[0], centers[-1])
    w = np.zeros((n, len(centers)))
    if len(centers) == 1:
        w[:] = 1.0
        return w
    j = np.clip(np.searchsorted(centers, x, side="right") - 1, 0, len(centers) - 2)
    t = (x - centers[j]) / (centers[j + 1] - centers[j])
    w[np.arange(n), j] = 1 - t
    w[np.arange(n), j + 1] = t
    return w


class FieldUpsampler:
    """Turns a shift grid (one value per patch) into a per-pixel field.

    Default: ``cv2.resize`` of the grid to the frame (CaImAn's default). ``centers`` given:
    bilinear interpolation between the actual patch centres, clamped outside them (CaImAn's
    ``shifts_interpolate``, which uses cubic interpolation there).
    """

    def __init__(self, dims: tuple[int, int], centers: tuple[np.ndarray, np.ndarray] | None = None):
        self.dims = dims
        self._w = None
        if centers is not None:
            self._w = (_interp_matrix(dims[0], centers[0]), _interp_matrix(dims[1], centers[1]))

    def __call__(self, grid: np.ndarray) -> np.ndarray:
        grid = np.asarray(grid, dtype=np.float32)
        if self._w is not None:
            return (self._w[0] @ grid @ self._w[1].T).astype(np.float32)
        return cv2.resize(grid, self.dims[::-1], interpolation=cv2.INTER_LINEAR)


class PiecewiseWarper:
    """Applies per-pixel shift fields with ``cv2.remap`` (bicubic), border per ``border_nan``."""

    def __init__(self, dims: tuple[int, int], border_nan="copy"):
        self.gy, self.gx = np.mgrid[0 : dims[0], 0 : dims[1]].astype(np.float32)
        self.border_nan = border_nan

    def __call__(self, frame: np.ndarray, sy: np.ndarray, sx: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame, dtype=np.float32)
        if self.border_nan == "copy":
            mode, value = cv2.BORDER_REPLICATE, 0.0
        elif self.border_nan is True:
            mode, value = cv2.BORDER_CONSTANT, float("nan")
        elif self.border_nan == "min":
            mode, value = cv2.BORDER_CONSTANT, float(frame.min())
        else:
            mode, value = cv2.BORDER_CONSTANT, 0.0
        return cv2.remap(frame, self.gx - sx, self.gy - sy, cv2.INTER_CUBIC,
                         borderMode=mode, borderValue=value)


BIN_FRAMES = 10  # frames per bin of bin_median


def bin_median(frames: np.ndarray, window: int = BIN_FRAMES) -> np.ndarray:
    """Median over consecutive ``window``-frame means: a template robust to activity bursts."""
    frames = np.asarray(frames, dtype=np.float32)
    n_bins = max(1, len(frames) // window)
    means = np.stack([b.mean(axis=0) for b in np.array_split(frames, n_bins)])
    return np.median(means, axis=0).astype(np.float32)
