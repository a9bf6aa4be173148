"""``onacid``: CaImAn's online CNMF (OnACID) as a batch algorithm.

Params are CaImAn's, flat in ``{"main": {...}}`` as for cnmf: the ``online`` group (init_batch,
init_method, epochs, max_num_added, min_num_trial, min_SNR, rval_thr, thresh_fitness_raw,
update_freq, ds_factor, motion_correct, max_shifts_online, expected_comps, minibatch_shape, ...)
plus the data/init/temporal keys OnACID reads (fr, decay_time, gSig, K, p, nb). Extras:
``Ain_path`` (an .npy of seed masks for ``init_method="seeded"``, as cnmf's) and ``eval``.

Outputs use the cnmf item's HDF5 layout, so ``row.cnmf`` and the CNMF viewer work unchanged;
see :mod:`mesmerize_widgets.algorithms.onacid.builtin` for the extra files (shifts, components over time, live snapshot).
"""

from __future__ import annotations

from ...formats.cnmf_params import default_params
from ..registry import Algorithm, register
from ..schema import Param, ParamSchema

#: CaImAn groups an OnACID run reads and writes back to the HDF5
ONACID_GROUPS = ("data", "init", "preprocess", "temporal", "spatial", "quality", "online", "motion")

_TYPED = (
    # online
    Param("init_batch", 200, "int", "frames used to initialise before going online", minimum=2),
    Param("init_method", "bare", "str", "initialisation on init_batch frames",
          choices=("bare", "cnmf", "seeded")),
    Param("epochs", 1, "int", "passes over the movie", minimum=1),
    Param("max_num_added", 5, "int", "most new components added per frame", minimum=0),
    Param("min_num_trial", 5, "int", "candidate locations tested per frame", minimum=0),
    Param("min_SNR", 2.5, "float", "SNR of a new trace (sets thresh_fitness_raw) and of accepted ones"),
    Param("rval_thr", 0.8, "float", "space correlation a new component must reach"),
    Param("thresh_fitness_raw", None, "float",
          "event-exceptionality threshold of a new trace (None: log_ndtr(-min_SNR) * N_samples)",
          nullable=True),
    Param("thresh_overlap", 0.5, "float", "reject a candidate overlapping an existing one above this"),
    Param("update_freq", 200, "int", "frames between footprint updates", minimum=1),
    Param("ds_factor", 1, "int", "spatial downsampling factor of the frames", minimum=1),
    Param("motion_correct", True, "bool", "rigid motion correction of each frame, online"),
    Param("max_shifts_online", 10, "int", "largest shift searched per frame (pixels)", minimum=0),
    Param("expected_comps", 500, "int", "components preallocated (grows when exceeded)", minimum=1),
    Param("minibatch_shape", 100, "int", "frames in the residual buffer searched for new neurons",
          minimum=10),
    Param("N_samples_exceptionality", None, "int", "frames of one transient (None: fr*decay_time)",
          nullable=True, minimum=1),
    Param("update_num_comps", True, "bool", "search for new components at all"),
    Param("use_cnn", False, "bool", "CNN classifier (CaImAn-only; builtin refuses True)"),
    Param("sniper_mode", False, "bool", "CNN for new candidates (CaImAn-only; needs its model)"),
    Param("normalize", False, "bool", "CaImAn: normalise frames by their std (builtin: unused)"),
    # data / init / temporal
    Param("fr", 30.0, "float", "imaging rate in Hz", minimum=0),
    Param("decay_time", 0.4, "float", "length of a typical transient in seconds", minimum=0),
    Param("gSig", (5, 5), "tuple", "expected half-size of a neuron in pixels",
          item="int", length=2, minimum=1),
    Param("K", 30, "int", "components sought by the bare/cnmf initialisation", minimum=0),
    Param("p", 2, "int", "order of the autoregressive model (0: no deconvolution)", minimum=0),
    Param("nb", 1, "int", "number of global background components", minimum=1),
    Param("var_name_hdf5", "mov", "str", "dataset name when the input is an HDF5 file"),
)

_EXTRAS = {
    "Ain_path": Param("Ain_path", None, "str", "an .npy of seed masks (absolute, or relative to the "
                      "input movie's directory) for init_method='seeded'", nullable=True),
    "eval": Param("eval", None, "any", "quality params applied by run_eval", nullable=True),
}


def _passthrough(typed: tuple[Param, ...]) -> tuple[Param, ...]:
    """CaImAn's other online keys, accepted as is (the CaImAn backend passes them on)."""
    seen = {p.name for p in typed}
    return tuple(
        Param(name, value, "any", f"CaImAn online.{name} (passed to CaImAn)", nullable=True)
        for name, value in default_params()["online"].items()
        if name not in seen
    )


SCHEMA = ParamSchema(algo="onacid", params=_TYPED + _passthrough(_TYPED), extras=dict(_EXTRAS))

ALGORITHM = register(
    Algorithm(
        name="onacid",
        doc="OnACID online source extraction: frame by frame, constant memory, live components",
        schema=SCHEMA,
        backends={
            "builtin": "mesmerize_widgets.algorithms.onacid.builtin:run",
            "caiman": "mesmerize_widgets.algorithms.onacid.caiman:run",
        },
        needs_deconvolution=True,
    )
)
