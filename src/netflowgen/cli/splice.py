"""`netflowgen splice`: replay a real attack capture onto a host's canonical flows, with truth.csv.

Writes OUT (canonical flow Parquet: the host's flows plus the inserted ones, sorted by ts_start) and
TRUTH (one row per insertion: target_ip, onset, end, kind=attack, attack_source); prints the flows
inserted per insertion and any warnings. See docs/sources.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from netflowgen.rejects import InputError, RejectCounter


def splice(
    host_flows: Path = typer.Option(..., "--host-flows", help="The host's (benign) canonical flow Parquet."),
    attack: list[Path] = typer.Option(..., "--attack", help="Attack capture file or folder (repeatable)."),
    attack_format: str = typer.Option("auto", "--attack-format", help="nfcapd, pcap, parquet, zeek, argus, "
                                      "nfdump-csv, csv, or auto (guess from the first --attack)."),
    victim: str = typer.Option(..., "--victim", help="IP address of the host that receives the attack."),
    at: list[str] = typer.Option(..., "--at", help="Insertion time, ISO 8601 (UTC unless it names a "
                                 "zone), e.g. 2024-01-01T10:00 (repeatable)."),
    ramp: float = typer.Option(3.0, "--ramp", help="Minutes of gradual onset: minute m of the ramp "
                               "keeps (m+1)/RAMP of the attack's flows. 0 = none."),
    duration: float = typer.Option(10.0, "--duration", help="Minutes of attack per insertion (the "
                                   "capture is looped or cut)."),
    scale: float = typer.Option(1.0, "--scale", help="Multiply the attack's packets and bytes."),
    attacker_victim: Optional[str] = typer.Option(None, "--attacker-victim", help="The victim's IP in the "
                                                  "capture. [the destination receiving the most packets]"),
    attack_sampling: int = typer.Option(1, "--attack-sampling", min=1, help="Sampling rate of capture "
                                        "records that carry none (1 = unsampled, as a packet capture)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the ramp's thinning."),
    out: Path = typer.Option(Path("spliced.parquet"), "--out", "-o", help="Canonical flow Parquet to write."),
    truth: Optional[Path] = typer.Option(None, "--truth", help="truth.csv to write. [OUT with .truth.csv]"),
) -> None:
    """Replay a real attack capture onto a host's traffic at chosen times; write flows and truth.csv.

    Example: netflowgen splice --host-flows host.parquet --attack amp.UDP.isakmp.pcap --victim 192.0.2.7
    --at 2024-01-01T10:00 --at 2024-01-01T14:30 --duration 10 --ramp 3 --out spliced.parquet --truth truth.csv
    """
    from netflowgen.sources.splice import parse_time, splice_files

    truth_path = truth or out.with_name(out.name.removesuffix(".parquet") + ".truth.csv")
    rejects = RejectCounter(max_samples=3)
    try:
        times = [parse_time(t) for t in at]
        res = splice_files(host_flows, attack, victim, times, out, truth_path, attack_format=attack_format,
                           attack_sampling=attack_sampling, duration_min=duration, ramp_min=ramp,
                           scale=scale, attacker_victim=attacker_victim, seed=seed, rejects=rejects)
    except InputError as e:
        typer.secho(f"error: {' '.join(str(e).split())}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from e
    for w in res.warnings:
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"attack victim in the capture: {res.attacker_victim}")
    for row in res.truth:
        typer.echo(f"insertion {row['event_id']} at {row['onset']} .. {row['end']}: {row['flows']:,} flows inserted")
    typer.echo(f"wrote {res.flows.num_rows:,} flow records to {out} and {len(res.truth)} truth rows to {truth_path}")
    if rejects.rejected:
        typer.echo(rejects.report())


def register(app: typer.Typer) -> None:
    """Add the `splice` command to the netflowgen CLI."""
    app.command("splice")(splice)
