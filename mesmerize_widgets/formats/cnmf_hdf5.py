"""CaImAn's CNMF ``.hdf5`` files (``CNMF.save`` / ``load_CNMF``), written and read without CaImAn.

Layout of a file written by ``cnm.save(path)`` (CaImAn 1.9.9 .. 1.12)::

    /                attrs: mmap_file (str)
    /dims            int array (d1, d2)
    /dview           b'NoneType'
    /remove_very_bad_comps, /skip_refinement   bool
    /estimates/      one entry per attribute of ``Estimates``
    /estimates/A/    data, indptr, indices, shape   (CSC, pixels x K, Fortran pixel order)
    /params/<group>/ one entry per parameter (data, init, merging, motion, online, patch,
                     preprocess, quality, ring_CNN, spatial, temporal)

Values are encoded the way CaImAn's ``recursively_save_dict_contents_to_group`` does, so the
files are interchangeable both ways: strings become attributes of their group, numbers and
arrays datasets, lists/tuples arrays (all-string ones byte-string arrays), dicts groups,
sparse matrices a CSC group, ``None`` the string dataset ``'NoneType'``; the key ``g`` is always
a float array (``None`` -> ``0.0``) and a handful of bookkeeping keys are never saved.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.sparse

from .cnmf_params import CAIMAN_PARAM_GROUPS, default_params

__all__ = [
    "CAIMAN_PARAM_GROUPS",
    "CNMFFormatError",
    "CNMFResult",
    "Estimates",
    "ParamsView",
    "default_params",
    "load_cnmf",
    "save_cnmf",
]

# keys CaImAn never writes (online/bookkeeping state); we skip them too
_UNSAVED_KEYS = frozenset(
    {"groups", "idx_tot", "ind_A", "Ab_epoch", "coordinates", "loaded_model",
     "optional_outputs", "merged_ROIs", "tf_in", "tf_out", "empty_merged"}
)  # fmt: skip
# read back as tuples, like CaImAn does
_TUPLE_KEYS = frozenset(
    {"dims", "medw", "sigma_smooth_snmf", "dxy", "max_shifts", "strides", "overlaps"}
)
# estimates keys that a refit can leave as |S32 byte strings of numbers
_NUMERIC_BYTES_KEYS = ("bl", "c1", "lam", "neurons_sn")
_NONE = "NoneType"


class CNMFFormatError(ValueError):
    """A file is not a CNMF HDF5, or lacks a key every CNMF result has."""




# --------------------------------------------------------------------------------------------
# data classes
# --------------------------------------------------------------------------------------------
@dataclass
class Estimates:
    """CaImAn's ``Estimates`` attributes, under CaImAn's names.

    ``A`` is (pixels x K) CSC with pixel index ``row + col * d1``; ``C``/``S``/``YrA`` are
    (K, T); ``b`` is (pixels, nb), ``f`` (nb, T). Fields CaImAn leaves unset stay ``None``.
    ``extra`` keeps keys of other CaImAn versions so that they survive a rewrite.
    """

    A: scipy.sparse.csc_matrix | None = None
    C: np.ndarray | None = None
    f: np.ndarray | None = None
    b: np.ndarray | None = None
    R: np.ndarray | None = None
    W: scipy.sparse.spmatrix | None = None
    b0: np.ndarray | None = None
    YrA: np.ndarray | None = None
    S: np.ndarray | None = None
    sn: np.ndarray | None = None
    g: np.ndarray | None = None
    bl: np.ndarray | None = None
    c1: np.ndarray | None = None
    neurons_sn: np.ndarray | None = None
    lam: np.ndarray | None = None
    center: np.ndarray | None = None
    merged_ROIs: Any = None  # never saved (CaImAn skips it)
    coordinates: Any = None  # never saved (CaImAn skips it)
    F_dff: np.ndarray | None = None
    idx_components: np.ndarray | None = None
    idx_components_bad: np.ndarray | None = None
    SNR_comp: np.ndarray | None = None
    r_values: np.ndarray | None = None
    cnn_preds: np.ndarray | None = None
    ecc: np.ndarray | None = None
    noisyC: np.ndarray | None = None
    C_on: np.ndarray | None = None
    Ab: Any = None
    Cf: np.ndarray | None = None
    OASISinstances: Any = None
    CY: np.ndarray | None = None
    CC: np.ndarray | None = None
    Ab_dense: np.ndarray | None = None
    Yr_buf: np.ndarray | None = None
    mn: np.ndarray | None = None
    vr: np.ndarray | None = None
    ind_new: Any = None
    rho_buf: np.ndarray | None = None
    AtA: np.ndarray | None = None
    AtY_buf: np.ndarray | None = None
    sv: np.ndarray | None = None
    groups: Any = None  # never saved (CaImAn skips it)
    dims: tuple[int, ...] | None = None
    A_thr: Any = None
    discarded_components: dict[str, Any] | None = None
    #: correlation image, when a pipeline stores it on the estimates (written only if set)
    Cn: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_components(self) -> int:
        """Number of components K (columns of A)."""
        if self.A is not None:
            return int(self.A.shape[1])
        return 0 if self.C is None else int(np.shape(self.C)[0])

    def footprints(self, dims: tuple[int, ...] | None = None) -> np.ndarray:
        """Dense (K, d1, d2) footprints; meant for small data only."""
        dims = tuple(dims or self.dims or ())
        if self.A is None or len(dims) < 2:
            raise ValueError("footprints need A and dims")
        K = self.A.shape[1]
        dense = self.A.T.toarray()
        return dense.reshape((K, *dims[::-1])).transpose(0, *range(len(dims), 0, -1))

    def to_dict(self) -> dict[str, Any]:
        """Keys in CaImAn's order as ``Estimates.__dict__`` has them (unsaved ones dropped)."""
        out: dict[str, Any] = {}
        for fld in dataclasses.fields(self):
            name = fld.name
            if name in ("extra", "Cn"):
                continue
            out[name] = getattr(self, name)
        if self.Cn is not None:
            out["Cn"] = self.Cn
        out.update(self.extra)
        return out


