"""Catalog, capability filtering, roofline arithmetic and calibration fit (no models)."""

from __future__ import annotations

import pytest

from compress.hardware.calibrate import fit_roofline
from compress.hardware.catalog import load_catalog
from compress.hardware.formats import ArtifactInfo, classify
from compress.hardware.roofline import Efficiency, capability, project
from compress.hardware.work import OpGroup, Work, count_work


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


def info(fmt, framework="pytorch", kind="pytorch", dtype="fp32"):
    return ArtifactInfo(None, kind, framework, fmt, dtype)


def test_catalog_has_the_targets(cat):
    for name in ("T4", "L4", "A10", "A10G", "A100-40GB", "A100-80GB", "L40S", "H100-SXM",
                 "H100-PCIe", "H200", "c7i.large", "c7i.xlarge", "c7i.4xlarge"):
        t = cat[name]
        assert t.memory_gb > 0 and t.bandwidth_gbps > 0 and t.spec_source
        # a target is priced only from a price book, with its provenance (test_prices.py)
        assert (t.price_per_hour is None) == (t.price is None) == (t.price_source is None)
    local = cat["local-cpu"]
    assert local.memory_gb > 0 and local.bandwidth_gbps > 0
    # this machine is never priced by default: it is a target only when the user prices it
    assert local.price_per_hour is None and local.price_source is None
    assert cat["T4"].peak("bf16") is None and cat["A100-40GB"].peak("fp8") is None
    assert cat["H100-SXM"].peak("fp8") == 1979e12
    # the A10G shares the A10's memory but not its tensor-core rate
    assert cat["A10G"].peak("fp16") < cat["A10"].peak("fp16")


def test_capability_filtering(cat):
    assert "8.9" in capability(info("fp8"), cat["A100-80GB"], "pytorch-cuda", cat)
    assert capability(info("fp8"), cat["H100-SXM"], "pytorch-cuda", cat) is None
    why = capability(info("bf16", dtype="bf16"), cat["T4"], "pytorch-cuda", cat)
    assert why and "8" in why and "7.5" in why
    assert capability(info("fp16", dtype="fp16"), cat["T4"], "pytorch-cuda", cat) is None
    dyn = info("int8-dynamic-ort", "onnxruntime", "onnx-quantized")
    assert "no INT8 kernels" in capability(dyn, cat["A100-80GB"], "ort-cuda", cat)
    assert capability(dyn, cat["A100-80GB"], "ort-tensorrt", cat) is not None
    assert capability(dyn, cat["c7i.xlarge"], "ort-cpu", cat) is None
    qdq = info("int8-static-qdq", "onnxruntime", "onnx-quantized")
    assert capability(qdq, cat["T4"], "ort-tensorrt", cat) is None
    assert "no INT8 kernels" in capability(qdq, cat["T4"], "ort-cuda", cat)
    assert capability(info("fp32"), cat["T4"], "pytorch-cuda", cat) is None
    assert "slower" in capability(info("int8-bnb"), cat["L4"], "pytorch-cuda", cat)


def test_classify_formats_from_backend_and_ops():
    assert classify("onnx-quantized", "ort-dynamic-int8", {}, set(), "fp32")[0] == \
        "int8-dynamic-ort"
    assert classify("onnx-quantized", None, {}, {"QuantizeLinear", "DequantizeLinear"},
                    "fp32")[0] == "int8-static-qdq"
    assert classify("onnx-quantized", "ort-int4-weight", {}, set(), "fp32")[0] == \
        "int4-weight-only"
    assert classify("pytorch-quantized", "bnb-nf4", {}, set(), "fp32")[0] == "int4-bnb"
    assert classify("pytorch-quantized", "bnb-int8", {}, set(), "fp32")[0] == "int8-bnb"
    assert classify("pytorch", "bf16", {}, set(), "bf16")[0] == "bf16"
    assert classify("pytorch-quantized", "mystery", {}, set(), "fp32")[0] is None


