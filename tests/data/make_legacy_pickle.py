"""Write a small mesmerize-core style ``batch.pickle`` with whatever pandas runs this script.

The fixtures beside it were made with throwaway virtual environments (Python 3.11):
``pip install pandas==1.5.3 numpy==1.26.4``, ``pip install pandas==2.2.3 numpy==1.26.4`` and
``pip install pandas==3.1.1 pyarrow``, then ``python make_legacy_pickle.py OUT.pickle``.
The DataFrame is built the way mesmerize-core builds it (``df.loc[len] = Series``, rows
updated through ``iloc``), with the output paths as ``Path`` objects, as mesmerize-core kept
them before June 2024, and a numpy float in the params.
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ["algo", "item_name", "input_movie_path", "params", "outputs", "added_time",
           "ran_time", "algo_duration", "comments", "uuid"]
MCORR = "11111111-1111-4111-8111-111111111111"
CNMF = "22222222-2222-4222-8222-222222222222"
CNMFE = "33333333-3333-4333-8333-333333333333"
MMAP = f"{MCORR}/{MCORR}-a_els__d1_60_d2_80_d3_1_order_F_frames_100.mmap"

df = pd.DataFrame(columns=COLUMNS)


def add(algo, name, movie, params, uuid):
    df.loc[df.index.size] = pd.Series({
        "algo": algo, "item_name": name, "input_movie_path": movie, "params": params,
        "outputs": None, "added_time": "2023-05-01T12:00:00", "ran_time": None,
        "algo_duration": None, "comments": None, "uuid": uuid,
    })


def update(index, updates):
    row = df.iloc[index]
    row.update(pd.Series(updates))
    df.iloc[index] = row


add("mcorr", "movie a", "movies/a.tif",
    {"main": {"max_shifts": (24, 24), "strides": (48, 48), "overlaps": (24, 24), "pw_rigid": True}}, MCORR)
update(0, {
    "outputs": {
        "mcorr-output-path": Path(MMAP),
        "corr-img-path": Path(f"{MCORR}/{MCORR}_cn.npy"),
        "shifts": Path(f"{MCORR}/{MCORR}_shifts.npy"),
        "mean-projection-path": Path(f"{MCORR}/{MCORR}_mean_projection.npy"),
        "std-projection-path": Path(f"{MCORR}/{MCORR}_std_projection.npy"),
        "max-projection-path": Path(f"{MCORR}/{MCORR}_max_projection.npy"),
        "success": True, "traceback": None,
    },
    "ran_time": "2023-05-01T12:05:00", "algo_duration": "12.3 sec",
})
add("cnmf", "movie a", MMAP, {"main": {"p": 1, "gSig": (4, 4), "K": 4, "min_SNR": np.float64(2.5)}, "refit": True}, CNMF)
update(1, {"outputs": {"success": False, "traceback": "Traceback (most recent call last):\nValueError: boom"},
           "ran_time": "2023-05-01T12:06:00", "algo_duration": "1.0 sec"})
add("cnmfe", "movie b", "movies/b.tif", {"main": {"gSig": (10, 10), "gSiz": (41, 41)}}, CNMFE)
df.to_pickle(sys.argv[1])
print(f"pandas {pd.__version__}, numpy {np.__version__} -> {sys.argv[1]}")