class ParamsView:
    """Read-only, CNMFParams-like view of a file's ``params/`` groups.

    ``view.quality["min_SNR"]`` and ``view.get("quality", "min_SNR")`` both work, as on
    CaImAn's CNMFParams. Groups come back as fresh dicts: edit a copy (``to_dict()``) and
    save it, never the view.
    """

    def __init__(self, groups: dict[str, dict[str, Any]]):
        self._groups = {g: dict(v) for g, v in groups.items()}

    def __getattr__(self, name: str) -> dict[str, Any]:
        groups = self.__dict__.get("_groups", {})
        if name in groups:
            return dict(groups[name])
        raise AttributeError(f"CNMF params have no group {name!r}")

    def get(self, group: str, key: str) -> Any:
        """The value of ``key`` in ``group``; KeyError naming both if absent."""
        if group not in self._groups:
            raise KeyError(f"no params group {group!r}; groups: {sorted(self._groups)}")
        if key not in self._groups[group]:
            raise KeyError(f"no key {key!r} in params group {group!r}")
        return self._groups[group][key]

    def get_group(self, group: str) -> dict[str, Any]:
        """A copy of one group (CaImAn's CNMFParams has the same method)."""
        return dict(getattr(self, group))

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(self._groups)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """A deep copy of every group, e.g. to pass back to :func:`save_cnmf`."""
        return copy.deepcopy(self._groups)

    def __repr__(self) -> str:
        return f"ParamsView(groups={list(self._groups)})"


@dataclass
class CNMFResult:
    """What ``row.cnmf.get_output()`` gives without CaImAn: the attribute paths of ``CNMF``."""

    estimates: Estimates
    params: ParamsView
    dims: tuple[int, ...] | None
    mmap_file: str | None = None
    remove_very_bad_comps: bool = False
    skip_refinement: bool = False
    path: Path | None = None
    #: root keys other than the standard ones (kept for rewrites)
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# encoding
# --------------------------------------------------------------------------------------------
def _is_sparse(x: Any) -> bool:
    return scipy.sparse.issparse(x)