def test_roofline_hand_computed(cat):
    t = cat["A100-80GB"]  # 312 TF fp16, 2039 GB/s
    eff = Efficiency({"fp16": 0.5}, 0.5, 10e-6, 100e-6, "test")
    w = Work("forward", 1, 1, 1, groups=[
        OpGroup("a", "gemm", "fp16", flops=312e12 * 0.5 * 1e-3, weight_bytes=0, kernels=2),
        OpGroup("b", "norm", "fp16", flops=0, act_bytes=2039e9 * 0.5 * 2e-3, kernels=1)])
    p = project(w, t, "pytorch-cuda", eff)
    # a: 1 ms compute + 2 x 10 us; b: 2 ms memory + 10 us; + 100 us host
    assert p.time_s == pytest.approx(1e-3 + 20e-6 + 2e-3 + 10e-6 + 100e-6)
    assert [r["bound"] for r in p.rows] == ["compute", "memory"]
    assert project(w, t, "ort-tensorrt", eff, kernel_scale=0.5).time_s == \
        pytest.approx(p.time_s - 15e-6)


def test_count_work_bert_shapes(cat):
    i = ArtifactInfo(None, "pytorch", "pytorch", "fp32", "fp32", config={
        "model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 256, "vocab_size": 100})
    w = count_work(i, cat.formats, batch_size=2, seq_len=8)
    tokens = 16
    gemm = 2 * tokens * 2 * (64 * 192 + 64 * 64 + 64 * 256 * 2)
    attn = 2 * 2 * 2 * 2 * 4 * 8 * 8 * 16
    assert w.total_flops == pytest.approx(gemm + attn)
    # int8 weights read a quarter of the fp32 bytes
    q = count_work(ArtifactInfo(None, "onnx-quantized", "onnxruntime", "int8-dynamic-ort",
                                "fp32", config=i.config), cat.formats, 2, 8)
    wb = sum(g.weight_bytes for g in w.groups if g.kind == "gemm")
    assert sum(g.weight_bytes for g in q.groups if g.kind == "gemm") == pytest.approx(wb / 4)
    assert q.flops["int8"] == pytest.approx(gemm)


def test_pruned_layer_shapes_from_weights(cat):
    cfg = {"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2,
           "num_attention_heads": 4, "intermediate_size": 256, "vocab_size": 100}
    shapes = {"encoder.layer.1.intermediate.dense.weight": [128, 64],
              "encoder.layer.1.attention.self.query.weight": [32, 64]}
    i = ArtifactInfo(None, "pytorch-pruned", "pytorch", "fp32", "fp32", config=cfg,
                     tensor_shapes=shapes)
    full = count_work(ArtifactInfo(None, "pytorch", "pytorch", "fp32", "fp32", config=cfg),
                      cat.formats, 1, 8)
    pruned = count_work(i, cat.formats, 1, 8)
    assert pruned.total_flops < full.total_flops


def test_decode_reads_all_weights_and_kv(cat):
    cfg = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
           "vocab_size": 1000, "architectures": ["LlamaForCausalLM"]}
    i = ArtifactInfo(None, "pytorch", "pytorch", "fp32", "fp32", config=cfg)
    d1 = count_work(i, cat.formats, 1, 16, "decode", context=16)
    d2 = count_work(i, cat.formats, 1, 16, "decode", context=1016)
    weights = 4 * (2 * (64 * (64 + 2 * 32) + 64 * 64 + 3 * 64 * 128) + 1000 * 64)
    assert sum(g.weight_bytes for g in d1.groups if g.kind in ("gemm", "head")) == \
        pytest.approx(weights)
    # the KV cache read grows with the context: layers x (K, V) x kv heads x head dim x 4 B
    assert d2.total_bytes - d1.total_bytes >= 2 * 2 * 2 * 16 * 1000 * 4


def test_fit_roofline_recovers_known_factors():
    peak, bw = 100e9, 10e9
    rows = []
    for f, b in ((1e6, 1e3), (1e8, 1e4), (1e9, 1e5), (1e3, 1e8), (1e3, 1e7)):
        t = max(f / (peak * 0.5), b / (bw * 0.8)) + 5e-6
        rows.append({"flops": f, "bytes": b, "seconds": t})
    e, m, o = fit_roofline(rows, peak, bw)
    assert e == pytest.approx(0.5, rel=0.05) and m == pytest.approx(0.8, rel=0.05)
    assert o == pytest.approx(5e-6, rel=0.2)


@pytest.mark.parametrize("text, names", [
    ("defaults: {kernel_overhead_us: {gpu: 5.0, tpu: 1.0}}\n", "tpu"),
    ("targets:\n  - {name: T4, peak_tflops: {fp32: 8.1, fp61: 1.0}}\n", "fp61"),
    ("targets:\n  - {name: c7i.large, flops_per_cycle: {fp32: 64, int7: 9}}\n", "int7"),
    ("runtimes:\n  ort-cpu: {device: cpu, framework: onnxruntime,\n"
     "    fast: {fp32: 0.0, int8-dynamic-ortt: 0.0}}\n", "int8-dynamic-ortt"),
    ("runtimes:\n  ort-cuda: {device: gpu, framework: onnxruntime, fast: {fp32: 0.0},\n"
     "    batch_max: {int4-weight-onyl: 1}}\n", "int4-weight-onyl"),
])
def test_catalog_maps_refuse_unknown_keys(tmp_path, text, names):
    """A misspelt precision, device or format key in a catalog map is an error naming the
    file and the key: before, it was accepted and the fact it stated silently ignored
    (a `fast:` entry for a format that does not exist states no capability at all)."""
    from compress.errors import InputError

    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=names) as err:
        load_catalog([path])
    assert str(path) in str(err.value)


