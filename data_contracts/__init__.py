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

__all__ = ["CONTRACTS", "CONTRACT_VERSION", "MESSAGES", "Contract", "ContractError", "contract", "validate"]
