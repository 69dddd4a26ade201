"""The built-in simulated ISP: normal per-node traffic, attacks, benign surges, exporter sampling
and outages, commercial-defense alerts and the ground truth (docs/simulator.md).

    simulate(SimConfig(...), out_dir) -> SimResult     # flows.parquet, customers.csv, nodes.csv,
                                                       # alerts.csv, truth.csv
    Simulation(cfg).batches()                          # the same flows as record batches (replay)
"""

from netflowgen.simulate.config import EventConfig, OutputConfig, SimConfig, TimeConfig, TopologyConfig
from netflowgen.simulate.run import SimResult, Simulation, simulate

__all__ = ["SimConfig", "TopologyConfig", "TimeConfig", "EventConfig", "OutputConfig",
           "Simulation", "SimResult", "simulate"]
