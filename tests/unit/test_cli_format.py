"""The CLI's text, as Ollama prints it: sizes, "ago", Go durations, tables, timing block.

Expected values come from Ollama's own format/*_test.go where it has them.
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import pytest

from cli.client import CLIError, base_url
from cli.display import Display
from cli.format import (eta, go_duration, go_g, human_bytes, human_duration, human_number,
                        human_time, metadata_value, metrics_summary, parse_time, processor, table)
from cli.repl import ParameterError, parse_parameter
from cli.run import parse_truncate
from cli.session import parse_think
from cli.show import show_info

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("size, text", [
    (0, "0 B"), (1, "1 B"), (999, "999 B"),
    (1000, "1 KB"), (1500, "1.5 KB"), (999999, "999 KB"),
    (1000000, "1 MB"), (1500000, "1.5 MB"), (999999999, "999 MB"),
    (1000000000, "1 GB"), (1500000000, "1.5 GB"), (999999999999, "999 GB"),
    (1000000000000, "1 TB"), (1500000000000, "1.5 TB"), (1999999999999, "2.0 TB"),
    (1234, "1.2 KB"), (1234567, "1.2 MB"), (1234567890, "1.2 GB"),
    (253114088, "253 MB"), (292000000, "292 MB"),
])
def test_human_bytes_matches_ollama(size: int, text: str) -> None:
    assert human_bytes(size) == text


@pytest.mark.parametrize("count, text", [
    (0, "0"), (999, "999"), (1000, "1K"), (1001, "1K"), (1000000, "1M"), (125000000, "125M"),
    (500500000, "500.50M"), (500550000, "500.55M"), (1000000000, "1B"), (2800000000, "2.8B"),
    (2850000000, "2.9B"), (1000000000000, "1000B"), (268098176, "268.10M"),
])
def test_human_number_matches_ollama(count: int, text: str) -> None:
    assert human_number(count) == text


@pytest.mark.parametrize("seconds, text", [
    (0.4, "Less than a second"), (1, "1 second"), (59.9, "59 seconds"),
    (60, "About a minute"), (119, "About a minute"), (240, "4 minutes"), (3599, "59 minutes"),
    (3600, "About an hour"), (5399, "About an hour"), (5400, "2 hours"), (47 * 3600, "47 hours"),
    (48 * 3600, "2 days"), (13 * 86400, "13 days"), (14 * 86400, "2 weeks"),
    (59 * 86400, "8 weeks"), (60 * 86400, "2 months"), (729 * 86400, "24 months"),
    (730 * 86400, "2 years"),
])
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_human_time_past_future_zero_and_forever() -> None:
    assert human_time(NOW - timedelta(minutes=4, seconds=10), now=NOW) == "4 minutes ago"
    assert human_time(NOW - timedelta(hours=48), now=NOW) == "2 days ago"
    assert human_time(NOW + timedelta(hours=48), now=NOW) == "2 days from now"
    assert human_time(NOW + timedelta(milliseconds=800), now=NOW) == "Less than a second from now"
    assert human_time(NOW + timedelta(days=365 * 200), now=NOW) == "Forever"
    assert human_time(None, "never", now=NOW) == "never"
    assert human_time("0001-01-01T00:00:00Z", "Never", now=NOW) == "Never"
    assert human_time("2025-06-01T11:56:00.123456789Z", now=NOW) == "3 minutes ago"


def test_parse_time_takes_nanoseconds_and_offsets() -> None:
    assert parse_time("2025-06-01T11:00:00.123456789Z") == datetime(
        2025, 6, 1, 11, 0, 0, 123456, tzinfo=timezone.utc)
    assert parse_time("2025-06-01T13:00:00+02:00") == datetime(2025, 6, 1, 11, tzinfo=timezone.utc)
    assert parse_time("2025-06-01T11:00:00.5Z").microsecond == 500000
    assert parse_time("") is None and parse_time("garbage") is None


@pytest.mark.parametrize("ns, text", [
    (0, "0s"), (1, "1ns"), (999, "999ns"), (1500, "1.5µs"), (18202, "18.202µs"),
    (81682511, "81.682511ms"), (1_000_000, "1ms"), (1_000_000_000, "1s"),
    (1_636_504_535, "1.636504535s"), (28_868_772_576, "28.868772576s"),
    (60_000_000_000, "1m0s"), (123_040_000_000, "2m3.04s"), (3_600_000_000_000, "1h0m0s"),
    (3_723_500_000_000, "1h2m3.5s"), (-1_500_000_000, "-1.5s"),
])
def test_go_duration(ns: int, text: str) -> None:
    assert go_duration(ns) == text


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (4.4, "4s"), (59.5, "1m0s"), (3599, "59m59s"), (3600, "1h0m"), (3960, "1h6m"),
    (100 * 3600, "99h+"),
])
def test_progress_eta(seconds: float, text: str) -> None:
    assert eta(seconds) == text


def test_processor_column() -> None:
    assert processor(548577792, 0) == "100% CPU"
    assert processor(1000, 1000) == "100% GPU"
    assert processor(1000, 520) == "48%/52% CPU/GPU"
    assert processor(1000, 2000) == "Unknown"


def test_table_is_left_aligned_with_four_spaces_between_columns() -> None:
    text = table([["gemma3:270m", "1a5ce5f0955b", "253 MB", "4 minutes ago"],
                  ["tiny:latest", "a940a76f9628", "1.2 GB", "About a minute ago"]],
                 header=["NAME", "ID", "SIZE", "MODIFIED"])
    assert text == (
        "NAME           ID              SIZE      MODIFIED\n"
        "gemma3:270m    1a5ce5f0955b    253 MB    4 minutes ago\n"
        "tiny:latest    a940a76f9628    1.2 GB    About a minute ago\n")


def test_table_header_alone_and_wide_characters() -> None:
    assert table([], header=["NAME", "ID"]) == "NAME    ID\n"
    assert table([["模型", "x"], ["ab", "y"]]) == "模型    x\nab      y\n"


def test_show_info_sections_are_indented_like_ollama() -> None:
    resp = {
        "details": {"family": "gemma3", "parameter_size": "268.10M",
                    "quantization_level": "Q4_K_M"},
        "model_info": {"general.architecture": "gemma3", "gemma3.context_length": 32768,
                       "gemma3.embedding_length": 640},
        "capabilities": ["completion"],
        "parameters": 'stop                           "<end_of_turn>"\nnum_predict 8',
        "system": "line one\nline two\n\nline three",
    }
    assert show_info(resp) == (
        "  Model\n"
        "    architecture        gemma3\n"
        "    parameters          268.10M\n"
        "    context length      32768\n"
        "    embedding length    640\n"
        "    quantization        Q4_K_M\n"
        "\n"
        "  Capabilities\n"
        "    completion\n"
        "\n"
        "  Parameters\n"
        '    stop           "<end_of_turn>"\n'
        "    num_predict    8\n"
        "\n"
        "  System\n"
        "    line one\n"
        "    line two\n"
        "    ...\n"
        "\n")


def test_metadata_values_print_as_go_prints_them() -> None:
    assert go_g(32768) == "32768" and go_g(1e6) == "1e+06" and go_g(0.0001) == "0.0001"
    assert go_g(0.00001) == "1e-05" and go_g(1234567) == "1.234567e+06" and go_g(0.5) == "0.5"
    assert metadata_value(True) == "true"
    assert metadata_value(["a", "b"]) == "[a b]"
    assert metadata_value(["gemma3", "gemma", "google"]) == "[gemma3 ...+2 more]"


def test_metrics_summary_uses_ollamas_labels() -> None:
    text = metrics_summary({"total_duration": 1636504535, "load_duration": 962630465,
                            "prompt_eval_count": 10, "prompt_eval_duration": 237390277,
                            "eval_count": 4, "eval_duration": 434846636})
    assert text == (
        "total duration:       1.636504535s\n"
        "load duration:        962.630465ms\n"
        "prompt eval count:    10 token(s)\n"
        "prompt eval duration: 237.390277ms\n"
        "prompt eval rate:     42.12 tokens/s\n"
        "eval count:           4 token(s)\n"
        "eval duration:        434.846636ms\n"
        "eval rate:            9.20 tokens/s\n")
    assert metrics_summary({"eval_count": 3}) == "eval count:           3 token(s)\n"


def test_set_parameter_values_are_typed_like_ollamas_format_params() -> None:
    assert parse_parameter("num_predict", ["4"]) == 4
    assert parse_parameter("temperature", ["0.5"]) == 0.5
    assert parse_parameter("stop", ["a", "b"]) == ["a", "b"]
    assert parse_parameter("use_mmap", ["F"]) is False
    with pytest.raises(ParameterError, match="unknown parameter 'nope'"):
        parse_parameter("nope", ["1"])
    with pytest.raises(ParameterError, match=r"invalid int value \[4.5\]"):
        parse_parameter("num_predict", ["4.5"])


def test_think_flag_values() -> None:
    assert parse_think(None) is None and parse_think("true") is True
    assert parse_think("false") is False and parse_think("high") == "high"
    with pytest.raises(CLIError):
        parse_think("maybe")
    assert parse_think("max") == "max"


@pytest.mark.parametrize("raw,expected", [(None, None), ("true", True), ("1", True),
                                          ("false", False), ("F", False)])
def test_truncate_flag_reads_as_gos_parse_bool(raw: str | None, expected: bool | None) -> None:
    assert parse_truncate(raw) is expected


def test_a_truncate_flag_go_cannot_read_is_refused_as_ollama_refuses_it() -> None:
    with pytest.raises(CLIError, match='invalid argument "yes" for "--truncate" flag'):
        parse_truncate("yes")


def test_ollama_host_is_read_as_the_server_reads_it() -> None:
    assert base_url({}) == "http://127.0.0.1:11434"
    assert base_url({"OLLAMA_HOST": "example.com"}) == "http://example.com:11434"
    assert base_url({"OLLAMA_HOST": "0.0.0.0:8080"}) == "http://127.0.0.1:8080"
    assert base_url({"OLLAMA_HOST": "https://box:443"}) == "https://box:443"
    assert base_url({"OLLAMA_HOST": "[::]:11434"}) == "http://[::1]:11434"
    with pytest.raises(CLIError, match="OLLAMA_HOST"):
        base_url({"OLLAMA_HOST": "ftp://x"})


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_word_wrap_moves_the_word_that_crosses_the_edge() -> None:
    out = _Tty()
    display = Display(out, wrap=True, width=20)  # lines break before column 15
    display.write("the quick brown fox jumps")
    # What a terminal shows: each line within the width, no word split.
    assert _render(out.getvalue()) == ["the quick ", "brown fox jumps"]


def test_no_wrap_when_not_a_terminal() -> None:
    out = io.StringIO()
    Display(out, wrap=True, width=20).write("the quick brown fox jumps over")
    assert out.getvalue() == "the quick brown fox jumps over"


def _render(written: str) -> list[str]:
    """A tiny terminal: applies cursor-left (ESC[nD), erase-to-end (ESC[K) and newlines."""
    import re

    lines, col = [""], 0
    for token in re.findall(r"\x1b\[\d*D|\x1b\[K|\n|[^\x1b\n]", written):
        if token == "\n":
            lines.append("")
            col = 0
        elif token.endswith("D"):
            col -= int(token[2:-1] or 1)
        elif token == "\x1b[K":
            lines[-1] = lines[-1][:col]
        else:
            lines[-1] = lines[-1][:col] + token + lines[-1][col + 1:]
            col += 1
    return lines
