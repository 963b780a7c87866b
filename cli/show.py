"""`corral show MODEL` without a flag (and `/show info`): Ollama's showInfo, section by section."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from cli.format import go_g, go_value, human_number, metadata_value, table


def show_info(resp: Mapping[str, Any], verbose: bool = False) -> str:
    out: list[str] = []

    def section(header: str, rows: list[list[str]]) -> None:
        out.append(f"  {header}\n")
        out.append(table(rows))
        out.append("\n")

    details = resp.get("details") or {}
    info = resp.get("model_info") or None
    rows: list[list[str]] = []
    if resp.get("remote_host"):
        rows += [["", "Remote model", str(resp.get("remote_model", ""))],
                 ["", "Remote URL", str(resp["remote_host"])]]
    if info:
        arch = info.get("general.architecture")
        arch = arch if isinstance(arch, str) else ""
        if arch:
            rows.append(["", "architecture", arch])
        params = details.get("parameter_size") or ""
        if not params and _is_number(info.get("general.parameter_count")):
            params = human_number(info["general.parameter_count"])
        if params:
            rows.append(["", "parameters", params])
        for key, label in (("context_length", "context length"),
                           ("embedding_length", "embedding length")):
            value = info.get(f"{arch}.{key}")
            if _is_number(value):
                rows.append(["", label, _plain_number(value)])
    else:
        rows += [["", "architecture", str(details.get("family", ""))],
                 ["", "parameters", str(details.get("parameter_size", ""))]]
    rows.append(["", "quantization", str(details.get("quantization_level", ""))])
    if resp.get("requires"):
        rows.append(["", "requires", str(resp["requires"])])
    section("Model", rows)

    if resp.get("capabilities"):
        section("Capabilities", [["", str(c)] for c in resp["capabilities"]])

    projector = resp.get("projector_info")
    if projector:
        parch = projector.get("general.architecture")
        parch = parch if isinstance(parch, str) else ""
        prow: list[list[str]] = []
        if parch:
            prow.append(["", "architecture", parch])
        if _is_number(projector.get("general.parameter_count")):
            prow.append(["", "parameters", human_number(projector["general.parameter_count"])])
        for suffix, label in (("embedding_length", "embedding length"),
                              ("projection_dim", "dimensions")):
            for modality in ("vision", "audio"):
                value = projector.get(f"{parch}.{modality}.{suffix}")
                if _is_number(value):
                    prow.append(["", label, _plain_number(value)])
                    break
        section("Projector", prow)

    if resp.get("parameters"):
        section("Parameters", [[""] + line.split() for line in str(resp["parameters"]).splitlines()
                               if line])

    if info and verbose:
        section("Metadata", [["", key, metadata_value(info[key])] for key in sorted(info)])

    tensors = resp.get("tensors") or []
    if tensors and verbose:
        section("Tensors", [["", str(t.get("name", "")), str(t.get("type", "")),
                             go_value(t.get("shape", []))] for t in tensors])

    head: Callable[[str], list[list[str]]] = lambda text: _head(text, 2)  # noqa: E731
    if resp.get("system"):
        section("System", head(str(resp["system"])))
    if resp.get("license"):
        section("License", head(_license_text(resp["license"])))
    return "".join(out)


def _head(text: str, n: int) -> list[list[str]]:
    """The first `n` non-blank lines, and "..." when there are more."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    rows = [["", line] for line in lines[:n]]
    if len(lines) > n:
        rows.append(["", "..."])
    return rows


def _license_text(value: Any) -> str:
    return "\n".join(map(str, value)) if isinstance(value, list) else str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plain_number(value: float) -> str:
    """Go's strconv.FormatFloat(f, 'f', -1, 64): no exponent, shortest digits."""
    if float(value).is_integer():
        return str(int(value))
    text = go_g(value)
    if "e" not in text:
        return text
    from decimal import Decimal  # noqa: PLC0415

    return format(Decimal(repr(float(value))), "f")
