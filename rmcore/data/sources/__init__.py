"""Source adapters: raw hub rows -> the pair contract, with each source's rules (SPEC section 3)."""

from rmcore.data.sources.base import AccountingError, CleanOptions, CleanResult, SourceAdapter
from rmcore.data.sources.catalog import SOURCE_NAMES, UnknownSource, clean_source, get_adapter
from rmcore.data.sources.mirror import RawData, SourceNotFound, read_raw

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
