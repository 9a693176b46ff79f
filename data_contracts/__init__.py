"""Versioned Parquet table contracts: pyarrow schemas plus ``validate``."""

from data_contracts.schemas import (
    CONTRACT_VERSION,
    CONTRACTS,
    MESSAGES,
    Contract,
    ContractError,
    contract,
    validate,
)

__all__ = ["CONTRACT_VERSION", "CONTRACTS", "MESSAGES", "Contract", "ContractError", "contract", "validate"]
