"""`StreamingScorer`: a `Detector`'s minute-by-minute scores, one closed minute at a time, equal to
`Detector.score` on the whole table (the live scorer behind `netflowgen serve`).

Per node it keeps only what the next minute needs (so the cost of a closed minute never grows with
history):
- the last H = C + 1 minutes of the features the core reads (and, for transformer methods, their
  tokens), C = the core's context: the anchored window [a(tau), tau] of any minute tau
  (`detect.anchored`) lies inside them;
- the intensities of the last L minutes (L = the detector's `length`), whose aggregate is the score.

Minute tau is scored by running the core once per node on the window [a(tau), tau] and keeping the
last output: the naive computation of `detect.anchored`, which the batch scorer equals (causality).
The window's start is clipped to the first minute the scorer saw, as the batch scorer clips it to
the table's first minute, so both see the same minutes. The buffers are a flat array of 2H minutes
written left to right; when it fills, the last H minutes move to the front (amortized one copy per
H minutes).

Cost per closed minute: for Static-EWMA, Static-percentile, Seasonal-band and MS-LSTM one position
per live anchored window and node (`detect.incremental` carries each window's running state); for
CUSUM, Surprisal and the transformer methods one window of at most C positions per node, C/2 on
average (a key/value cache per node would make it one position, at C x d x layers floats of memory
per node: see docs/live.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from netflowgen.detect.anchored import window_anchor
from netflowgen.detect.baselines import VOLUME_FEATURES
from netflowgen.detect.cores import OperatorCore, ScoringData
from netflowgen.detect.cube import NodeMinuteCube
from netflowgen.detect.detector import Detector
from netflowgen.detect.incremental import stream_for
from netflowgen.schema import FEATURE_NAMES, MS_PER_MINUTE


def core_features(detector: Detector) -> tuple[str, ...]:
    """The feature columns a detector's core reads (the operator baselines need only volumes)."""
    return tuple(VOLUME_FEATURES) if isinstance(detector.core, OperatorCore) else FEATURE_NAMES


@dataclass
class MinuteScores:
    """Scores of one closed minute: node order as the scorer's `nodes`."""

    minute_ms: int
    score: np.ndarray  # (n,) float64 in (0, 1]
    alarm: np.ndarray  # (n,) bool
    intensity: np.ndarray  # (n,) float64
    driver: list[str | None] | None  # (n,) driving measure (operator methods) or None


