"""The TOML settings layer every command uses: defaults <- file <- flags, --dump, saved beside outputs."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from netflowgen.config import ConfigError, load, save_beside, to_toml
from netflowgen.rejects import RejectCounter


@dataclass
class Inner:
    rate: float = 0.5
    names: list[str] = field(default_factory=lambda: ["a"])


@dataclass
class Outer:
    bins: int = 10
    engine: str = "polars"
    out: Path | None = None
    inner: Inner = field(default_factory=Inner)


def test_defaults_file_then_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('bins = 12\n[inner]\nrate = 2\n')
    cfg = load(Outer, f, overrides={"engine": "spark", "bins": None})
    assert cfg.bins == 12 and cfg.engine == "spark"
    assert cfg.inner.rate == 2.0 and isinstance(cfg.inner.rate, float)
    assert cfg.inner.names == ["a"]


def test_dump_round_trips(tmp_path: Path) -> None:
    cfg = Outer(bins=7, out=tmp_path / "x", inner=Inner(rate=1.5, names=["p", "q"]))
    text = to_toml(cfg)
    f = tmp_path / "d.toml"
    f.write_text(text)
    assert load(Outer, f) == cfg


def test_unknown_key_and_wrong_type_name_the_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("binz = 3\n")
    with pytest.raises(ConfigError, match=r"bad\.toml.*binz"):
        load(Outer, f)
    f.write_text('bins = "ten"\n')
    with pytest.raises(ConfigError, match=r"bad\.toml\.bins: expected int"):
        load(Outer, f)
    f.write_text("bins = [\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load(Outer, f)


def test_save_beside_file_and_directory(tmp_path: Path) -> None:
    out_file = tmp_path / "features.parquet"
    out_file.write_bytes(b"")
    p = save_beside(out_file, Outer(bins=3))
    assert p.name == "features.parquet.config.toml"
    assert tomllib.loads(p.read_text())["bins"] == 3
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    assert save_beside(out_dir, Outer()).name == "config.toml"


def test_reject_counter_counts_and_samples() -> None:
    r = RejectCounter(max_samples=2)
    r.accept(10)
    r.reject("negative packets", "a.csv:3 packets=-1")
    r.reject("negative packets", "a.csv:4 packets=-2")
    r.reject("negative packets", "a.csv:5 packets=-3")
    r.reject("bad ip", "a.csv:9 src_ip=1.2.3", n=2)
    assert r.rejected == 5 and r.accepted == 10
    assert r.samples["negative packets"] == ["a.csv:3 packets=-1", "a.csv:4 packets=-2"]
    other = RejectCounter()
    other.reject("bad ip", n=1)
    r.merge(other)
    assert r.as_dict()["by_reason"] == {"negative packets": 3, "bad ip": 3}
    assert "negative packets: 3" in r.report()


def test_section_if_present_selects_a_commands_table(tmp_path: Path) -> None:
    from netflowgen.config import section_if_present

    shared = tmp_path / "all.toml"
    shared.write_text("[features]\nbins = 4\n[collect]\nrotate = 60\n")
    plain = tmp_path / "plain.toml"
    plain.write_text("bins = 5\n")
    assert section_if_present(shared, "features") == "features"
    assert load(Outer, shared, section=section_if_present(shared, "features")).bins == 4
    assert section_if_present(plain, "features") is None
    assert load(Outer, plain, section=section_if_present(plain, "features")).bins == 5
    assert section_if_present(tmp_path / "absent.toml", "features") is None
    assert section_if_present(None, "features") is None


def test_settings_classes_validate_through_the_one_loader(tmp_path) -> None:
    """A typo in a detection setting is refused at load time, naming file and key."""
    import pytest

    from netflowgen.config import ConfigError, load
    from netflowgen.detect.stages import FinetuneRun
    bad = tmp_path / "ft.toml"
    bad.write_text('[finetune]\nvariant = "saf"\n')
    with pytest.raises(ConfigError, match=r"ft\.toml.*variant = 'saf'"):
        load(FinetuneRun, bad)
    bad.write_text('[metrics]\noverhead_bound = 1.5\n')
    with pytest.raises(ConfigError, match="overhead_bound"):
        load(FinetuneRun, bad)
    bad.write_text('method = "NetFlowGenn"\n')
    with pytest.raises(ConfigError, match="NetFlowGenn"):
        load(FinetuneRun, bad)
    bad.write_bytes(b'method = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load(FinetuneRun, bad)


def test_pretrain_settings_come_from_preset_file_and_flags_in_that_order(tmp_path) -> None:
    from netflowgen.config import load
    from netflowgen.train.pretrain import PRESETS, PretrainConfig
    f = tmp_path / "p.toml"
    f.write_text("[pretrain]\ncontext = 128\nlr = 0.002\n")
    cfg = load(PretrainConfig, f, {"lr": 0.005, "seed": None}, "pretrain", PRESETS["demo"])
    assert cfg.context == 128  # the file over the preset (demo: 256)
    assert cfg.lr == 0.005  # the flag over the file
    assert cfg.batch_size == PRESETS["demo"]["batch_size"]  # the preset over the defaults


def test_the_spark_engine_without_pyspark_is_one_clear_error(monkeypatch) -> None:
    import sys

    import pytest

    from netflowgen.features.settings import FeatureConfig
    from netflowgen.features.spark_engine import spark_session
    from netflowgen.rejects import InputError
    for name in [m for m in sys.modules if m == "pyspark" or m.startswith("pyspark.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pyspark", None)  # as if the [spark] extra were not installed
    with pytest.raises(InputError, match=r"netflowgen\[spark\]"):
        spark_session(FeatureConfig(engine="spark"))


def test_auto_precision_is_bf16_only_where_it_is_not_emulated(monkeypatch, tmp_path) -> None:
    from pathlib import Path

    import torch

    from netflowgen.model import device as dev
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for flags, native in (("fpu sse2 avx2 fma", False), ("fpu avx2 avx512f avx512_bf16", True),
                          ("fp asimd bf16 i8mm", True)):
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(dev, "Path", lambda p, _i=info, _real=Path: _i if p == "/proc/cpuinfo" else _real(p))
        dev.cpu_has_native_bf16.cache_clear()
        assert dev.cpu_has_native_bf16() is native
        assert dev.resolve_precision(cpu, "auto") == ("bf16" if native else "fp32")
        assert dev.resolve_precision(cuda, "auto") == "bf16"
        assert dev.resolve_precision(cpu, "bf16") == "bf16" and dev.resolve_precision(cpu, "fp32") == "fp32"
    dev.cpu_has_native_bf16.cache_clear()


def test_a_gpu_asked_for_where_there_is_none_is_one_clear_error(monkeypatch) -> None:
    import pytest
    import torch

    from netflowgen.model.device import resolve_device
    from netflowgen.rejects import InputError
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(InputError, match="expected auto, cpu, cuda"):
        resolve_device("tpu0")
