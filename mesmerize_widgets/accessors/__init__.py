"""The pandas accessors users call; importing this package registers ``.caiman``."""

from .caiman import CaimanDataFrameAccessor, CaimanSeriesAccessor
from .cnmf import CNMFSeriesAccessor  # noqa: F401  (registers row.cnmf)

__all__ = ["CaimanDataFrameAccessor", "CaimanSeriesAccessor"]
