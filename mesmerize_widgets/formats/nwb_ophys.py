"""The ``ophys`` content of an NWB file, built with pynwb from plain arrays.

Takes numpy arrays and metadata only (no batch, no accessors), so anything that has a CNMF
result can write it. The spatial axes keep the order of the movie as numpy indexes it: NWB's
``x`` is the first image axis (rows), ``y`` the second, as CaImAn's own NWB writer does.
Footprints are written as float32 (``pixel_mask`` stores float32 weights, whichever is used).
pynwb is imported inside the functions: the package imports without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse

from ..errors import NWBExportError

__all__ = ["IMAGING_PLANE_KEYS", "OphysExport", "add_ophys", "fill_datasets", "mask_columns"]

#: what ``imaging_plane`` may say; the rest of an ImagingPlane gets a documented placeholder
IMAGING_PLANE_KEYS = (
    "name", "description", "indicator", "location", "excitation_lambda", "emission_lambda",
    "imaging_rate", "device", "device_description",
)  # fmt: skip
PLACEHOLDERS: dict[str, Any] = {
    "name": "ImagingPlane", "description": "imaging plane of the analysed movie",
    "indicator": "unknown", "location": "unknown", "excitation_lambda": math.nan,
    "emission_lambda": math.nan, "device": "Microscope", "device_description": "unknown",
}  # fmt: skip
#: names written into the ``ophys`` module (an existing file must not hold them yet)
OPHYS_NAMES = ("ImageSegmentation", "Fluorescence", "DfOverF", "SummaryImages",
               "MotionCorrectionShifts", "MotionCorrectedMovie")


@dataclass
class OphysExport:
    """The arrays of one CNMF result, in the shapes ``row.cnmf`` returns them."""

    footprints: scipy.sparse.spmatrix  # (pixels, K), pixels in Fortran order of ``dims``
    dims: tuple[int, int]
    accepted: np.ndarray  # bool (K,)
    fluorescence: np.ndarray  # (K, T)
    fluorescence_description: str
    rate: float
    description: str = "CNMF components"
    quality: dict[str, np.ndarray] = field(default_factory=dict)  # per-component columns
    deconvolved: np.ndarray | None = None  # (K, T)
    dff: np.ndarray | None = None  # (K, T)
    images: dict[str, np.ndarray] = field(default_factory=dict)
    shifts: np.ndarray | None = None  # (T, 2) rigid or (T, patches, 2) piecewise, pixels
    movie: Any = None  # (t, y, x), read ``chunk_frames`` at a time
    one_photon: bool = False
    chunk_frames: int = 100


def mask_columns(footprints: scipy.sparse.spmatrix, dims: tuple[int, int], mask_type: str) -> list:
    """``image_mask`` (K, x, y) or ``pixel_mask`` (x, y, weight) columns, the smaller for "auto"."""
    from hdmf.common import VectorData, VectorIndex

    A = scipy.sparse.csc_matrix(footprints, dtype=np.float32)
    A.eliminate_zeros()
    K = A.shape[1]
    if mask_type == "auto":
        mask_type = "pixel" if A.nnz * 12 < K * dims[0] * dims[1] * 4 else "image"
    if mask_type == "image":
        data = A.toarray().T.reshape((K, dims[1], dims[0])).transpose(0, 2, 1)
        return [VectorData(name="image_mask", description="footprint of each component", data=data)]
    if mask_type != "pixel":
        raise NWBExportError(f"mask_type must be 'auto', 'image' or 'pixel', got {mask_type!r}")
    pm = np.zeros(A.nnz, dtype=[("x", "<u4"), ("y", "<u4"), ("weight", "<f4")])
    pm["x"], pm["y"] = A.indices % dims[0], A.indices // dims[0]
    pm["weight"] = A.data
    column = VectorData(name="pixel_mask", description="footprint of each component", data=pm)
    return [column, VectorIndex(name="pixel_mask_index", data=A.indptr[1:].astype(np.uint64), target=column)]


def imaging_plane(nwbfile: Any, spec: dict[str, Any] | str | None, rate: float) -> Any:
    """The ImagingPlane named by ``spec``, the file's only one, or a new one from ``spec``."""
    planes = dict(nwbfile.imaging_planes)
    if isinstance(spec, str):
        if spec not in planes:
            raise NWBExportError(f"the file has no imaging plane {spec!r}; it has {sorted(planes) or 'none'}")
        return planes[spec]
    if not spec and len(planes) == 1:
        return next(iter(planes.values()))
    spec = dict(spec or {})
    bad = set(spec) - set(IMAGING_PLANE_KEYS)
    if bad:
        raise NWBExportError(f"imaging_plane: unknown keys {sorted(bad)}; known: {list(IMAGING_PLANE_KEYS)}")
    s = {**PLACEHOLDERS, "imaging_rate": rate, **spec}
    if s["name"] in planes:
        raise NWBExportError(f"the file already has an imaging plane {s['name']!r}: pass its name "
                             "as imaging_plane to use it, or another 'name'")
    from pynwb.ophys import OpticalChannel

    device = nwbfile.devices.get(s["device"]) or nwbfile.create_device(
        name=s["device"], description=s["device_description"])
    channel = OpticalChannel(name="OpticalChannel", description="emission channel",
                             emission_lambda=float(s["emission_lambda"]))
    return nwbfile.create_imaging_plane(
        name=s["name"], optical_channel=channel, description=s["description"], device=device,
        excitation_lambda=float(s["excitation_lambda"]), imaging_rate=float(s["imaging_rate"]),
        indicator=s["indicator"], location=s["location"],
    )


