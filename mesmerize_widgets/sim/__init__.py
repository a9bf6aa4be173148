"""Realistic calcium-imaging movie simulator that also returns the ground truth.

Used for the demo sample data, accuracy tests (motion correction, CNMF/CNMF-E) and
benchmarks, since the package cannot download data.  Deterministic for a given seed,
vectorised (numpy/scipy/OpenCV), and able to stream long movies chunk by chunk::

    sim = simulate_2p(n_frames=1000, dims=(256, 256), n_neurons=150, motion="rigid")
    sim.movie            # (T, d1, d2) float32
    sim.truth.A          # (d1*d2, K) sparse footprints, Fortran pixel order (CaImAn's A)
    sim.truth.shifts     # (T, 2) [dy, dx] shifts that REGISTER each frame

    big = simulate_2p(n_frames=10000, dims=(512, 512), n_neurons=600, lazy=True)
    write_tiff(big, "big.tif")   # streamed, never holds the whole movie

See :mod:`mesmerize_widgets.sim.truth` for the conventions (shift sign, pixel order, units).
"""

from .io import TiffInfo, sample_dir, sample_movie, write_tiff
from .movie import (
    SimulatedMovie,
    simulate_1p,
    simulate_2p,
    simulate_realistic_1p,
    simulate_realistic_2p,
)
from .scoring import match_to_truth
from .truth import GroundTruth, load_truth

__all__ = [
    "GroundTruth",
    "SimulatedMovie",
    "TiffInfo",
    "load_truth",
    "match_to_truth",
    "sample_dir",
    "sample_movie",
    "simulate_1p",
    "simulate_2p",
    "simulate_realistic_1p",
    "simulate_realistic_2p",
    "write_tiff",
]
