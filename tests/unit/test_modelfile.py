"""Modelfile parsing (Ollama's grammar, typed parameters, line-numbered errors) and printing."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store.errors import InvalidInput
from store.modelfile import (MAX_MODELFILE_BYTES, Command, ModelfileError, format_modelfile,
                             parse, to_create_spec)


def test_from_is_parsed() -> None:
    assert parse("FROM llama3.2").commands == [Command("from", "llama3.2", 1)]


def test_every_instruction_is_parsed_in_order() -> None:
    mf = parse("FROM base\nADAPTER ./lora.gguf\nLICENSE MIT\nPARAMETER temperature 0.5\n"
               "TEMPLATE {{ .Prompt }}\nSYSTEM Be brief.\nMESSAGE user Hi\nREQUIRES 0.14.0\n"
               "DRAFT ./draft\nRENDERER r\nPARSER p\n")
    assert [(c.name, c.args, c.line) for c in mf.commands] == [
        ("from", "base", 1), ("adapter", "./lora.gguf", 2), ("license", "MIT", 3),
        ("parameter", "0.5", 4), ("template", "{{ .Prompt }}", 5), ("system", "Be brief.", 6),
        ("message", "Hi", 7), ("requires", "0.14.0", 8), ("draft", "./draft", 9),
        ("renderer", "r", 10), ("parser", "p", 11)]


def test_accessors_collect_each_instruction() -> None:
    mf = parse("FROM base\nADAPTER a.gguf\nLICENSE one\nLICENSE two\nTEMPLATE t\nSYSTEM s\n"
               "MESSAGE user u\nMESSAGE assistant a\nREQUIRES v0.14.0\n")
    assert mf.from_ == "base" and mf.template == "t" and mf.system == "s"
    assert mf.adapters == ["a.gguf"] and mf.licenses == ["one", "two"]
    assert mf.messages == [{"role": "user", "content": "u"},
                           {"role": "assistant", "content": "a"}]
    assert mf.requires == "0.14.0"


def test_absent_instructions_give_none_or_empty() -> None:
    mf = parse("FROM base")
    assert mf.template is None and mf.system is None and mf.requires is None
    assert mf.parameters == {} and mf.messages == [] and mf.licenses == [] and mf.adapters == []


def test_keywords_are_case_insensitive() -> None:
    mf = parse("from base\nParameter temperature 1\nsYsTeM hello\nmessage user hi\n")
    assert [c.name for c in mf.commands] == ["from", "parameter", "system", "message"]


def test_from_may_come_after_other_instructions() -> None:
    assert parse("SYSTEM s\nFROM base").from_ == "base"


def test_comment_lines_and_blank_lines_are_skipped() -> None:
    mf = parse("# a comment\n\n   # indented comment\n\t\nFROM base\n\n# end")
    assert mf.commands == [Command("from", "base", 5)]


def test_hash_after_an_instruction_is_part_of_its_argument() -> None:
    assert parse("FROM base\nSYSTEM be #1 # really").system == "be #1 # really"


def test_argument_is_trimmed_and_keeps_inner_spaces() -> None:
    assert parse("FROM     /what/is/the path   \t").from_ == "/what/is/the path"


def test_tab_separates_keyword_from_argument() -> None:
    assert parse("FROM\tbase").from_ == "base"


def test_quoted_argument_keeps_its_spaces() -> None:
    assert parse('FROM base\nLICENSE "MIT       "').licenses == ["MIT       "]


def test_backslashes_are_literal_not_escapes() -> None:
    assert parse('FROM base\nSYSTEM "a\\nb\\"').system == 'a\\nb\\'


def test_unquoted_argument_may_hold_quotes_inside() -> None:
    assert parse('FROM base\nSYSTEM You are "Mario".').system == 'You are "Mario".'


def test_triple_quoted_string_spans_lines() -> None:
    mf = parse('FROM base\nSYSTEM """\nThis is a\nmultiline system.\n"""\nPARAMETER top_k 1')
    assert mf.system == "\nThis is a\nmultiline system.\n"
    assert mf.commands[-1] == Command("parameter", "1", 6, "top_k", 1)


def test_triple_quoted_string_may_close_on_its_last_text_line() -> None:
    assert parse('FROM base\nSYSTEM """This is a\nmultiline system."""  ').system == \
        "This is a\nmultiline system."


def test_triple_quoted_string_keeps_quotes_and_surrounding_spaces() -> None:
    text = parse('FROM base\nSYSTEM   """  say "hi" and ""ok"" """   ').system
    assert text == '  say "hi" and ""ok"" '


def test_triple_quotes_inside_a_line_do_not_close_the_string() -> None:
    assert parse('FROM base\nSYSTEM """a """ b\nc"""').system == 'a """ b\nc'


def test_empty_triple_quoted_and_quoted_strings() -> None:
    assert parse('FROM base\nSYSTEM """"""').system == ""
    assert parse('FROM base\nSYSTEM ""').system == ""


def test_single_quoted_string_may_span_lines() -> None:
    assert parse('FROM base\nSYSTEM "one\ntwo"').system == "one\ntwo"


def test_crlf_inside_a_multiline_string_is_kept_and_counts_as_one_line() -> None:
    mf = parse('FROM base\r\nTEMPLATE """a\r\nb"""\r\nSYSTEM s\r\n')
    assert mf.template == "a\r\nb"
    assert mf.commands[-1].line == 4


def test_byte_order_mark_is_ignored() -> None:
    assert parse("\ufeffFROM base").from_ == "base"
    assert parse("FROM base".encode("utf-16")).from_ == "base"
    assert parse(b"\xef\xbb\xbfFROM base").from_ == "base"


def test_template_like_the_reference_example() -> None:
    mf = parse('FROM llama3.2\nTEMPLATE """{{ if .System }}<|im_start|>system\n{{ .System }}'
               '<|im_end|>\n{{ end }}<|im_start|>assistant\n"""\n')
    assert mf.template == ("{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n"
                           "{{ end }}<|im_start|>assistant\n")


