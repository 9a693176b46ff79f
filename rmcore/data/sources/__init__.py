"""Source adapters: raw hub rows -> the pair contract, with each source's rules (SPEC section 3)."""

from rmcore.data.sources.base import AccountingError, CleanOptions, CleanResult, SourceAdapter
from rmcore.data.sources.mirror import RawData, SourceNotFound, read_raw
from rmcore.data.sources.registry import SOURCE_NAMES, UnknownSource, clean_source, get_adapter

__all__ = [
    "SOURCE_NAMES",
    "AccountingError",
    "CleanOptions",
    "CleanResult",
    "RawData",
    "SourceAdapter",
    "SourceNotFound",
    "UnknownSource",
    "clean_source",
    "get_adapter",
    "read_raw",
]
