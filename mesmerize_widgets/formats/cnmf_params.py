"""CaImAn 1.12's default CNMF parameters, without the file format's dependencies.

The algorithm registry builds its schemas from these when it loads; keeping them apart from
``cnmf_hdf5`` (h5py, scipy) keeps that load light for every item process.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

#: the parameter groups of CaImAn's CNMFParams, in the order CNMFParams defines them
CAIMAN_PARAM_GROUPS = (
    "data", "patch", "preprocess", "init", "spatial", "temporal",
    "merging", "quality", "online", "motion", "ring_CNN",
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# defaults: CaImAn 1.12's CNMFParams() values, so files we write are complete for any reader
# --------------------------------------------------------------------------------------------
_DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {
        "fnames": None, "dims": None, "fr": 30, "decay_time": 0.4, "dxy": (1, 1),
        "var_name_hdf5": "mov", "caiman_version": None, "last_commit": None,
    },
    "patch": {
        "border_pix": 0, "del_duplicates": False, "in_memory": True,
        "low_rank_background": True, "memory_fact": 1, "n_processes": 1, "nb_patch": 1,
        "only_init": True, "p_patch": 0, "remove_very_bad_comps": False, "rf": None,
        "skip_refinement": False, "p_ssub": 2, "stride": None, "p_tsub": 2,
    },
    "preprocess": {
        "check_nan": True, "compute_g": False, "include_noise": False, "lags": 5,
        "max_num_samples_fft": 3 * 1024, "n_pixels_per_process": None,
        "noise_method": "mean", "noise_range": [0.25, 0.5], "p": 2, "pixels": None,
        "sn": None,
    },
    "init": {
        "K": 30, "SC_kernel": "heat", "SC_sigma": 1, "SC_thr": 0, "SC_normalize": True,
        "SC_use_NN": False, "SC_nnn": 20, "alpha_snmf": 0.5, "center_psf": False,
        "gSig": [5, 5], "gSiz": None, "greedyroi_nmf_init_method": "nndsvdar",
        "greedyroi_nmf_max_iter": 200, "init_iter": 2, "kernel": None, "lambda_gnmf": 1,
        "snmf_l1_ratio": 0.0, "maxIter": 5, "max_iter_snmf": 500,
        "method_init": "greedy_roi", "min_corr": 0.85, "min_pnr": 20, "nIter": 5, "nb": 1,
        "normalize_init": True, "options_local_NMF": None, "perc_baseline_snmf": 20,
        "ring_size_factor": 1.5, "rolling_length": 100, "rolling_sum": True,
        "seed_method": "auto", "sigma_smooth_snmf": (0.5, 0.5, 0.5), "ssub": 2,
        "ssub_B": 2, "tsub": 2,
    },
    "spatial": {
        "dist": 3, "extract_cc": True, "maxthr": 0.1, "medw": None, "method_exp": "dilate",
        "method_ls": "lasso_lars", "n_pixels_per_process": None, "nb": 1,
        "normalize_yyt_one": True, "nrgthr": 0.9999, "num_blocks_per_run_spat": 20,
        "se": None, "ss": None, "thr_method": "nrg", "update_background_components": True,
    },
    "temporal": {
        "ITER": 2, "bas_nonneg": False, "block_size_temp": 5000, "fudge_factor": 0.96,
        "lags": 5, "optimize_g": False, "method_deconvolution": "oasis", "nb": 1,
        "noise_method": "mean", "noise_range": [0.25, 0.5], "num_blocks_per_run_temp": 20,
        "p": 2, "s_min": None, "solvers": ["ECOS", "SCS"], "verbosity": False,
    },
    "merging": {"do_merge": True, "merge_thr": 0.8, "merge_parallel": False,
                "max_merge_area": None},
    "quality": {
        "SNR_lowest": 0.5, "cnn_lowest": 0.1, "gSig_range": None, "min_SNR": 2.5,
        "min_cnn_thr": 0.9, "rval_lowest": -1, "rval_thr": 0.8, "use_cnn": True,
        "use_ecc": False, "max_ecc": 3,
    },
    "online": {
        "N_samples_exceptionality": None, "batch_update_suff_stat": False,
        "dist_shape_update": False, "ds_factor": 1, "epochs": 1, "expected_comps": 500,
        "full_XXt": False, "init_batch": 200, "init_method": "bare", "iters_shape": 5,
        "max_comp_update_shape": np.inf, "max_num_added": 5, "max_shifts_online": 10,
        "min_SNR": 2.5, "min_num_trial": 5, "minibatch_shape": 100, "minibatch_suff_stat": 5,
        "motion_correct": True, "movie_name_online": "online_movie.mp4", "normalize": False,
        "n_refit": 0, "num_times_comp_updated": np.inf, "opencv_codec": "H264",
        "path_to_model": None, "ring_CNN": False, "rval_thr": 0.8, "save_online_movie": False,
        "show_movie": False, "simultaneously": False, "sniper_mode": False,
        "stop_detection": False, "test_both": False, "thresh_CNN_noisy": 0.5,
        "thresh_fitness_delta": -50, "thresh_fitness_raw": None, "thresh_overlap": 0.5,
        "update_freq": 200, "update_num_comps": True, "use_corr_img": False,
        "use_dense": True, "use_peak_max": True, "W_update_factor": 1,
    },
    "motion": {
        "border_nan": "copy", "gSig_filt": None, "is3D": False, "max_deviation_rigid": 3,
        "max_shifts": (6, 6), "min_mov": None, "niter_rig": 1, "nonneg_movie": True,
        "num_frames_split": 80, "num_splits_to_process_els": None,
        "num_splits_to_process_rig": None, "overlaps": (32, 32), "pw_rigid": False,
        "shifts_interpolate": False, "shifts_opencv": True, "splits_els": 14,
        "splits_rig": 14, "strides": (96, 96), "upsample_factor_grid": 4, "use_cuda": False,
    },
    "ring_CNN": {
        "n_channels": 2, "use_bias": False, "use_add": False, "pct": 0.01, "patience": 3,
        "max_epochs": 100, "width": 5, "loss_fn": "pct", "lr": 1e-3, "lr_scheduler": None,
        "path_to_model": None, "remove_activity": False, "reuse_model": False,
    },
}  # fmt: skip


def default_params() -> dict[str, dict[str, Any]]:
    """A fresh copy of CaImAn 1.12's default CNMFParams groups (plain values only)."""
    return copy.deepcopy(_DEFAULTS)