def _write_dict(root: h5py.File, path: str, dic: dict[str, Any]) -> None:
    """Encode ``dic`` under group ``path`` ('/'-terminated) with CaImAn's rules."""
    for key, item in dic.items():
        key = str(key)
        if key in _UNSAVED_KEYS:
            continue
        if key == "g":  # CaImAn stores g as a float array whatever it was, None as 0.0
            if item is None:
                item = np.asarray(0.0)
            else:
                try:
                    item = np.array(list(item))
                except TypeError:
                    item = np.asarray(item, dtype=float)
        if key == "g_tot":
            item = np.asarray(item, dtype=float)
        if isinstance(item, (list, tuple)):
            if len(item) > 0 and all(isinstance(e, str) for e in item):
                item = np.array([e.encode() for e in item])
            else:
                item = np.array(item)
        name = path + key
        if isinstance(item, str):
            root.require_group(path).attrs[key] = item
        elif isinstance(item, (bool, int, float, np.integer, np.floating, np.bool_)):
            root[name] = item
        elif isinstance(item, np.ndarray):
            if item.dtype == object:
                # what CaImAn does for arrays h5py cannot store (e.g. slices): their text
                try:
                    item = item.astype("|S32")
                except Exception as exc:
                    raise TypeError(f"cannot encode {name!r}: {exc}") from exc
            root[name] = item
        elif isinstance(item, dict):
            _write_dict(root, name + "/", item)
        elif _is_sparse(item):
            csc = item.tocsc()
            root[name + "/data"] = csc.data
            root[name + "/indptr"] = csc.indptr
            root[name + "/indices"] = csc.indices
            root[name + "/shape"] = np.array(csc.shape)
        elif item is None or key == "dview":
            root[name] = _NONE
        elif isinstance(item, Estimates):
            _write_dict(root, name + "/", item.to_dict())
        else:
            raise TypeError(f"cannot encode {name!r}: values of type {type(item).__name__}")


def _read_group(grp: h5py.Group) -> dict[str, Any]:
    """Decode a group written with CaImAn's rules (any CaImAn version >= 1.9.9)."""
    out: dict[str, Any] = {}
    for k, v in grp.attrs.items():
        out[k] = v.decode() if isinstance(v, bytes) else v
    for key, item in grp.items():
        if isinstance(item, h5py.Dataset):
            val = item[()]
            if isinstance(val, (bytes, str)) and val in (b"NoneType", "NoneType"):
                out[key] = None
            elif key in _TUPLE_KEYS and isinstance(val, np.ndarray):
                out[key] = tuple(v.item() for v in val)
            elif isinstance(val, np.bool_):
                out[key] = bool(val)
            else:
                out[key] = val
        elif isinstance(item, h5py.Group):
            if {"data", "indices", "indptr", "shape"} <= set(item.keys()):
                shape = tuple(int(s) for s in item["shape"][()])
                mat = scipy.sparse.csc_matrix(
                    (item["data"][()], item["indices"][()], item["indptr"][()]), shape=shape
                )
                out[key] = mat.tocsr() if key in ("W", "upscale_matrix") else mat
            else:
                out[key] = _read_group(item)
    return out


