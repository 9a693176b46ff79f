"""Versioned Parquet table contracts: pyarrow schemas plus ``validate``."""

from data_contracts.schemas import (
    CONTRACT_VERSION,
    CONTRACTS,
    MESSAGES,
    MIXTURE,
    PAIRS,
    QUARANTINE,
    RANKED_GROUPS,
    RANKING_OUTCOMES,
    RAW_MANIFEST,
    REWARDBENCH_SCORES,
    SOURCE_STATS,
    Contract,
    ContractError,
    contract,
    validate,
)

__all__ = [
    "CONTRACTS",
    "CONTRACT_VERSION",
    "MESSAGES",
    "MIXTURE",
    "PAIRS",
    "QUARANTINE",
    "RANKED_GROUPS",
    "RANKING_OUTCOMES",
    "RAW_MANIFEST",
    "REWARDBENCH_SCORES",
    "SOURCE_STATS",
    "Contract",
    "ContractError",
    "contract",
    "validate",
]