def test_integer_parameter_is_typed() -> None:
    assert parse("FROM b\nPARAMETER num_ctx 4096").parameters == {"num_ctx": 4096}


def test_float_parameter_is_typed() -> None:
    params = parse("FROM b\nPARAMETER temperature 1\nPARAMETER top_p .5\nPARAMETER min_p 5e-2"
                   ).parameters
    assert params == {"temperature": 1.0, "top_p": 0.5, "min_p": 0.05}
    assert isinstance(params["temperature"], float)


@pytest.mark.parametrize("text, value", [("0.123456789", 0.12345679), ("0.1", 0.1),
                                         ("3.14159265358979", 3.1415927), ("1e-45", 1e-45),
                                         ("-0", -0.0)])
def test_a_float_parameter_is_the_float32_ollama_reads(text: str, value: float) -> None:
    # api.FormatParams parses with strconv.ParseFloat(s, 32) and keeps a float32, which
    # reaches the server as the shortest text that reads back as that float32.
    assert parse(f"FROM b\nPARAMETER temperature {text}").parameters == {"temperature": value}


@pytest.mark.parametrize("text, value", [("true", True), ("True", True), ("1", True),
                                         ("t", True), ("FALSE", False), ("0", False)])
def test_bool_parameter_accepts_what_go_parsebool_accepts(text: str, value: bool) -> None:
    assert parse(f"FROM b\nPARAMETER use_mmap {text}").parameters == {"use_mmap": value}


def test_list_parameter_is_a_list_of_strings() -> None:
    assert parse("FROM b\nPARAMETER stop <|eot_id|>").parameters == {"stop": ["<|eot_id|>"]}


def test_repeated_stop_accumulates_in_order() -> None:
    mf = parse('FROM b\nPARAMETER stop "<|start_header_id|>"\nPARAMETER stop ### User:\n'
               'PARAMETER stop "### User: "\nPARAMETER stop """x\n"""')
    assert mf.parameters["stop"] == ["<|start_header_id|>", "### User:", "### User: ", "x\n"]


