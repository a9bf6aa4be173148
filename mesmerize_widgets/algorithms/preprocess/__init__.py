"""``preprocess``: crop and downsample a movie in space and time into a CaImAn memmap.

Miniscope (1-photon) movies are routinely downsampled before CNMF-E; the result is a movie
another item can take as its input, like an mcorr output.
"""

from ..registry import Algorithm, register
from ..schema import Param, ParamSchema

SCHEMA = ParamSchema(
    algo="preprocess",
    params=(
        Param("var_name_hdf5", "mov", "str", "dataset name when the input is an HDF5 file"),
        Param("crop", None, "tuple", "(row_start, row_stop, col_start, col_stop) to keep; None keeps all",
              nullable=True, item="int", length=4, minimum=0),
        Param("ds_factor", 1, "int", "spatial downsampling factor (area average)", minimum=1),
        Param("temporal_ds", 1, "int", "temporal downsampling factor (mean of consecutive frames)", minimum=1),
        Param("chunk_frames", 200, "int", "frames read per chunk (bounds memory)", minimum=1),
    ),
)

ALGORITHM = register(
    Algorithm(
        name="preprocess",
        doc=__doc__.strip().splitlines()[0],
        schema=SCHEMA,
        backends={"builtin": "mesmerize_widgets.algorithms.preprocess.builtin:run"},
        output_movie_key="preprocess-output-path",
    )
)