def _segmentation(module: Any, data: OphysExport, plane: Any, mask_type: str) -> Any:
    from hdmf.common import VectorData
    from pynwb.ophys import ImageSegmentation, PlaneSegmentation

    K = data.footprints.shape[1]
    columns = mask_columns(data.footprints, data.dims, mask_type)
    columns.append(VectorData(name="accepted", data=np.asarray(data.accepted, bool),
                              description="accepted by the evaluation (idx_components)"))
    for name, values in data.quality.items():
        columns.append(VectorData(name=name, data=np.asarray(values), description=f"CaImAn's {name}"))
    seg = PlaneSegmentation(name="PlaneSegmentation", description=data.description,
                            imaging_plane=plane, columns=columns, id=np.arange(K))
    iseg = ImageSegmentation(name="ImageSegmentation")
    iseg.add_plane_segmentation(seg)
    module.add(iseg)
    return seg


def _series(name: str, traces: np.ndarray, rois: Any, rate: float, description: str, unit: str) -> Any:
    from pynwb.ophys import RoiResponseSeries

    return RoiResponseSeries(name=name, data=np.ascontiguousarray(np.asarray(traces).T), rois=rois,
                             unit=unit, rate=float(rate), starting_time=0.0, description=description)


def _traces(module: Any, data: OphysExport, seg: Any) -> None:
    from pynwb.ophys import DfOverF, Fluorescence

    K = data.footprints.shape[1]
    rois = seg.create_roi_table_region(region=list(range(K)), description="every component")
    fl = Fluorescence(name="Fluorescence")
    module.add(fl)  # in the file before its series: their rois region then shares its ancestor
    fl.add_roi_response_series(_series("RoiResponseSeries", data.fluorescence, rois, data.rate,
                                       data.fluorescence_description, "a.u."))
    if data.deconvolved is not None:
        fl.add_roi_response_series(_series("Deconvolved", data.deconvolved, rois, data.rate,
                                           "deconvolved activity S of each component", "a.u."))
    if data.dff is not None:
        dff = DfOverF(name="DfOverF")
        module.add(dff)
        dff.add_roi_response_series(_series("RoiResponseSeries", data.dff, rois, data.rate,
                                            "detrended dF/F (F_dff) of each component", "n.a."))


def _images(module: Any, images: dict[str, np.ndarray]) -> None:
    from pynwb.base import Images
    from pynwb.image import GrayscaleImage

    if images:
        module.add(Images(name="SummaryImages", description="summary images of the analysed movie",
                          images=[GrayscaleImage(name=k, data=np.asarray(v), description=f"{k} image")
                                  for k, v in images.items()]))


def _motion(module: Any, data: OphysExport, plane: Any) -> list[tuple[str, Any, int]]:
    """The shifts; the movie's dataset is only declared, its frames are filled in later."""
    from hdmf.backends.hdf5 import H5DataIO
    from pynwb.base import TimeSeries
    from pynwb.ophys import OnePhotonSeries, TwoPhotonSeries

    if data.shifts is not None:
        module.add(TimeSeries(
            name="MotionCorrectionShifts", data=np.asarray(data.shifts), unit="pixels",
            rate=float(data.rate), starting_time=0.0,
            description="motion-correction shifts as row.mcorr.get_shifts() returns them, stacked "
                        "on the last axis: rigid (frames, 2), piecewise (frames, patches, 2)"))
    if data.movie is None:
        return []
    movie = data.movie
    shape = tuple(int(n) for n in movie.shape)
    # declared empty and filled with h5py chunk by chunk (fill_datasets): hdmf's
    # DataChunkIterator held memory growing with the movie (measured, benchmarks/bench_nwb.py)
    frames = H5DataIO(shape=shape, dtype=np.dtype(movie.dtype), chunks=(min(data.chunk_frames, shape[0]), *shape[1:]))
    cls = OnePhotonSeries if data.one_photon else TwoPhotonSeries
    module.add(cls(name="MotionCorrectedMovie", data=frames, imaging_plane=plane, unit="a.u.",
                   rate=float(data.rate), starting_time=0.0,
                   description="motion-corrected movie (frames, x = rows, y = columns)"))
    return [(f"processing/{module.name}/MotionCorrectedMovie/data", movie, data.chunk_frames)]


def fill_datasets(h5file: Any, fills: list[tuple[str, Any, int]]) -> None:
    """Write each declared dataset from its (t, y, x) source, ``chunk`` frames per read."""
    for name, movie, chunk in fills:
        ds = h5file[name]
        for a in range(0, len(movie), chunk):
            ds[a : a + chunk] = np.asarray(movie[a : a + chunk])


def add_ophys(nwbfile: Any, data: OphysExport, *, plane_spec: dict[str, Any] | str | None = None,
              mask_type: str = "auto") -> list[tuple[str, Any, int]]:
    """Add the segmentation, traces, images and motion correction to the ``ophys`` module.

    Returns the datasets left to fill once the file is written (``fill_datasets``): the movie.
    """
    module = nwbfile.processing.get("ophys") or nwbfile.create_processing_module(
        name="ophys", description="optical physiology processed by mesmerize-widgets")
    taken = [n for n in OPHYS_NAMES if n in module.data_interfaces]
    if taken:
        raise NWBExportError(f"the file's ophys module already holds {taken}: export into a new file "
                             "or one without a previous export")
    plane = imaging_plane(nwbfile, plane_spec, data.rate)
    seg = _segmentation(module, data, plane, mask_type)
    _traces(module, data, seg)
    _images(module, data.images)
    return _motion(module, data, plane)