def test_repeated_other_parameter_last_wins() -> None:
    assert parse("FROM b\nPARAMETER temperature 0.1\nPARAMETER temperature 0.9"
                 ).parameters == {"temperature": 0.9}


def test_repeated_template_and_system_last_wins() -> None:
    mf = parse("FROM b\nSYSTEM one\nTEMPLATE t1\nSYSTEM two\nTEMPLATE t2")
    assert (mf.system, mf.template) == ("two", "t2")


def test_parameters_ollama_ignores_are_accepted_and_dropped() -> None:
    assert parse("FROM b\nPARAMETER mirostat 2\nPARAMETER mirostat_eta x").parameters == {}


def test_extra_blanks_after_parameter_and_message_are_allowed() -> None:
    mf = parse("FROM b\nPARAMETER   top_k\t  7\nMESSAGE  user   hi  ")
    assert mf.parameters == {"top_k": 7} and mf.messages == [{"role": "user", "content": "hi"}]


def test_every_message_role_is_accepted() -> None:
    mf = parse("FROM b\nMESSAGE system s\nMESSAGE user u\nMESSAGE assistant a")
    assert [m["role"] for m in mf.messages] == ["system", "user", "assistant"]


def test_multiline_message() -> None:
    mf = parse('FROM b\nMESSAGE system """\nYou are a multiline file parser.\n"""\n')
    assert mf.messages == [{"role": "system", "content": "\nYou are a multiline file parser.\n"}]


def test_requires_accepts_semver_with_or_without_v() -> None:
    assert parse("FROM b\nREQUIRES v0.14.0-rc1").requires == "0.14.0-rc1"
    assert parse("FROM b\nREQUIRES 1.2").requires == "1.2"


def _error(text: str) -> ModelfileError:
    with pytest.raises(ModelfileError) as info:
        parse(text)
    return info.value


def test_errors_are_invalid_input() -> None:
    assert isinstance(_error(""), InvalidInput)


def test_missing_from_is_an_error() -> None:
    assert str(_error("PARAMETER temperature 1\n# FROM x")) == "no FROM line"


def test_empty_modelfile_has_no_from() -> None:
    assert str(_error("")) == "no FROM line"


def test_unknown_instruction_names_its_line() -> None:
    err = _error("FROM b\n\nBADCOMMAND param1 value1")
    assert err.line == 3 and str(err).startswith('line 3: unknown instruction "BADCOMMAND"')


def test_keyword_glued_to_punctuation_is_an_unknown_instruction() -> None:
    assert str(_error("FROM: base")).startswith('line 1: unknown instruction "FROM:"')


def test_unknown_parameter_names_its_line() -> None:
    assert str(_error('FROM b\n# x\nPARAMETER temprature 0.5')) == \
        'line 3: unknown parameter "temprature"'


def test_parameter_names_are_case_sensitive() -> None:
    assert str(_error("FROM b\nPARAMETER Temperature 1")) == \
        'line 2: unknown parameter "Temperature"'


@pytest.mark.parametrize("line, expected", [
    ("PARAMETER num_ctx 4k", 'invalid value "4k" for parameter "num_ctx": expected an integer'),
    ("PARAMETER num_ctx 1.5", 'invalid value "1.5" for parameter "num_ctx": expected an integer'),
    ("PARAMETER top_k 1_000", 'invalid value "1_000" for parameter "top_k": expected an integer'),
    ("PARAMETER temperature hot", 'invalid value "hot" for parameter "temperature": '
                                  "expected a number"),
    ("PARAMETER use_mmap yes", 'invalid value "yes" for parameter "use_mmap": '
                               "expected true or false"),
])
def test_bad_parameter_value_names_its_line(line: str, expected: str) -> None:
    assert str(_error(f"FROM b\n{line}")) == f"line 2: {expected}"


