"""Counting rejected input records by reason, with a few samples of each, so nothing is dropped
silently and every command can report what it refused and why."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


class InputError(ValueError):
    """Input that cannot be used at all (unreadable file, no valid record); names the file/line/field."""


@dataclass
class RejectCounter:
    """Counts of rejected records per reason, with up to `max_samples` examples per reason."""

    max_samples: int = 3
    counts: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[str]] = field(default_factory=dict)
    accepted: int = 0
    bad_files: list[str] = field(default_factory=list)  # "FILE: why", files skipped whole (--skip-bad-files)

    def reject(self, reason: str, sample: str = "", n: int = 1) -> None:
        """Record `n` rejected records for `reason`; `sample` names where (file:line, field=value)."""
        if n <= 0:
            return
        self.counts[reason] += n
        if sample:
            bucket = self.samples.setdefault(reason, [])
            if len(bucket) < self.max_samples:
                bucket.append(sample)

    def accept(self, n: int = 1) -> None:
        self.accepted += n

    @property
    def rejected(self) -> int:
        return sum(self.counts.values())

    def merge(self, other: "RejectCounter") -> None:
        self.accepted += other.accepted
        self.bad_files.extend(other.bad_files)
        for reason, n in other.counts.items():
            self.counts[reason] += n
        for reason, items in other.samples.items():
            bucket = self.samples.setdefault(reason, [])
            bucket.extend(items[: max(0, self.max_samples - len(bucket))])

    def as_dict(self) -> dict[str, object]:
        return {
            "accepted": self.accepted,
            "rejected": self.rejected,
            "by_reason": dict(self.counts.most_common()),
            "samples": self.samples,
            "bad_files": self.bad_files,
        }

    def report(self) -> str:
        """Human-readable summary: one line per reason with its count and first sample."""
        lines = [f"accepted {self.accepted:,} records, rejected {self.rejected:,}"]
        for reason, n in self.counts.most_common():
            first = self.samples.get(reason, [""])[0]
            lines.append(f"  {reason}: {n:,}" + (f"  (e.g. {first})" if first else ""))
        if self.bad_files:
            lines.append(f"skipped {len(self.bad_files)} bad file(s):")
            lines += [f"  {b}" for b in self.bad_files]
        return "\n".join(lines)
