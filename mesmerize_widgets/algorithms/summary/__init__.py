"""``summary``: mean/std/max projections and the local correlation image of a movie.

The smallest real algorithm: it exercises the registry, the runner and the outputs end to end,
and gives a quick look at a recording before motion correction.
"""

from ..registry import Algorithm, register
from ..schema import Param, ParamSchema

SCHEMA = ParamSchema(
    algo="summary",
    params=(
        Param("var_name_hdf5", "mov", "str", "dataset name when the input is an HDF5 file"),
        Param("chunk_frames", 200, "int", "frames read per chunk (bounds memory)", minimum=1),
        Param("max_frames", None, "int", "use only the first N frames (None: all)", nullable=True, minimum=1),
        Param("eight_neighbours", True, "bool", "correlation image over 8 neighbours (False: 4), as CaImAn"),
    ),
)

ALGORITHM = register(
    Algorithm(
        name="summary",
        doc=__doc__.strip().splitlines()[0],
        schema=SCHEMA,
        backends={
            "builtin": "mesmerize_widgets.algorithms.summary.builtin:run",
            "caiman": "mesmerize_widgets.algorithms.summary.caiman:run",
        },
    )
)
