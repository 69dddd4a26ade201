"""Flows -> the dense node-minute table of the 86 traffic features (SPEC 3).

    from netflowgen.features import FeatureConfig, build_features
    summary = build_features(["flows.parquet"], "features.parquet", FeatureConfig(customers="c.csv"))

`definition` holds the features as one declarative table (compiled by `polars_engine` and
`spark_engine`), `timeline` the minute range and missing minutes, `dense` the bounded-memory writer.
"""

from netflowgen.features.build import FeatureSummary, build_features
from netflowgen.features.definition import FEATURES, Feature
from netflowgen.features.settings import ENGINES, FeatureConfig

__all__ = ["build_features", "FeatureConfig", "FeatureSummary", "FEATURES", "Feature", "ENGINES"]
