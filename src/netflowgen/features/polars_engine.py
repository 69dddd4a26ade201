"""Flows -> node-minute features with Polars' embedded streaming engine.

Two streaming passes over the canonical flow Parquet, then a scatter into dense blocks; memory is
bounded by the node-minutes with traffic, not by the number of flows:

1. `survey`: distinct IPs (or destination counts), the minute range and the minutes with data.
2. `semi_aggregate`: each flow becomes one row per node end (in: dst is a node, out: src is a node)
   with its class codes (see `definition`); rows are summed per (node, minute, dir, proto, port,
   flag) under one packed 64-bit key. That "semi" table holds 3 sums per combination (~32 bytes)
   instead of 86 per node-minute, and is much cheaper per flow than 86 conditional sums.
3. `PolarsChunks`: for a range of nodes, the 86 feature conditions (compiled to Polars expressions
   and evaluated once per class-code combination) route each semi row into a zero-filled dense
   block; `dense` writes the blocks out one by one.

The code is split by idea: `polars_survey` (pass 1), `polars_semi` (pass 2, semi table and its
chunks), `polars_dense` (pass 2 without the semi table, compiled scatter), `classes` (the
class/routing compiler shared with the Spark engine and the scatter), `exporters` (exporter keys).
This module is the engine's interface, as `features.build` uses it.
"""

from netflowgen.features.classes import MAX_NODES, class_tables, derived_features, routing_slots
from netflowgen.features.polars_dense import DenseChunks, dense_aggregate, dense_bytes, row_slices
from netflowgen.features.polars_scan import ENGINE, scan
from netflowgen.features.polars_semi import PolarsChunks, semi_aggregate
from netflowgen.features.polars_survey import survey

__all__ = ["ENGINE", "MAX_NODES", "DenseChunks", "PolarsChunks", "class_tables", "dense_aggregate", "dense_bytes",
           "derived_features", "routing_slots", "row_slices", "scan", "semi_aggregate", "survey"]