def _bytes_to_float(val: Any) -> Any:
    arr = np.asarray(val)
    if arr.dtype.kind in ("S", "U", "O"):
        def conv(x: Any) -> float:
            s = x.decode() if isinstance(x, bytes) else str(x)
            s = s.strip()
            return float("nan") if s in ("", "None", "nan") else float(s)

        return np.vectorize(conv, otypes=[float])(arr) if arr.ndim else conv(arr.item())
    return val


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not supported on every platform/filesystem
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
def save_cnmf(
    path: str | os.PathLike,
    estimates: Estimates,
    params: dict[str, dict[str, Any]] | ParamsView | None,
    *,
    dims: tuple[int, ...],
    mmap_file: str | os.PathLike,
    remove_very_bad_comps: bool = False,
    skip_refinement: bool = False,
) -> Path:
    """Write a CNMF result as ``CNMF.save()`` would, atomically; return the path.

    ``params`` maps CaImAn group names to CaImAn param names; groups and keys not given take
    CaImAn's defaults. The file is written next to ``path`` under a temporary name, fsynced and
    renamed over ``path``, so readers see either the old file or the complete new one.
    """
    path = Path(path)
    if isinstance(params, ParamsView):
        params = params.to_dict()
    params = params or {}
    unknown = set(params) - set(CAIMAN_PARAM_GROUPS)
    if unknown:
        raise KeyError(f"unknown CNMF params groups {sorted(unknown)}; CaImAn has {CAIMAN_PARAM_GROUPS}")
    merged = default_params()
    for group, values in params.items():
        merged[group].update(values or {})
    dims = tuple(int(d) for d in dims)
    if estimates.dims is None:
        estimates = dataclasses.replace(estimates, dims=dims)
    root_dict: dict[str, Any] = {
        "dview": None,
        "dims": dims,
        "skip_refinement": bool(skip_refinement),
        "remove_very_bad_comps": bool(remove_very_bad_comps),
        "params": merged,
        "estimates": estimates,
        "mmap_file": str(mmap_file),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with h5py.File(tmp, "w") as f:
            _write_dict(f, "/", root_dict)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def load_cnmf(path: str | os.PathLike) -> CNMFResult:
    """Read a CNMF HDF5 written by CaImAn (1.9.9+) or by :func:`save_cnmf`.

    Raises CNMFFormatError naming the file when it is not a CNMF HDF5 or lacks A, C or dims.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such CNMF HDF5 file")
    try:
        with h5py.File(path, "r") as f:
            if "estimates" not in f or not isinstance(f["estimates"], h5py.Group):
                raise CNMFFormatError(f"{path}: not a CNMF HDF5 file (no 'estimates' group)")
            raw = _read_group(f)
    except OSError as exc:
        raise CNMFFormatError(f"{path}: not a readable HDF5 file ({exc})") from exc
    est_raw: dict[str, Any] = raw.pop("estimates")
    for key in ("A", "C"):
        if est_raw.get(key) is None:
            raise CNMFFormatError(f"{path}: CNMF HDF5 lacks the required key estimates/{key}")
    dims = raw.pop("dims", None)
    if dims is None:
        dims = est_raw.get("dims")
    if dims is None:
        raise CNMFFormatError(f"{path}: CNMF HDF5 lacks the required key 'dims'")
    dims = tuple(int(d) for d in dims)

    names = {f.name for f in dataclasses.fields(Estimates)} - {"extra"}
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for k, v in est_raw.items():
        (kwargs if k in names else extra)[k] = v
    for k in _NUMERIC_BYTES_KEYS:
        if kwargs.get(k) is not None:
            kwargs[k] = _bytes_to_float(kwargs[k])
    g = kwargs.get("g")
    if g is not None and np.ndim(g) == 0 and np.asarray(g).dtype.kind in "fiu" and g == 0:
        kwargs["g"] = None  # CaImAn writes None as 0.0
    for k in ("idx_components", "idx_components_bad"):
        if kwargs.get(k) is not None:
            kwargs[k] = np.asarray(kwargs[k]).astype(np.int64).ravel()
    if kwargs.get("dims") is None:
        kwargs["dims"] = dims
    else:
        kwargs["dims"] = tuple(int(d) for d in kwargs["dims"])
    if not scipy.sparse.isspmatrix_csc(kwargs["A"]):
        kwargs["A"] = scipy.sparse.csc_matrix(kwargs["A"])
    estimates = Estimates(**kwargs, extra=extra)

    params = raw.pop("params", None) or {}
    mmap_file = raw.pop("mmap_file", None)
    raw.pop("dview", None)
    rvbc = bool(raw.pop("remove_very_bad_comps", False))
    skip = bool(raw.pop("skip_refinement", False))
    return CNMFResult(
        estimates=estimates,
        params=ParamsView(params),
        dims=dims,
        mmap_file=None if mmap_file is None else str(mmap_file),
        remove_very_bad_comps=rvbc,
        skip_refinement=skip,
        path=path,
        extra=raw,
    )