def test_out_of_range_parameter_names_its_line() -> None:
    assert str(_error("FROM b\nPARAMETER num_ctx 0")).startswith(
        'line 2: parameter "num_ctx" must be between 1 and')


def test_non_finite_float_parameter_is_refused() -> None:
    assert str(_error("FROM b\nPARAMETER temperature nan")) == \
        'line 2: parameter "temperature" must be a finite number'


def test_parameter_without_value_is_an_error() -> None:
    assert str(_error("FROM b\nPARAMETER stop")) == "line 2: PARAMETER stop has no value"


def test_parameter_without_name_is_an_error() -> None:
    assert str(_error("FROM b\nPARAMETER")) == "line 2: PARAMETER needs a name and a value"


def test_too_many_stop_strings_is_an_error_at_the_one_too_many() -> None:
    assert str(_error("FROM b\n" + "PARAMETER stop s\n" * 65)) == \
        'line 66: parameter "stop" takes at most 64 strings'


def test_bad_message_role_names_its_line() -> None:
    assert str(_error("FROM b\nMESSAGE badguy I'm a bad guy!")) == (
        'line 2: message role must be one of "system", "user", or "assistant", not "badguy"')


def test_message_roles_are_case_sensitive() -> None:
    assert _error("FROM b\nMESSAGE User hi").line == 2


def test_message_without_content_is_an_error() -> None:
    assert str(_error("FROM b\nMESSAGE system")) == "line 2: MESSAGE system has no value"


def test_unterminated_triple_quote_names_the_line_it_opens() -> None:
    err = _error('FROM b\nSYSTEM """This is a multiline system.""\nmore\n')
    assert str(err) == 'line 2: unterminated """ string: no later line ends with """'


def test_unterminated_quote_is_an_error() -> None:
    assert _error('FROM b\n\nSYSTEM "\n').line == 3


def test_text_after_closing_quotes_leaves_the_string_open() -> None:
    assert _error('FROM b\nSYSTEM """a""" trailing\nPARAMETER top_k 1').line == 2


def test_keyword_alone_on_a_line_is_an_error() -> None:
    assert str(_error("FROM")) == "line 1: FROM has no value"


def test_empty_from_is_an_error() -> None:
    assert str(_error("FROM  ")) == "line 1: FROM needs a model name or a path"


def test_bad_requires_is_an_error() -> None:
    assert str(_error("FROM b\nREQUIRES latest")) == \
        "line 2: requires must be a valid semver (e.g. 0.14.0)"


def test_modelfile_over_the_size_limit_is_refused() -> None:
    with pytest.raises(ModelfileError, match="larger than 16 MiB"):
        parse("FROM b\n#" + "x" * MAX_MODELFILE_BYTES)


