"""``cnmf`` and ``cnmfe``: source extraction (CaImAn's CNMF, and CNMF-E for one-photon data).

Params are CaImAn's, flat inside ``{"main": {...}}`` as mesmerize-core passes them to
``CNMFParams(params_dict=main)``; every key of CaImAn's data, patch, preprocess, init, spatial,
temporal, merging and quality groups is accepted (the ones the built-in backend uses are typed
below, the others pass through to CaImAn and into the saved HDF5). Extras: ``refit`` (run a
second, whole-field fit seeded with the first one's components), ``Ain_path`` (an .npy of
seed masks, see :func:`~mesmerize_widgets.algorithms.cnmf.builtin.load_masks`) and ``eval``
(quality params applied by ``row.cnmf.run_eval``).

Differences from CaImAn's defaults: ``use_cnn`` defaults to False (the CNN classifier is
CaImAn-only; True is refused by the built-in backend).
"""

from __future__ import annotations

from ...formats.cnmf_params import default_params
from ..registry import Algorithm, register
from ..schema import Param, ParamSchema

# the CaImAn groups a CNMF run reads (and writes back to the HDF5)
CNMF_GROUPS = ("data", "patch", "preprocess", "init", "spatial", "temporal", "merging", "quality")

_TYPED = (
    # data
    Param("fr", 30.0, "float", "imaging rate in Hz", minimum=0),
    Param("decay_time", 0.4, "float", "length of a typical transient in seconds", minimum=0),
    Param("dxy", (1.0, 1.0), "tuple", "spatial resolution in um per pixel (rows, cols)", length=2),
    Param("var_name_hdf5", "mov", "str", "dataset name when the input is an HDF5 file"),
    # init
    Param("K", 30, "int", "components per patch (whole field when rf is None); CNMF-E: None = no limit "
          "(builtin CNMF: a second greedy pass on the residual may add up to a third of K x patches more)",
          nullable=True, minimum=0),
    Param("gSig", (5, 5), "tuple", "expected half-size of a neuron in pixels (Gaussian std)",
          item="int", length=2, minimum=1),
    Param("gSiz", None, "tuple", "neuron bounding box in pixels (None: 2*gSig+1; CNMF-E 4*gSig+1)",
          nullable=True, item="int", length=2, minimum=1),
    Param("ssub", 2, "int", "spatial downsampling during initialisation (builtin: not used)", minimum=1),
    Param("tsub", 2, "int", "temporal downsampling during initialisation (builtin: more, up to one decay, "
          "beyond tsub x 1,000 frames, so seeding sees about 1,000)", minimum=1),
    Param("nb", 1, "int", "number of global background components (CNMF-E: 0 = ring model)", minimum=-1),
    Param("method_init", "greedy_roi", "str", "initialisation: greedy_roi or corr_pnr (CNMF-E)",
          choices=("greedy_roi", "corr_pnr", "sparse_nmf", "local_nmf", "graph_nmf", "pca_ica")),
    Param("min_corr", 0.85, "float", "CNMF-E: minimum local correlation of a seed pixel"),
    Param("min_pnr", 20.0, "float", "CNMF-E: minimum peak-to-noise ratio of a seed pixel"),
    Param("ring_size_factor", 1.5, "float", "CNMF-E: ring radius of the background model / gSiz"),
    Param("center_psf", False, "bool", "CNMF-E: zero-mean filter kernel (high-pass) for seeding"),
    Param("normalize_init", True, "bool", "normalise each pixel by its noise level before init"),
    Param("rolling_sum", True, "bool", "rank seeds by the largest rolling energy (sparse firing)"),
    Param("rolling_length", 100, "int", "frames of the rolling energy window (builtin: at most 4 decays, "
          "fr * decay_time * 4, after each pixel's slow trend is removed, so sparse neurons rank with busy ones)",
          minimum=1),
    Param("nIter", 5, "int", "iterations of each seed's rank-1 refinement", minimum=1),
    # patch
    Param("rf", None, "int", "half-size of the patches in pixels (None: the whole field at once)",
          nullable=True, minimum=1),
    Param("stride", None, "int", "overlap between patches in pixels (None: rf // 2)", nullable=True, minimum=0),
    Param("only_init", True, "bool", "patches only initialise; the whole field is then refined"),
    Param("n_processes", None, "int", "processes for patches (None: the run's n_processes)",
          nullable=True, minimum=1),
    # merging
    Param("merge_thr", 0.8, "float", "merge overlapping components whose traces correlate above this "
          "(builtin: a footprint lying mostly inside another merges into it above min(merge_thr, 0.6), "
          "footprints alike at cosine 0.8 merge whatever their traces; components smaller than half a gSig "
          "disk, whose trace is no more exceptional than white noise, or whose trace changes slower than "
          "a transient (less than 4% of its variance within 2 decays: vessels, drift) are dropped)"),
    Param("merge_parallel", False, "bool", "merge in parallel (CaImAn; builtin merges serially)"),
    Param("do_merge", True, "bool", "merge components at all"),
    # temporal / preprocess
    Param("p", 2, "int", "order of the autoregressive model of the calcium dynamics (0: none)", minimum=0),
    Param("method_deconvolution", "oasis", "str", "deconvolution method (builtin: OASIS always)",
          choices=("oasis", "cvxpy", "cvx")),
    Param("bas_nonneg", False, "bool", "force a nonnegative baseline of each trace"),
    Param("ITER", 2, "int", "block-coordinate sweeps of the temporal update", minimum=1),
    Param("noise_range", (0.25, 0.5), "tuple", "normalised frequency band for the noise estimate", length=2),
    # spatial
    Param("maxthr", 0.1, "float", "footprint pixels below this fraction of the maximum are dropped"),
    Param("extract_cc", True, "bool", "keep only the connected piece of a footprint holding its maximum"),
    Param("memory_budget_mb", 1024.0, "float", "builtin only: MiB of the movie one process may hold while "
          "seeding (a patch; the field with rf=None; the residual pass). Beyond it a long movie is seeded on "
          "more frames averaged (at most one decay's worth) and the residual pass goes tile by tile; an "
          "initialisation that still does not fit refuses at once with the estimate. A run given a "
          "memory_limit uses a quarter of what the limit leaves beside the libraries when this is not set",
          minimum=16.0),
    # quality
    Param("min_SNR", 2.5, "float", "accept components whose transient SNR exceeds this (builtin: the "
          "noise SD is at least the trace's high-frequency noise / 1.5, as photon-limited data has "
          "skewed noise that CaImAn's below-the-mode estimate understates)"),
    Param("rval_thr", 0.8, "float", "accept components whose spatial r-value reaches this (builtin: the "
          "footprint against its transients' image, mean of all frames removed, over its support plus a "
          "gSig/2 ring; CaImAn: against the raw movie inside the support. Builtin results also store "
          "fast_fraction: a component accepted by its r-value alone needs 0.15 of its trace's variance "
          "at a transient's pace, as neuropil and background blobs are coherent but slow, and an SNR "
          "that one white-noise trace in 1,000 reaches, stored as rv_only_snr_min)"),
    Param("SNR_lowest", 0.5, "float", "reject components whose SNR is at or below this"),
    Param("rval_lowest", -1.0, "float", "reject components whose r-value is at or below this"),
    Param("use_cnn", False, "bool", "CaImAn's CNN classifier (CaImAn-only; default False here)"),
    Param("min_cnn_thr", 0.9, "float", "CNN: accept above this probability"),
    Param("cnn_lowest", 0.1, "float", "CNN: reject below this probability"),
)