def test_user_catalog_and_prices_merge(tmp_path):
    extra = tmp_path / "mine.yaml"
    extra.write_text("targets:\n  - {name: T4, memory_gb: 15}\n"
                     "  - {name: MyGPU, kind: gpu, hw_class: gpu-cuda, memory_gb: 8,\n"
                     "     bandwidth_gbps: 100, peak_tflops: {fp32: 1}, "
                     "compute_capability: 8.0, price_per_hour: 0.1}\n")
    prices = tmp_path / "prices.yaml"
    prices.write_text("prices:\n  T4: {price_per_hour: 0.2, source: spot}\n")
    c = load_catalog([extra], prices)
    assert c["T4"].memory_gb == 15 and c["T4"].bandwidth_gbps == 320
    assert c["T4"].price_per_hour == 0.2 and c["T4"].price_source == "spot"
    assert "MyGPU" in c.names() and str(prices) in c.provenance()["price_files"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("prices:\n  Nope: {price_per_hour: 1}\n")
    from compress.errors import InputError
    with pytest.raises(InputError, match="unknown target"):
        load_catalog(prices=bad)


def test_size_curve_and_vector_rates_charge_small_ops_what_they_measured(cat):
    from compress.hardware.calibrate import interp_log, size_curve, vector_table

    peak = 100e9
    # measured: small GEMMs reach 10% of peak, large ones 80%
    rows = [{"flops": f, "seconds": f / (peak * e)} for f, e in ((1e5, 0.1), (1e9, 0.8))]
    curve = size_curve(rows, peak)
    assert interp_log(curve, 1e5) == pytest.approx(0.1, rel=0.15)
    assert interp_log(curve, 1e9) == pytest.approx(0.8, rel=0.15)
    assert interp_log(curve, 1e3) == pytest.approx(interp_log(curve, 1e5))  # clamped
    rates = vector_table([{"op": "gelu", "elements": 1e4, "seconds": 1e-5},
                          {"op": "gelu", "elements": 1e6, "seconds": 1e-3}])
    assert rates["gelu"] == [[1e4, pytest.approx(1e9)], [1e6, pytest.approx(1e9)]]
    t = cat["A100-80GB"]
    eff = Efficiency({"fp16": 0.5}, 0.5, 10e-6, 0.0, "test",
                     curves={"pytorch-cuda:fp16": [[1e5, 0.1], [1e9, 0.8]]},
                     vector_rates={"pytorch-cuda": rates})
    w = Work("forward", 1, 1, 1, groups=[
        OpGroup("g", "gemm", "fp16", flops=2e5, kernels=4, calls=2),
        OpGroup("a", "act", "fp16", act_bytes=1.0, kernels=5, calls=1, elements=1e5,
                op="gelu"),
        OpGroup("n", "norm", "fp16", act_bytes=1.0, kernels=1, calls=1, elements=1e5,
                op="layer_norm")])
    p = project(w, t, "pytorch-cuda", eff)
    g, a, n = p.rows
    # two calls of 1e5 flops at the small-GEMM efficiency; overhead inside the measurement
    assert g["compute_ms"] == pytest.approx(2e5 / (312e12 * 0.1) * 1e3)
    assert g["overhead_ms"] == 0 and g["efficiency"] == "size curve"
    assert a["compute_ms"] == pytest.approx(1e5 / 1e9 * 1e3) and a["efficiency"] == "vector rate"
    # no measured rate for layer_norm: memory roofline plus kernel overhead, as before
    assert n["efficiency"] == "scalar" and n["overhead_ms"] == pytest.approx(10e-3)


def test_quantize_backends_map_to_their_formats():
    from compress.hardware.formats import classify

    cases = {"torchao-int8-weight": "int8-weight-only",
             "torchao-int8-dynamic": "int8-dynamic-torchao",
             "torch-dynamic-int8": "int8-dynamic-torch", "bnb-nf4": "int4-bnb",
             "bnb-int8": "int8-bnb", "fp16": "fp16"}
    for backend, fmt in cases.items():
        assert classify("pytorch-quantized", backend, {"backend": backend}, set(),
                        "float32")[0] == fmt, backend
    assert classify("onnx-quantized", "ort-static-int8", {}, set(), "float32")[0] == \
        "int8-static-qdq"


def test_pruned_onnx_shapes_come_from_the_graph(tiny_bert, tmp_path, cat):
    """An ONNX export names its weights `onnx::MatMul_N` and keeps the unpruned config.json:
    the kept FFN width must be read from the MatMul nodes that consume the weights."""
    import torch
    from transformers import BertModel
    from transformers.pytorch_utils import prune_linear_layer

    from compress.hardware.formats import inspect_artifact
    from compress.stages.export import _export_optimum

    def export(model, out):
        _export_optimum(model.eval(), out, "feature-extraction", None, False)
        return count_work(inspect_artifact(out, "onnx"), cat.formats, 1, 8)

    full = export(BertModel.from_pretrained(tiny_bert), tmp_path / "full")
    model = BertModel.from_pretrained(tiny_bert)
    keep = torch.arange(0, 64, 2)  # half of the 64 FFN neurons in every layer
    for layer in model.encoder.layer:
        layer.intermediate.dense = prune_linear_layer(layer.intermediate.dense, keep, dim=0)
        layer.output.dense = prune_linear_layer(layer.output.dense, keep, dim=1)
    pruned = export(model, tmp_path / "pruned")
    assert inspect_artifact(tmp_path / "pruned", "onnx").config["intermediate_size"] == 64

    def gemm(w):
        return sum(g.flops for g in w.groups if g.kind == "gemm")

    tokens, H = 8, 32
    per_layer = {f: 2 * tokens * (4 * H * H + 2 * H * f) for f in (64, 32)}
    assert gemm(full) == pytest.approx(2 * per_layer[64])
    assert gemm(pruned) == pytest.approx(2 * per_layer[32])
    assert gemm(pruned) / gemm(full) == pytest.approx(per_layer[32] / per_layer[64])


def test_readme_projection_error_figures_come_from_the_results_file():
    """The README's CPU projection-error figures are the ones its cited results file holds."""
    import re
    import statistics
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = " ".join(root.joinpath("README.md").read_text().split())
    m = re.search(r"median \|error\| ([\d.]+)% over (\d+) figures \(`(benchmarks/results/"
                  r"projection_error-[\w-]+\.txt)`: encoders ([\d.]+)% over (\d+) forward rows, "
                  r"decode per token ([\d.]+)% over (\d+)", readme)
    assert m, "README no longer quotes the projection_error results file"
    text = root.joinpath(m.group(3)).read_text()
    summary = re.search(r"figures: (\d+); median \|error\| ([\d.]+)%", text)
    assert (summary.group(2), summary.group(1)) == (m.group(1), m.group(2))
    errors: dict[str, list[float]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 6 and re.fullmatch(r"[+-][\d.]+%", parts[-1]):
            errors.setdefault(parts[-4], []).append(abs(float(parts[-1][:-1])))
    for phase, med, n in (("forward", m.group(4), m.group(5)),
                          ("decode/token", m.group(6), m.group(7))):
        assert len(errors[phase]) == int(n)
        # the rows print one decimal: their median may differ from the file's by rounding
        assert abs(statistics.median(errors[phase]) - float(med)) <= 0.051
    for label, med in (("encoders (forward)", m.group(4)), ("decode per token", m.group(6))):
        line = re.search(re.escape(label) + r": \d+ figures; median \|error\| ([\d.]+)%", text)
        assert line is None or line.group(1) == med


def test_ort_cuda_runs_fp32_matmuls_as_tf32_where_the_gpu_has_it(cat):
    eff = Efficiency({}, 0.5, 0.0, 0.0, "test")
    w = Work("forward", 1, 1, 1, groups=[OpGroup("a", "gemm", "fp32", flops=1e12, kernels=1)])
    mm = cat.runtimes["ort-cuda"].matmul_precision
    assert mm == {"fp32": "tf32"} and not cat.runtimes["pytorch-cuda"].matmul_precision
    a100 = cat["A100-80GB"]
    ort = project(w, a100, "ort-cuda", eff, matmul_precision=mm)
    torch_ = project(w, a100, "pytorch-cuda", eff)
    assert ort.rows[0]["precision"] == "tf32" and torch_.rows[0]["precision"] == "fp32"
    assert ort.time_s == pytest.approx(torch_.time_s * a100.peak("fp32") / a100.peak("tf32"))
    # a T4 has no TF32: fp32 stays on the CUDA cores
    assert project(w, cat["T4"], "ort-cuda", eff, matmul_precision=mm).rows[0]["precision"] \
        == "fp32"


def test_four_bit_kernels_are_batch_one_and_bnb_4bit_runs_on_a_t4(cat):
    from compress.decide.cost import cost_table
    from compress.hardware.projection import CandidateModel, Setting

    cfg = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
           "vocab_size": 1000, "architectures": ["LlamaForCausalLM"]}
    nf4 = ArtifactInfo(None, "pytorch-quantized", "pytorch", "int4-bnb", "fp16", config=cfg)
    assert capability(nf4, cat["T4"], "pytorch-cuda", cat) is None
    fp16 = ArtifactInfo(None, "pytorch", "pytorch", "fp16", "fp16", config=cfg)
    models = {n: CandidateModel(n, None, i.kind, info=i) for n, i in (("nf4", nf4),
                                                                      ("fp16", fp16))}
    rows = cost_table([{"candidate": n, "kind": m.info.kind} for n, m in models.items()], cat,
                      Setting(16, 0), targets=["T4"], models=models).set_index("candidate")
    assert rows.loc["nf4", "status"] == "ok" and rows.loc["nf4", "batch_size"] == 1
    assert rows.loc["fp16", "batch_size"] > 1


def test_workers_are_physical_cores_over_threads(cat):
    # c7i.large: 2 vCPUs are one core (one hyper-threaded pair): one worker, not two
    assert cat["c7i.large"].vcpus == 2 and cat["c7i.large"].worker_count(1) == 1
    assert cat["c7i.xlarge"].worker_count(1) == 2 and cat["c7i.4xlarge"].worker_count(2) == 4
    assert cat["c7i.4xlarge"].worker_count(3) == 2 and cat["c7i.large"].worker_count(4) == 1
    assert cat["T4"].worker_count(8) == 1


def test_physical_cores_from_cpuinfo():
    from compress.hardware.catalog import physical_cores

    block = "processor\t: {p}\nphysical id\t: 0\ncore id\t\t: {c}\n"
    smt = "\n".join(block.format(p=p, c=c) for p, c in ((0, 0), (1, 0), (2, 1), (3, 1)))
    assert physical_cores([0, 1, 2, 3], smt) == 2     # 4 logical CPUs, 2 cores
    assert physical_cores([0, 1], smt) == 1           # both siblings of core 0
    assert physical_cores([0, 2], smt) == 2
    assert physical_cores([0, 1], "garbage") == 2     # unknown layout: the CPU count


def test_torchao_weight_only_needs_torch_compile(cat):
    """A catalog fact with its source: torchao weight-only int8/int4 are fast on a GPU only
    under torch.compile, which compress does not apply, so they are not projected fast."""
    from compress.capabilities import backend_capabilities, runs_fast_on

    rt = cat.runtimes["pytorch-cuda"]
    assert rt.requires == {"int8-weight-only": "torch.compile",
                           "int4-weight-only": "torch.compile"}
    assert "torch.compile" in rt.requires_source and "github.com/pytorch/ao" in rt.requires_source
    why = capability(info("int8-weight-only"), cat["A100-80GB"], "pytorch-cuda", cat)
    assert why and "torch.compile" in why
    # the same format through ONNX Runtime (MatMulNBits) has no such requirement
    assert capability(info("int4-weight-only", "onnxruntime", "onnx-quantized"), cat["A10G"],
                      "ort-cuda", cat) is None
    assert not runs_fast_on("torchao-int8-weight", "cuda", 8.0)
    assert runs_fast_on("torchao-int8-weight", "cuda", 8.0, compiled=True)
    caps = {c["name"]: c for c in backend_capabilities(cat)}
    torch_paths = [f for f in caps["torchao-int4-weight"]["fast"]
                   if f["runtime"] == "pytorch-cuda"]
    assert [f["requires"] for f in torch_paths] == ["torch.compile"]