def test_size_limit_counts_utf8_bytes() -> None:
    with pytest.raises(ModelfileError, match="larger than 16 MiB"):
        parse("FROM b\n#" + "é" * (MAX_MODELFILE_BYTES // 2))


def test_invalid_utf8_bytes_are_refused() -> None:
    with pytest.raises(ModelfileError, match="not valid UTF-8"):
        parse(b"FROM \xff")


def test_reference_basic_example() -> None:
    mf = parse("""FROM llama3.2
# sets the temperature to 1 [higher is more creative, lower is more coherent]
PARAMETER temperature 1
# sets the context window size to 4096, this controls how many tokens the LLM can use as context to generate the next token
PARAMETER num_ctx 4096

# sets a custom system message to specify the behavior of the chat assistant
SYSTEM You are Mario from super mario bros, acting as an assistant.
""")
    assert mf.from_ == "llama3.2"
    assert mf.parameters == {"temperature": 1.0, "num_ctx": 4096}
    assert mf.system == "You are Mario from super mario bros, acting as an assistant."


def test_reference_show_output_example() -> None:
    mf = parse('''# Modelfile generated by "ollama show"
# To build a new Modelfile based on this one, replace the FROM line with:
# FROM llama3.2:latest
FROM /Users/pdevine/.ollama/models/blobs/sha256-00e1317cbf74d901080d7100f57580ba8dd8de57203072dc6f668324ba545f29
TEMPLATE """{{ if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>{{ end }}{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>

{{ .Prompt }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>

{{ .Response }}<|eot_id|>"""
PARAMETER stop "<|start_header_id|>"
PARAMETER stop "<|end_header_id|>"
PARAMETER stop "<|eot_id|>"
PARAMETER stop "<|reserved_special_token"
''')
    assert mf.from_.startswith("/Users/pdevine/.ollama/models/blobs/sha256-00e1317cbf74")
    assert mf.template is not None
    assert mf.template.startswith("{{ if .System }}<|start_header_id|>system<|end_header_id|>\n")
    assert mf.template.endswith("{{ .Response }}<|eot_id|>")
    assert mf.parameters["stop"] == ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                                     "<|reserved_special_token"]


def test_reference_message_example() -> None:
    mf = parse("FROM llama3.2\nMESSAGE user Is Toronto in Canada?\nMESSAGE assistant yes\n"
               "MESSAGE user Is Sacramento in Canada?\nMESSAGE assistant no\n")
    assert mf.messages[2] == {"role": "user", "content": "Is Sacramento in Canada?"}
    assert len(mf.messages) == 4


def test_to_create_spec_carries_every_part() -> None:
    spec = to_create_spec(parse('FROM llama3.2\nTEMPLATE t\nSYSTEM s\nPARAMETER stop a\n'
                                'PARAMETER stop b\nMESSAGE user hi\nLICENSE L\nREQUIRES v0.14.0'),
                          "mario")
    assert (spec.model, spec.from_, spec.template, spec.system) == ("mario", "llama3.2", "t", "s")
    assert spec.requires == "0.14.0"
    assert spec.parameters == {"stop": ["a", "b"]}
    assert spec.messages == [{"role": "user", "content": "hi"}]
    assert spec.licenses == ["L"]


def test_to_create_spec_leaves_unset_parts_to_the_base_model() -> None:
    spec = to_create_spec(parse("FROM llama3.2"), "m")
    assert spec.template is None and spec.system is None and spec.messages is None
    assert spec.parameters == {} and spec.licenses == []


def test_to_create_spec_keeps_an_empty_system_that_clears_the_base_one() -> None:
    assert to_create_spec(parse('FROM b\nSYSTEM ""'), "m").system == ""


@pytest.mark.parametrize("line", ["RENDERER r", "PARSER p"])
def test_to_create_spec_refuses_what_no_model_can_hold(line: str) -> None:
    with pytest.raises(ModelfileError, match=f"line 2: {line.split()[0]} is not supported"):
        to_create_spec(parse(f"FROM b\n{line}"), "m")


def test_to_create_spec_passes_adapters_on_as_paths() -> None:
    spec = to_create_spec(parse("FROM b\nADAPTER ./lora.gguf\nADAPTER /x/two.gguf"), "m")
    assert spec.adapter_paths == ["./lora.gguf", "/x/two.gguf"]


def test_to_create_spec_refuses_a_second_from_naming_a_model() -> None:
    with pytest.raises(ModelfileError, match="line 1: with more than one FROM, each must be "
                                             "the path of a GGUF file"):
        to_create_spec(parse("FROM a\n\nFROM ./mmproj.gguf"), "m")


def test_to_create_spec_passes_several_from_paths_on() -> None:
    spec = to_create_spec(parse("FROM ./model.gguf\nFROM /x/mmproj.gguf"), "m")
    assert (spec.from_, spec.from_paths) == ("", ["./model.gguf", "/x/mmproj.gguf"])


def test_format_prints_a_projector_as_a_second_from_after_the_adapters() -> None:
    text = format_modelfile("/b/w", adapters=["/b/a"], projectors=["/b/p"], system="s")
    assert text == 'FROM /b/w\nADAPTER /b/a\nFROM /b/p\nSYSTEM """s"""\n'


def test_format_has_ollamas_header_and_from() -> None:
    text = format_modelfile("/blobs/sha256-1", name="mario:latest")
    assert text == ('# Modelfile generated by "ollama show"\n'
                    "# To build a new Modelfile based on this one, replace the FROM line with:\n"
                    "# FROM mario:latest\n\nFROM /blobs/sha256-1\n")


def test_format_prints_texts_triple_quoted_and_one_bare_line_per_stop() -> None:
    text = format_modelfile("/b", template="{{ .Prompt }}", system="Be brief.",
                            parameters={"stop": ["<a>", "<b>"], "temperature": 1.0},
                            messages=[{"role": "user", "content": "hi"}], licenses=["MIT"])
    assert text.splitlines() == [
        "FROM /b", 'TEMPLATE """{{ .Prompt }}"""', 'SYSTEM """Be brief."""',
        'PARAMETER stop <a>', 'PARAMETER stop <b>', "PARAMETER temperature 1",
        'MESSAGE user """hi"""', 'LICENSE """MIT"""']


def test_format_leaves_out_empty_texts() -> None:
    assert format_modelfile("/b", template="", system="") == "FROM /b\n"


TRICKY_TEXTS = [
    'He said "hi"', '"', '""', '"""', 'ends with a quote"', 'ends with triple"""',
    '"""starts with triple', 'mid """ line\nnext', "back\\slash\\", "\\n not a newline",
    "  leading and trailing  ", "\nnewlines\n\n", "a\r\nb\rc", "# not a comment",
    "FROM inside\nPARAMETER top_k 1", "tab\there", "", "ünïcödé ✓", "nul\x00char",
]


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_format_then_parse_round_trips_texts(text: str) -> None:
    mf = parse(format_modelfile("/b", template=text or None, system=text or None,
                                messages=[{"role": "assistant", "content": text}],
                                licenses=[text]))
    assert mf.template == (text or None) and mf.system == (text or None)
    assert mf.messages == [{"role": "assistant", "content": text}]
    assert mf.licenses == [text]


@pytest.mark.parametrize("stop", TRICKY_TEXTS)
def test_format_then_parse_round_trips_stop_strings(stop: str) -> None:
    assert parse(format_modelfile("/b", parameters={"stop": [stop, "x"]})).parameters == \
        {"stop": [stop, "x"]}


def test_format_then_parse_round_trips_typed_parameters() -> None:
    params = {"num_ctx": 4096, "temperature": 0.7, "top_p": 1e-05, "seed": -(1 << 63),
              "use_mmap": False, "stop": ["</s>"]}
    assert parse(format_modelfile("/b", parameters=params)).parameters == params


def test_format_then_parse_round_trips_paths_with_spaces() -> None:
    mf = parse(format_modelfile(" /my models/x.gguf ", adapters=['"odd".gguf']))
    assert mf.from_ == " /my models/x.gguf " and mf.adapters == ['"odd".gguf']


def test_text_with_a_line_ending_in_triple_quotes_cannot_round_trip() -> None:
    """No Modelfile can hold it (Ollama has no escapes); it is printed as Ollama would."""
    assert 'SYSTEM """a"""\nb"""' in format_modelfile("/b", system='a"""\nb')


def _representable(text: str) -> bool:
    lines = re.split(r"\r\n|\r|\n", text)
    return not any(line.rstrip(" \t").endswith('"""') for line in lines[:-1])


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from('a "\\\n\r\t#é{}'), max_size=40))
def test_format_then_parse_round_trips_any_representable_text(text: str) -> None:
    if not text or not _representable(text):
        return
    mf = parse(format_modelfile("/b", system=text, parameters={"stop": [text]},
                                messages=[{"role": "user", "content": text}]))
    assert (mf.system, mf.parameters["stop"], mf.messages[0]["content"]) == (text, [text], text)
