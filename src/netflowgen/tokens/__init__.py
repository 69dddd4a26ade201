"""Tokens: per-node binning (SPEC 6), token arrays, time splits and windows (SPEC 4-5)."""

from netflowgen.tokens.binner import MISSING_TOKEN, Binner, algorithm1_cutoffs, node_signature
from netflowgen.tokens.data import (
                                    DEFAULT_SPLIT,
                                    TIME_FIELDS,
                                    ModelInputs,
                                    TokenData,
                                    random_windows,
                                    scoring_windows,
                                    time_index,
                                    time_splits,
)

__all__ = ["DEFAULT_SPLIT", "MISSING_TOKEN", "Binner", "algorithm1_cutoffs", "node_signature", "TIME_FIELDS", "ModelInputs",
           "TokenData", "random_windows", "scoring_windows", "time_index", "time_splits"]