class StreamingScorer:
    """Score a stream of dense node-minute rows minute by minute with `detector`.

    >>> s = StreamingScorer(det, nodes, customers)
    >>> out = s.step(minute_ms, values, missing)   # values (n, F) in `s.features` order, missing (n,)

    All nodes must be calibrated in the detector (`Detector.calibrate`; `serve` onboards new nodes
    before they are added). Nodes added later (`add_nodes`) start with an all-zero history whose
    missing flags are the given ones, as a dense table would hold them.
    """

    def __init__(self, detector: Detector, nodes: list[str], customers: list[str], node_batch: int = 4096) -> None:
        self.detector = detector
        self.node_batch = int(node_batch)  # nodes per window call: bounds the memory of a minute's windows
        self.features = core_features(detector)
        self.context, self.stride = int(detector.core.context), int(detector.core.stride)
        self.horizon = self.context + 1
        self.nodes: list[str] = []
        self.customers: list[str] = []
        n_f = len(self.features)
        self.values = np.zeros((0, 2 * self.horizon, n_f), dtype=np.float32)
        self.missing = np.zeros((0, 2 * self.horizon), dtype=bool)
        self.tokens: np.ndarray | None = None  # (n, 2H, F) uint8 for transformer methods
        self.token_meta: Any = None  # the last minute's TokenData (vocabulary, bins, time zone)
        self.node_customer = np.zeros(0, np.int64)  # (n,) per node, from the minute's TokenData
        self.node_embed = np.zeros(0, np.int64)
        self.minutes = np.zeros(2 * self.horizon, dtype=np.int64)
        self.filled = 0  # minutes written in the flat buffer
        self.first_minute_ms: int | None = None
        self.steps = 0  # minutes scored since the first (the warm-up counts these)
        self.x_ring = np.zeros((0, detector.length), dtype=np.float64)
        self.calib = np.zeros(0, dtype=np.int64)
        self.windows: dict[int, dict[str, np.ndarray]] = {}  # anchor epoch minute -> incremental state
        self.add_nodes(nodes, customers)

    # --- nodes -----------------------------------------------------------------------------------
    def add_nodes(self, nodes: list[str], customers: list[str], history_missing: np.ndarray | None = None) -> None:
        """Append nodes (calibrated in the detector) with a zero history; `history_missing` (filled,)
        the missing flag of each buffered minute (default: not missing). Transformer methods give the
        history the missing token (a dense table would hold the tokens of zero rows there)."""
        if not nodes:
            return
        index = {n: i for i, n in enumerate(self.detector.nodes)}
        unknown = [n for n in nodes if n not in index]
        if unknown:
            raise ValueError(f"{len(unknown)} node(s) are not calibrated in the detector (e.g. {unknown[0]})")
        k = len(nodes)
        self.nodes += list(nodes)
        self.customers += [str(c) for c in customers]
        self.values = np.concatenate([self.values, np.zeros((k, *self.values.shape[1:]), np.float32)])
        miss = np.zeros((k, self.missing.shape[1]), dtype=bool)
        if history_missing is not None:
            miss[:, :self.filled] = np.asarray(history_missing, dtype=bool)[None, :]
        self.missing = np.concatenate([self.missing, miss])
        if self.tokens is not None:
            new = np.full((k, *self.tokens.shape[1:]), self.detector.core.binner.missing_token, np.uint8)
            self.tokens = np.concatenate([self.tokens, new])
            self.node_customer = np.concatenate([self.node_customer, np.zeros(k, np.int64)])
            self.node_embed = np.concatenate([self.node_embed, np.zeros(k, np.int64)])
        self.x_ring = np.concatenate([self.x_ring, np.zeros((k, self.x_ring.shape[1]))])
        self.calib = np.concatenate([self.calib, np.array([index[n] for n in nodes], dtype=np.int64)])
        self._replay_new_rows(np.arange(len(self.nodes) - k, len(self.nodes)))

    # --- scoring ---------------------------------------------------------------------------------
    def step(self, minute_ms: int, values: np.ndarray, missing: np.ndarray, tokens: Any = None) -> MinuteScores:
        """Score closed minute `minute_ms` (UTC ms, the minute after the last one stepped).

        values : (n, F) float, F = `self.features`; missing : (n,) bool; tokens : for transformer
        methods the minute's TokenData over the same nodes (`Detector.tokens_for`), else None."""
        minute_ms = int(minute_ms)
        if self.first_minute_ms is None:
            self.first_minute_ms = minute_ms
        elif minute_ms != int(self.minutes[self.filled - 1]) + MS_PER_MINUTE:
            raise ValueError(f"minute {minute_ms} does not follow {int(self.minutes[self.filled - 1])}")
        if self.filled == self.values.shape[1]:  # the flat buffer is full: keep the last H - 1 minutes
            keep = self.horizon - 1
            self.values[:, :keep] = self.values[:, -keep:]
            self.missing[:, :keep] = self.missing[:, -keep:]
            self.minutes[:keep] = self.minutes[-keep:]
            if self.tokens is not None:
                self.tokens[:, :keep] = self.tokens[:, -keep:]
            self.filled = keep
        p = self.filled
        self.values[:, p] = values
        self.missing[:, p] = missing
        self.minutes[p] = minute_ms
        if self.detector.core.needs_tokens:
            if tokens is None:
                raise ValueError(f"{self.detector.method} needs the minute's tokens")
            if list(tokens.nodes) != self.nodes:
                raise ValueError("the minute's tokens are not over the scorer's nodes")
            if self.tokens is None:
                self.tokens = np.full((len(self.nodes), self.values.shape[1], tokens.tokens.shape[2]),
                                      tokens.missing_token, np.uint8)
            self.tokens[:, p] = tokens.tokens[:, 0]
            self.token_meta = tokens
            self.node_customer, self.node_embed = tokens.node_customer, tokens.node_embed_row
        self.filled = p + 1
        lo = max(0, self.filled - self.horizon)
        view = NodeMinuteCube(self.nodes, self.customers, self.minutes[lo:self.filled], self.values[:, lo:self.filled],
                              self.missing[:, lo:self.filled], self.features)
        data = ScoringData(view, self._token_view(lo) if self.tokens is not None else None, self.detector.time_zone)
        # the window [a(tau), tau], clipped to the first minute scored: what the batch scorer runs
        tau_epoch = minute_ms // MS_PER_MINUTE
        anchor = max(int(window_anchor(np.array([tau_epoch]), self.context, self.stride)[0]),
                     int(self.first_minute_ms) // MS_PER_MINUTE)
        start = anchor - int(view.minutes[0]) // MS_PER_MINUTE
        length = tau_epoch - anchor + 1
        rows = np.arange(len(self.nodes))
        drivers = getattr(self.detector.core, "drivers", None)
        stream = stream_for(self.detector.core, self.calib)
        if stream is not None:  # one position per live window and node (detect.incremental)
            out = self._advance(stream, tau_epoch, anchor)
        else:
            if drivers:
                fn = self.detector.core.window_fn(data, self.calib, per_driver=True)
            else:
                fn = self.detector.core.window_fn(data, self.calib)
            batches = [rows[b:b + self.node_batch] for b in range(0, len(rows), self.node_batch)]
            out = np.concatenate([np.asarray(fn(r, np.full(len(r), start), length))[:, -1] for r in batches])  # (n,) or (n, G)
        driver = None
        if drivers and out.ndim == 2:
            driver = [drivers[i] for i in out.argmax(axis=1)]
            out = out.max(axis=1)
        x = out.astype(np.float64)
        self.x_ring = np.roll(self.x_ring, -1, axis=1)
        self.x_ring[:, -1] = x
        if self.detector.kind == "sum":
            score = np.exp(-self.x_ring.sum(axis=1))
        else:
            score = np.exp(-np.maximum(self.x_ring, 0.0).max(axis=1))
        alarm = (score < self.detector.thresholds(self.calib)) & (self.steps >= self.detector.warmup)
        self.steps += 1
        return MinuteScores(minute_ms, score, alarm, x, driver)

    def _advance(self, stream: Any, tau_epoch: int, anchor: int) -> np.ndarray:
        """Open the window anchored at this minute, drop those no later minute uses, advance every
        live window by this minute; the output of window `anchor` (the batch scorer's window)."""
        first = int(self.first_minute_ms) // MS_PER_MINUTE  # type: ignore[arg-type]
        if anchor not in self.windows and anchor < tau_epoch:  # e.g. a state saved without its windows
            self.windows = {}
            for w in [anchor] + [w for w in range(anchor + 1, tau_epoch) if w % self.stride == 0]:
                self.windows[w] = stream.new(len(self.nodes))
                self._replay(stream, self.windows[w], w, np.arange(len(self.nodes)), self.filled - 1)
        if (tau_epoch % self.stride == 0 or tau_epoch == first) and tau_epoch not in self.windows:
            self.windows[tau_epoch] = stream.new(len(self.nodes))
        for w in [w for w in self.windows if w < anchor]:
            del self.windows[w]
        rows = np.arange(len(self.nodes))
        p = self.filled - 1
        hour = int(self._hours(self.minutes[p:p + 1])[0])
        out = None
        for w, st in sorted(self.windows.items()):
            y = stream.step(st, rows, tau_epoch - w, lambda k: self.values[:, p - k + 1:p + 1], hour)
            if w == anchor:
                out = y
        if out is None:
            raise RuntimeError(f"no live window anchored at minute {anchor} (state restored from another run?)")
        return out

    def _replay(self, stream: Any, st: dict[str, np.ndarray], w: int, rows: np.ndarray, upto: int) -> None:
        """Run the buffered minutes [w, buffer index `upto`) of `rows` through window `w`'s state."""
        ms = self.minutes[:upto] // MS_PER_MINUTE
        hours = self._hours(self.minutes[:upto])
        for idx in np.flatnonzero(ms >= w):
            stream.step(st, rows, int(ms[idx] - w), lambda k, i=idx: self.values[rows, i - k + 1:i + 1], int(hours[idx]))

    def _hours(self, minutes_ms: np.ndarray) -> np.ndarray:
        """Hour of day of UTC-ms minutes in the detector's time zone (what Seasonal-band reads)."""
        from netflowgen.tokens.data import time_index
        return time_index(np.asarray(minutes_ms).astype("datetime64[ms]"), self.detector.time_zone)[:, 1]

    def _replay_new_rows(self, rows: np.ndarray) -> None:
        """Nodes added after windows opened: run their buffered (zero) minutes through every live
        window, so their state is what it would be had they been there from the start."""
        stream = stream_for(self.detector.core, self.calib)
        if stream is None:
            return
        for w, st in self.windows.items():
            for key, v in stream.new(len(rows)).items():
                st[key] = np.concatenate([st[key], v])
            self._replay(stream, st, w, rows, self.filled)

    def step_rows(self, rows: pl.DataFrame) -> MinuteScores:
        """Score one closed minute from its dense node-minute rows (node, customer, minute, missing,
        features...), one row per scorer node (any order)."""
        minutes = rows.get_column("minute").unique()
        if len(minutes) != 1:
            raise ValueError(f"step_rows takes the rows of one minute, got {len(minutes)} minutes")
        order = pl.DataFrame({"node": self.nodes}).with_row_index("_i")
        df = order.join(rows, on="node", how="left").sort("_i")
        if df.get_column("minute").null_count():
            raise ValueError("the minute's rows lack some of the scorer's nodes")
        values = df.select(list(self.features)).to_numpy().astype(np.float32)
        missing = df.get_column("missing").to_numpy().astype(bool)
        tokens = None
        if self.detector.core.needs_tokens:
            cube = NodeMinuteCube.from_table(df.drop("_i"))
            tokens = self.detector.tokens_for(ScoringData(cube, None, self.detector.time_zone), self.calib, df.drop("_i"))
        minute_ms = int(minutes.cast(pl.Datetime("ms")).dt.epoch("ms")[0])
        return self.step(minute_ms, values, missing, tokens)

    def _token_view(self, lo: int) -> Any:
        from netflowgen.tokens import TokenData
        t = self.token_meta
        assert self.tokens is not None and t is not None
        return TokenData(self.tokens[:, lo:self.filled], self.nodes, t.customers, self.node_customer, self.node_embed,
                         int(self.minutes[lo]), t.feature_names, t.n_bins, t.time_zone)

    # --- state -------------------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        """Arrays that restore the scorer exactly (`restore`); nodes and counters in `meta()`."""
        arrays = {"values": self.values[:, :self.filled], "missing": self.missing[:, :self.filled],
                  "minutes": self.minutes[:self.filled], "x_ring": self.x_ring}
        if self.tokens is not None:
            arrays["tokens"] = self.tokens[:, :self.filled]
        for w, st in self.windows.items():
            arrays.update({f"win{w}.{k}": v for k, v in st.items()})
        return arrays

    def meta(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "customers": self.customers, "filled": self.filled, "steps": self.steps,
                "first_minute_ms": self.first_minute_ms, "method": self.detector.method,
                "length": self.detector.length, "context": self.context, "features": list(self.features)}

    @classmethod
    def restore(cls, detector: Detector, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> "StreamingScorer":
        """The scorer `state()`/`meta()` describe, for the same detector (checked)."""
        if meta["method"] != detector.method or meta["length"] != detector.length or meta["context"] != detector.core.context:
            raise ValueError(f"saved scorer state is for {meta['method']} (length {meta['length']}, context "
                             f"{meta['context']}), not this detector ({detector.method}, {detector.length}, {detector.core.context})")
        s = cls(detector, list(meta["nodes"]), list(meta["customers"]))
        f = int(meta["filled"])
        s.values[:, :f] = arrays["values"]
        s.missing[:, :f] = arrays["missing"]
        s.minutes[:f] = arrays["minutes"]
        s.x_ring[:] = arrays["x_ring"]
        if "tokens" in arrays:
            s.tokens = np.zeros((len(s.nodes), s.values.shape[1], arrays["tokens"].shape[2]), np.uint8)
            s.tokens[:, :f] = arrays["tokens"]
        s.filled, s.steps = f, int(meta["steps"])
        for key, v in arrays.items():
            if key.startswith("win"):
                w, name = key[3:].split(".", 1)
                s.windows.setdefault(int(w), {})[name] = np.array(v)
        s.first_minute_ms = meta["first_minute_ms"]
        return s