_CNMFE_DEFAULTS = {
    "method_init": "corr_pnr", "K": None, "gSig": (3, 3), "gSiz": (13, 13), "nb": 0,
    "center_psf": True, "normalize_init": False, "only_init": True, "ring_size_factor": 1.4,
    "min_corr": 0.8, "min_pnr": 10.0, "p": 1, "merge_thr": 0.7,
}  # fmt: skip


def _passthrough(typed: tuple[Param, ...]) -> tuple[Param, ...]:
    """Every other CaImAn key of the CNMF groups, accepted as is (CaImAn checks them)."""
    seen = {p.name for p in typed}
    extra = []
    defaults = default_params()
    for group in CNMF_GROUPS:
        for name, value in defaults[group].items():
            if name in seen or name in ("fnames", "dims", "caiman_version", "last_commit"):
                continue
            seen.add(name)
            extra.append(Param(name, value, "any", f"CaImAn {group}.{name} (passed to CaImAn)", nullable=True))
    return tuple(extra)


def _with_defaults(params: tuple[Param, ...], overrides: dict) -> tuple[Param, ...]:
    from dataclasses import replace

    return tuple(replace(p, default=overrides[p.name]) if p.name in overrides else p for p in params)


_EXTRAS = {
    "refit": Param("refit", False, "bool", "after the fit, refit the whole field seeded with its components"),
    "Ain_path": Param("Ain_path", None, "str", "an .npy of seed masks (absolute, or relative to the input "
                      "movie's directory); skips initialisation and forces rf=None", nullable=True),
    "eval": Param("eval", None, "any", "quality params applied by run_eval", nullable=True),
}

SCHEMA = ParamSchema(algo="cnmf", params=_TYPED + _passthrough(_TYPED), extras=dict(_EXTRAS))
CNMFE_SCHEMA = ParamSchema(
    algo="cnmfe",
    params=_with_defaults(_TYPED, _CNMFE_DEFAULTS) + _passthrough(_TYPED),
    extras=dict(_EXTRAS),
)

ALGORITHM = register(
    Algorithm(
        name="cnmf",
        doc="CNMF source extraction (two-photon): footprints, traces, deconvolved activity",
        schema=SCHEMA,
        backends={
            "builtin": "mesmerize_widgets.algorithms.cnmf.builtin:run",
            "caiman": "mesmerize_widgets.algorithms.cnmf.caiman:run",
        },
        needs_deconvolution=True,
    )
)

CNMFE_ALGORITHM = register(
    Algorithm(
        name="cnmfe",
        doc="CNMF-E source extraction (one-photon): correlation x PNR seeds, strong background",
        schema=CNMFE_SCHEMA,
        backends={
            "builtin": "mesmerize_widgets.algorithms.cnmf.builtin:run_cnmfe",
            "caiman": "mesmerize_widgets.algorithms.cnmf.caiman:run_cnmfe",
        },
        needs_deconvolution=True,
    )
)
