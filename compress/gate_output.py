"""The gate verdict's outputs for CI: JUnit XML (one test case per check per candidate) and
a markdown summary. The JSON verdict is `GateResult.to_dict` (compress.gate)."""

from __future__ import annotations

import xml.etree.ElementTree as ET


def to_junit(result) -> str:
    """JUnit XML: one <testsuite> per candidate, one <testcase> per check."""
    c = result.counts()
    root = ET.Element("testsuites", name="compress gate", tests=str(len(result.checks)),
                      failures=str(c["fail"] + c["inconclusive"]), errors=str(c["error"]))
    for cand in dict.fromkeys(ch.candidate for ch in result.checks):
        mine = [ch for ch in result.checks if ch.candidate == cand]
        suite = ET.SubElement(
            root, "testsuite", name=f"gate.{cand}", tests=str(len(mine)),
            failures=str(sum(ch.status in ("fail", "inconclusive") for ch in mine)),
            errors=str(sum(ch.status == "error" for ch in mine)), skipped="0", time="0")
        for ch in mine:
            case = ET.SubElement(suite, "testcase", classname=f"gate.{cand}",
                                 name=ch.check, time="0")
            if ch.status in ("fail", "inconclusive"):
                ET.SubElement(case, "failure", message=ch.message,
                              type="threshold" if ch.status == "fail" else "inconclusive")
            elif ch.status == "error":
                ET.SubElement(case, "error", message=ch.message, type="missing")
            ET.SubElement(case, "system-out").text = ch.message
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(
        root, encoding="unicode") + "\n"


def to_markdown(result) -> str:
    c = result.counts()
    icon = {"pass": "✅", "fail": "❌", "error": "⚠️", "inconclusive": "❔"}
    lines = [f"## compress gate: {result.verdict.upper()} {icon[result.verdict]}", "",
             f"Run `{result.run}`; primary metric **{result.metric}**; target "
             f"**{result.target}**; {c['pass']} passed, {c['fail']} failed, "
             f"{c['inconclusive']} inconclusive, {c['error']} error(s); quality "
             + (f"judged at {result.confidence:.0%} confidence." if result.confidence
                is not None else "compared as point values."), ""]
    if result.recommended:
        r = result.recommended
        lines += [f"Recommended pair: **{r['candidate']}** on **{r['target']}** via "
                  f"{r.get('runtime')}.", ""]
    if result.baseline:
        lines += [f"Compared with the previous release: `{result.baseline}`.", ""]
    if result.recommended and result.recommended.get("decision"):
        lines += [f"Decision: {result.recommended['decision']}.", ""]
    lines += ["| candidate | check | value | threshold | figures | result |",
              "|---|---|---:|---:|---|---|"]
    for ch in result.checks:
        lines.append(f"| {ch.candidate} | {ch.check} | {_fmt(ch.value)} | "
                     f"{_fmt(ch.threshold)} | {ch.provenance or '-'} | "
                     f"{icon[ch.status]} {ch.status}: {ch.message.replace('|', '/')} |")
    p = result.provenance
    lines += ["", f"Prices: {', '.join(p.get('price_files') or []) or 'catalog defaults'}"
              f" ({result.target}: {p.get('target_price')}); calibration: "
              f"{p.get('calibration')}. Quality and local-cpu figures are measured; other "
              "targets' latency, memory and cost are projected (roofline).", ""]
    return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.6g}"


def write_outputs(result, *, junit=None, markdown=None, json_out=None) -> None:
    """Write the JUnit XML, markdown and JSON verdict where asked (InputError when a path
    cannot be written), and append the markdown to $GITHUB_STEP_SUMMARY when set."""
    import os

    from compress.errors import InputError

    md = result.to_markdown()
    for path, text in ((junit, result.to_junit()), (markdown, md),
                       (json_out, result.to_json())):
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
            except OSError as exc:
                raise InputError(f"{path}: cannot write it ({exc.strerror})") from None
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as fh:
            fh.write(md + "\n")
