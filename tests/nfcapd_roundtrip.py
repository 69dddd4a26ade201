"""One check shared by every test that sends NetFlow to Debian's nfcapd: read back what nfcapd
stored and compare it, field by field, with what was sent."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc


def stored_vs_sent(spool: Path, sent: pa.Table, compared: list[str], key: list[str]) -> list[dict]:
    """Differences between the flows nfcapd wrote under `spool` and the table `sent`.

    nfcapd multiplies packets and bytes by the sampling rate it learned from the exporter's options
    template, so the expected counts are the sent counts x `sampling_rate`. Rows are matched after
    sorting both sides by `key`; returns one dict {column: (expected, stored)} per differing row
    (an empty list when all agree). Raises AssertionError when the row counts differ.
    """
    from netflowgen.sources import SourceOptions, open_source

    files = sorted(spool.glob("nfcapd.[0-9]*"))
    got = pa.Table.from_batches(list(open_source(files, "nfcapd", SourceOptions(default_sampling_rate=1))))
    assert got.num_rows == sent.num_rows, (got.num_rows, sent.num_rows)
    rate = sent["sampling_rate"].cast(pa.int64())
    expected = sent
    for col in ("packets", "bytes"):
        expected = expected.set_column(expected.schema.get_field_index(col), col,
                                       pc.multiply(sent[col], rate))
    order = [(k, "ascending") for k in key]
    a = expected.select(compared).sort_by(order).to_pylist()
    b = got.select(compared).sort_by(order).to_pylist()
    return [{k: (x[k], y[k]) for k in x if x[k] != y[k]} for x, y in zip(a, b) if x != y]
