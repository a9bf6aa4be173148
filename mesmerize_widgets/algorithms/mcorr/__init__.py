"""``mcorr``: rigid or piecewise-rigid motion correction (NoRMCorre), writing CaImAn's files.

Params are CaImAn's motion group (``CNMFParams.motion`` / ``MotionCorrect``) with its defaults,
plus the ``data`` entries mesmerize-core items carry (``fr``, ``decay_time``, ``dxy``). Both
backends write the F-order memmap ``{uuid}_rig__d1_..._order_F_frames_T.mmap`` (``_els__``
when piecewise), ``{uuid}_shifts.npy``, the projections and ``{uuid}_cn.npy``.
"""

from __future__ import annotations

from typing import Any

from ...errors import ParamError
from ..registry import Algorithm, register
from ..schema import Param, ParamSchema

_CAIMAN_ONLY = "caiman backend only; the builtin backend ignores it"


class McorrSchema(ParamSchema):
    """Adds the checks that involve several params, and CaImAn's looser spellings."""

    def validate(self, params: Any, *, fill_defaults: bool = False) -> dict[str, Any]:
        if isinstance(params, dict) and isinstance(params.get("main"), dict):
            main = dict(params["main"])
            g = main.get("gSig_filt")
            if isinstance(g, (int, float)) and not isinstance(g, bool):
                main["gSig_filt"] = (g, g)  # CaImAn indexes gSig_filt[0]: a scalar means both axes
            if "indices" in main:
                main["indices"] = _normalise_indices(main["indices"])
            b = main.get("border_nan")
            if not isinstance(b, (bool, str)) and b in (0, 1):
                main["border_nan"] = bool(b)
            params = {**params, "main": main}
        out = super().validate(params, fill_defaults=fill_defaults)
        m = out["main"]
        nd = 3 if m.get("is3D", False) else 2
        for key in ("max_shifts", "strides", "overlaps"):
            if key in m and len(m[key]) != nd:
                raise ParamError(f"params['main'][{key!r}] must have {nd} elements "
                                 f"({'is3D' if nd == 3 else '2-D movies'}), got {m[key]!r}")
        if m.get("indices") is not None and len(m["indices"]) != nd:
            raise ParamError(f"params['main']['indices'] must give {nd} (start, stop) ranges, got {m['indices']!r}")
        if m.get("gSig_filt") is not None and len(m["gSig_filt"]) not in (2, 3):
            raise ParamError(f"params['main']['gSig_filt'] must be None or 2 numbers, got {m['gSig_filt']!r}")
        if "strides" in m and any(s < 1 for s in m["strides"]):
            raise ParamError(f"params['main']['strides'] must be >= 1, got {m['strides']!r}")
        return out


def _normalise_indices(value: Any) -> Any:
    """CaImAn's ``(slice(None), slice(None))`` as storable ``((start, stop), ...)`` (None: all)."""
    if value is None:
        return None
    if not isinstance(value, (tuple, list)):
        raise ParamError(f"params['main']['indices'] must be a tuple of slices or (start, stop) pairs, got {value!r}")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, slice):
            if v.step not in (None, 1):
                raise ParamError(f"params['main']['indices'][{i}]: slices with a step are not supported ({v})")
            v = (v.start, v.stop)
        if not isinstance(v, (tuple, list)) or len(v) != 2:
            raise ParamError(f"params['main']['indices'][{i}] must be a slice or (start, stop), got {v!r}")
        for x in v:
            if x is not None and (isinstance(x, bool) or not isinstance(x, int) or x < 0):
                raise ParamError(f"params['main']['indices'][{i}] bounds must be None or ints >= 0, got {v!r}")
        if v[0] is not None and v[1] is not None and v[0] >= v[1]:
            raise ParamError(f"params['main']['indices'][{i}] is empty: {tuple(v)}")
        out.append(tuple(v))
    if all(v == (None, None) for v in out):
        return None
    return tuple(out)


SCHEMA = McorrSchema(
    algo="mcorr",
    params=(
        Param("max_shifts", (6, 6), "tuple", "maximum rigid shift per axis in pixels", item="int", minimum=0),
        Param("niter_rig", 1, "int", "rigid template iterations over the whole movie", minimum=0),
        Param("splits_rig", 14, "int", "time splits whose mean frames' median gives the rigid template", minimum=1),
        Param("num_splits_to_process_rig", None, "any", f"subset of splits for the template ({_CAIMAN_ONLY})", nullable=True),
        Param("pw_rigid", False, "bool", "piecewise-rigid (patches) after the rigid template"),
        Param("strides", (96, 96), "tuple", "a new patch every `strides` pixels (patch = strides + overlaps)", item="int"),
        Param("overlaps", (32, 32), "tuple", "overlap between neighbouring patches in pixels", item="int", minimum=0),
        Param("splits_els", 14, "int", "time splits for the piecewise pass", minimum=1),
        Param("num_splits_to_process_els", None, "any", f"unused by CaImAn too ({_CAIMAN_ONLY})", nullable=True),
        Param("upsample_factor_grid", 4, "int", "finer shift grid (factor) when shifts_opencv=False", minimum=1),
        Param("max_deviation_rigid", 3, "int", "max deviation of a patch's shift from the rigid shift (px)", minimum=0),
        Param("shifts_opencv", True, "bool", "apply shifts by bicubic OpenCV warps (False: rigid FFT phase shifts)"),
        Param("nonneg_movie", True, "bool", "subtract min_mov from the saved movie, as CaImAn"),
        Param("gSig_filt", None, "tuple", "high-pass kernel size for 1-photon data (None: no filtering)",
              nullable=True, item="int", minimum=1),
        Param("use_cuda", False, "bool", f"GPU flag, deprecated in CaImAn ({_CAIMAN_ONLY})"),
        Param("border_nan", "copy", "any", "uncovered borders: 'copy' nearest pixels, True NaN, False 0/reflect, 'min'",
              choices=(True, False, "copy", "min")),
        Param("num_frames_split", 80, "int", f"frames per split when CaImAn derives splits ({_CAIMAN_ONLY})", minimum=1),
        Param("min_mov", None, "float", "movie minimum used by nonneg_movie (None: from the first 400 frames)", nullable=True),
        Param("shifts_interpolate", False, "bool", "interpolate patch shifts between patch centres (not a resize)"),
        Param("is3D", False, "bool", "3-D (volumetric) motion correction (caiman backend only)"),
        Param("indices", None, "any", "((row_start, row_stop), (col_start, col_stop)) part of the FOV to correct (None: all)",
              nullable=True),
        Param("var_name_hdf5", "mov", "str", "dataset name when the input is an HDF5 file"),
        Param("chunk_frames", 32, "int", "frames per work unit of the builtin backend (workers stream it in 16-frame batches)",
              minimum=1),
        Param("fr", 30.0, "float", "frame rate (Hz), recorded for later cnmf items", minimum=0),
        Param("decay_time", 0.4, "float", "indicator decay time (s), recorded for later cnmf items", minimum=0),
        Param("dxy", (1.0, 1.0), "tuple", "pixel size (um), recorded for later cnmf items", length=2, minimum=0),
    ),
)

ALGORITHM = register(
    Algorithm(
        name="mcorr",
        doc=__doc__.strip().splitlines()[0],
        schema=SCHEMA,
        backends={
            "builtin": "mesmerize_widgets.algorithms.mcorr.builtin:run",
            "caiman": "mesmerize_widgets.algorithms.mcorr.caiman:run",
        },
        output_movie_key="mcorr-output-path",
    )
)
