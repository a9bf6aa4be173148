"""The pandas accessors users call; importing this package registers ``.caiman``."""

from .caiman import CaimanDataFrameAccessor, CaimanSeriesAccessor

__all__ = ["CaimanDataFrameAccessor", "CaimanSeriesAccessor"]
