"""The hardware catalog: targets, their specs and capabilities; and the price books.

Specs are data (catalog.yaml beside this file), prices are data too (price books in
prices/, the default one loaded always), not code: they change faster than the
projection, and users bring their own market. `load_catalog(extra=[...], prices=...)`
merges user YAML files by target name (a partial entry updates the fields it names; a new
name adds a target), then applies the price books, the user's last, and records which
files, which book and which price for each target were used, so every report can say so.

Every price carries its provenance (`Price`): provider, instance, per instance or per GPU,
the date it was read and the page it was read on. One without a capture date or a URL is
`unverified`, and says so wherever it is shown. Nothing is fetched at run time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from compress.errors import InputError
from compress.hardware.pricebook import Price, apply_prices
from compress.yamlsource import describe_error, refuse_absurd_numbers

CATALOG_FILE = Path(__file__).with_name("catalog.yaml")
PRICE_DIR = Path(__file__).with_name("prices")
DEFAULT_PRICE_BOOKS = (PRICE_DIR / "on-demand-2026.yaml",)
# keys of the maps below are checked, so a misspelt one is an error and not a silent no-op
Precision = Literal["fp32", "tf32", "fp16", "bf16", "fp8", "int8", "int4"]
PRECISIONS = get_args(Precision)
Device = Literal["gpu", "cpu"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    _finite = model_validator(mode="before")(classmethod(
        lambda cls, data: refuse_absurd_numbers(data)))


class Defaults(_Strict):
    compute_efficiency: float = Field(0.7, gt=0, le=1)
    memory_efficiency: float = Field(0.9, gt=0, le=1)
    kernel_overhead_us: dict[Device, float] = {"gpu": 5.0, "cpu": 2.0}
    host_overhead_us: dict[Device, float] = {"gpu": 50.0, "cpu": 50.0}
    p95_over_p50: float = Field(1.1, ge=1)
    workspace_gb: dict[Device, float] = {"gpu": 0.5, "cpu": 0.2}


class Format(_Strict):
    compute: str = Field(description="GEMM precision, or 'model' for the model's float dtype")
    weight_bits: float = Field(gt=0)
    act_quant: bool = Field(False, description="activations quantized at run time (extra pass)")
    note: str | None = None


class Runtime(_Strict):
    device: Literal["gpu", "cpu"]
    framework: Literal["pytorch", "onnxruntime", "openvino"]
    fast: dict[str, float] = Field(description="format -> minimum compute capability (GPU)")
    fast_source: str | None = None
    slow: dict[str, str] = Field({}, description="format -> why it has no fast path here")
    kernel_scale: float = Field(1.0, gt=0, description="kernels launched relative to the "
                                                       "unfused graph (TensorRT fuses layers)")
    matmul_precision: dict[str, str] = Field(
        {}, description="precision -> the precision this runtime's matmuls run at by "
                        "default, where the target has it (ORT CUDA: fp32 -> tf32)")
    matmul_precision_source: str | None = None
    batch_max: dict[str, int] = Field(
        {}, description="format -> the largest batch its fast kernel serves (4-bit GEMV "
                        "kernels: 1; above it they dequantize and run a GEMM)")
    batch_max_source: str | None = None
    requires: dict[str, str] = Field(
        {}, description="format -> what its fast path needs that compress does not do "
                        "(torchao weight-only: torch.compile)")
    requires_source: str | None = None


class Target(_Strict):
    name: str
    kind: Literal["gpu", "cpu"]
    hw_class: str = Field(description="calibration class; 'detect' for the machine at hand")
    memory_gb: float = Field(ge=0)
    bandwidth_gbps: float = Field(ge=0)
    peak_tflops: dict[Precision, float] = Field({}, description="dense peak per precision (GPU)")
    compute_capability: float | None = None
    ray_accelerator: str | None = Field(None, description="GPU: Ray's accelerator type of "
                                        "this model (the accelerator_type:<name> resource)")
    cores: int | None = Field(None, ge=0, description="CPU: physical cores")
    vcpus: int | None = None
    clock_ghz: float | None = None
    flops_per_cycle: dict[Precision, float] = Field({}, description="CPU: per core, per precision")
    price_per_hour: float | None = Field(None, ge=0)
    price_source: str | None = Field(None, description="one line: where the price comes "
                                                       "from (set by the loader)")
    price: Price | None = Field(None, description="the price with its provenance")
    spec_source: str | None = None
    notes: str | None = None

    @property
    def workers(self) -> int:
        """Single-thread workers on one instance (CPU: one per physical core)."""
        return self.worker_count(1)

    def worker_count(self, threads: int = 1) -> int:
        """Independent workers on one instance when each uses `threads` intra-op threads:
        CPU: physical cores // threads (vCPUs are hyper-threads, not cores); GPU: one."""
        if self.kind != "cpu":
            return 1
        return max(1, (self.cores or 1) // max(1, threads))

    def peak(self, precision: str) -> float | None:
        """Peak FLOP/s (OP/s) of ONE worker at this precision; None where it has none."""
        if self.kind == "gpu":
            v = self.peak_tflops.get(precision)
            return v * 1e12 if v else None
        v = self.flops_per_cycle.get(precision)
        return v * (self.clock_ghz or 0) * 1e9 if v and self.clock_ghz else None

    def bandwidth(self) -> float:
        """Bytes/s available to one worker."""
        return self.bandwidth_gbps * 1e9 / self.workers




class CatalogFile(_Strict):
    version: str | None = None
    book: str | None = Field(None, description="a price book's name")
    currency: Literal["USD"] | None = None
    defaults: Defaults | None = None
    formats: dict[str, Format] = {}
    runtimes: dict[str, Runtime] = {}
    targets: list[dict] = []
    prices: dict[str, Price] = {}


class Catalog:
    """The merged catalog and where each part came from."""

    def __init__(self, defaults: Defaults, formats: dict[str, Format],
                 runtimes: dict[str, Runtime], targets: dict[str, Target],
                 sources: list[str], price_files: list[str],
                 price_books: list[str] | None = None):
        self.defaults, self.formats, self.runtimes = defaults, formats, runtimes
        self.targets, self.sources, self.price_files = targets, sources, price_files
        self.price_books = price_books or []

    def __getitem__(self, name: str) -> Target:
        try:
            return self.targets[name]
        except KeyError:
            raise InputError(f"unknown target {name!r}; the catalog has: "
                             f"{', '.join(self.targets)}") from None

    def names(self) -> list[str]:
        return list(self.targets)

    def prices(self) -> dict[str, dict]:
        """What each target costs, and where that price comes from: provider, instance,
        per instance or per GPU, capture date, URL, sourced or unverified, the book."""
        return {t.name: t.price.provenance() if t.price else
                {"price_per_hour": None, "source": None, "status": None, "book": None}
                for t in self.targets.values()}

    def provenance(self) -> dict:
        """For reports: which files, price books and prices produced the figures."""
        return {"catalog_files": self.sources, "price_files": self.price_files,
                "price_books": self.price_books, "prices": self.prices()}


FORMAT_KEYED = ("fast", "slow", "batch_max", "requires", "matmul_precision")


def _check_format_keys(path, runtimes: dict[str, Runtime], formats: dict[str, Format]) -> None:
    """A runtime's per-format facts must name formats the catalog has: a misspelt one
    would otherwise be ignored, and the capability it states silently lost."""
    for name, rt in runtimes.items():
        for fld in FORMAT_KEYED:
            for key in getattr(rt, fld) or {}:
                if key not in formats:
                    raise InputError(f"{path}: runtimes.{name}.{fld}: unknown format {key!r}; "
                                     f"expected one of: {', '.join(sorted(formats))}")


def _read(path: Path) -> CatalogFile:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (offset {exc.start}); save the catalog or "
                         "prices file as UTF-8") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read catalog file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({_one_line(exc)})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a catalog or prices file must be a YAML mapping (with "
                         f"targets:, prices:, ...), got {type(data).__name__}")
    try:
        return CatalogFile.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"{path}: {_errors(exc)}") from None


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _errors(exc: ValidationError) -> str:
    """Pydantic's errors in one paragraph: field path, value and what was expected."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(k) for k in err["loc"]) or "(top level)"
        parts.append(f"{loc}: {describe_error(err, 60)}")
    return "; ".join(parts)


def _merge_target(old: dict | None, new: dict, where: str) -> Target:
    merged = {**(old or {}), **new}
    try:
        return Target.model_validate(merged)
    except ValidationError as exc:
        raise InputError(f"{where}: target {new.get('name')!r}: {_errors(exc)}") from None


def physical_cores(cpus: list[int], cpuinfo: str | None = None) -> int:
    """Physical cores behind these logical CPUs: distinct (physical id, core id) pairs in
    /proc/cpuinfo (hyper-threads share a core). Falls back to the CPU count."""
    try:
        info = cpuinfo if cpuinfo is not None else Path("/proc/cpuinfo").read_text()
    except OSError:
        return len(cpus)
    core_of = {}
    for block in info.strip().split("\n\n"):
        fields = dict((k.strip(), v.strip()) for k, _, v in
                      (line.partition(":") for line in block.splitlines()) if k.strip())
        if "processor" in fields and "core id" in fields:
            core_of[int(fields["processor"])] = (fields.get("physical id", "0"),
                                                 fields["core id"])
    if not core_of or any(c not in core_of for c in cpus):
        return len(cpus)
    return len({core_of[c] for c in cpus})


def detect_local(base: Target) -> Target:
    """Fill `local-cpu` from this machine: cores available, clock, ISA, memory."""
    flags, clock, model = "", 0.0, "cpu"
    try:
        info = Path("/proc/cpuinfo").read_text()
        flags = (re.search(r"^flags\s*:\s*(.*)$", info, re.M) or [None, ""])[1]
        m = re.search(r"^cpu MHz\s*:\s*([\d.]+)", info, re.M)
        clock = float(m.group(1)) / 1000 if m else 0.0
        m = re.search(r"^model name\s*:\s*(.*)$", info, re.M)
        model = m.group(1).strip() if m else model
    except OSError:
        pass
    f = set(flags.split())
    fpc = {"fp32": 64.0 if "avx512f" in f else 32.0 if "fma" in f else 8.0}
    # ONNX Runtime's MLAS runs INT8 GEMMs on AMX tiles where the CPU has them
    fpc["int8"] = (2048.0 if "amx_int8" in f else 256.0 if "avx512_vnni" in f
                   else 128.0 if "avx2" in f else 32.0)
    if "amx_bf16" in f:
        fpc["bf16"] = 1024.0
    elif "avx512_bf16" in f:  # VDPBF16PS: two bf16 pairs per fp32 lane (OpenVINO uses it)
        fpc["bf16"] = 128.0
    cpus = (sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else list(range(os.cpu_count() or 1)))
    cores = physical_cores(cpus)
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError):
        mem = 0.0
    klass = "cpu-x86-avx512" if "avx512f" in f else "cpu-x86-avx2" if "avx2" in f else "cpu"
    fields = base.model_dump()
    # nominal 15 GB/s per core: the same nominal as the catalog's x86 instances, so that a
    # calibrated memory efficiency carries over between them
    fields.update(
        hw_class=base.hw_class if base.hw_class != "detect" else klass,
        cores=base.cores or cores, vcpus=base.vcpus or len(cpus),
        clock_ghz=base.clock_ghz or clock or 2.0,
        flops_per_cycle=base.flops_per_cycle or fpc,
        memory_gb=base.memory_gb or round(mem, 1),
        bandwidth_gbps=base.bandwidth_gbps or 15.0 * (base.cores or cores),
        spec_source=f"detected: {model}, {cores} physical core(s) in "
                    f"{len(cpus)} CPU(s) available, "
                    f"{clock or 2.0:.2f} GHz, flags {'avx512' if 'avx512f' in f else 'avx2'}"
                    f"{'+vnni' if 'avx512_vnni' in f else ''}{'+amx' if 'amx_bf16' in f else ''}")
    return Target.model_validate(fields)


def load_catalog(extra: list[str | Path] | None = None,
                 prices: str | Path | list[str | Path] | None = None) -> Catalog:
    """The shipped catalog priced by the default price book(s); then each `extra` catalog
    file merged by target name (with any prices it carries); then each `prices` file (a
    price book: `prices: {TARGET: {price_per_hour, provider, instance, per, captured, url,
    ...}}`), a later one winning target by target."""
    files = [CATALOG_FILE, *[Path(p) for p in extra or []]]
    defaults, formats, runtimes = Defaults(), {}, {}
    raw: dict[str, dict] = {}
    books: list[str] = []
    for i, path in enumerate(files):
        cf = _read(path)
        if cf.defaults is not None:
            defaults = cf.defaults
        formats.update(cf.formats)
        _check_format_keys(path, cf.runtimes, formats)
        runtimes.update(cf.runtimes)
        for t in cf.targets:
            if not isinstance(t.get("name"), str):
                raise InputError(f"{path}: targets: every target needs a name (a string)")
            raw[t["name"]] = _merge_target(raw.get(t["name"]), t, str(path)).model_dump(
                exclude_unset=False)
            if "price_per_hour" in t and "price" not in t:  # a price set on the target
                raw[t["name"]]["price"] = None if t["price_per_hour"] is None else \
                    Price(price_per_hour=t["price_per_hour"], source=t.get("price_source"),
                          book=Path(path).name).model_dump()
        apply_prices(raw, cf.prices, Path(path), cf.book)   # prices inside a catalog file
        if i == 0:  # the default price book(s) price the shipped catalog's targets
            for book in DEFAULT_PRICE_BOOKS:
                bf = _read(book)
                apply_prices(raw, bf.prices, book, bf.book)
                books.append(bf.book or book.name)
    user = [prices] if isinstance(prices, str | Path) else list(prices or [])
    price_files = []
    for pf in map(Path, user):
        cf = _read(pf)
        price_files.append(str(pf))
        for t in cf.targets:  # a prices file may also carry targets
            if not isinstance(t.get("name"), str):
                raise InputError(f"{pf}: targets: every target needs a name (a string)")
            raw[t["name"]] = _merge_target(raw.get(t["name"]), t, str(pf)).model_dump()
        apply_prices(raw, cf.prices, pf, cf.book)
        books.append(cf.book or pf.name)
    targets = {}
    for name, fields in raw.items():
        t = Target.model_validate(fields)
        if t.hw_class == "detect" or name == "local-cpu":
            t = detect_local(t)
        targets[name] = t
    return Catalog(defaults, formats, runtimes, targets, [str(f) for f in files], price_files,
                   books)
