"""The pandas accessors users call; importing this package registers ``.caiman``."""

from .caiman import CaimanDataFrameAccessor, CaimanSeriesAccessor
from .cnmf import CNMFSeriesAccessor  # noqa: F401  (registers row.cnmf)
from .mcorr import MCorrExtensions  # noqa: F401  (registers row.mcorr)

__all__ = ["CaimanDataFrameAccessor", "CaimanSeriesAccessor"]
