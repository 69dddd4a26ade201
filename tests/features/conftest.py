"""Fixtures of the features tests: the golden flows with their customer table, and one Spark
session shared by every Spark test (starting Spark costs seconds)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .golden_flows import CUSTOMERS_CSV, GOLDEN_FLOWS, write_flows


@pytest.fixture
def golden(tmp_path: Path) -> tuple[Path, Path]:
    """(flows.parquet, customers.csv) of the golden set."""
    (tmp_path / "customers.csv").write_text(CUSTOMERS_CSV)
    return write_flows(tmp_path / "flows.parquet", GOLDEN_FLOWS), tmp_path / "customers.csv"


@pytest.fixture(scope="session")
def spark():
    """One local[2] SparkSession for all Spark tests."""
    if shutil.which("java") is None:
        pytest.skip("Spark needs Java (java not on PATH)")
    from netflowgen.features import FeatureConfig
    from netflowgen.features.spark_engine import spark_session

    session = spark_session(FeatureConfig(spark_master="local[2]", spark_driver_memory="1g",
                                          spark_shuffle_partitions=2))
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
