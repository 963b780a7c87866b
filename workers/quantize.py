"""Quantizing a GGUF with llama.cpp, run as its own process: `python -m workers.quantize IN OUT
FTYPE`. The model store starts it (store/quantize.py), so neither the front end nor a serving
worker loads llama.cpp's quantizer or spends its cores on it. Progress goes to stdout as one
JSON line per tensor, read from llama.cpp's own log of `[ i/ n] tensor ...` lines.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys

import orjson

_PROGRESS = re.compile(rb"\[\s*(\d+)/\s*(\d+)\]")


def main(argv: list[str]) -> int:
    source, target, ftype = argv[0], argv[1], int(argv[2])
    import llama_cpp as llama  # noqa: PLC0415 - only in this process

    @llama.llama_log_callback
    def on_log(level: int, text: bytes, _user: object) -> None:
        if match := _PROGRESS.search(text):
            sys.stdout.buffer.write(orjson.dumps({"completed": int(match[1]), "total": int(match[2])},
                                                 option=orjson.OPT_APPEND_NEWLINE))
            sys.stdout.flush()

    llama.llama_log_set(on_log, ctypes.c_void_p(0))
    llama.llama_backend_init()
    params = llama.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = os.cpu_count() or 1
    rc = llama.llama_model_quantize(source.encode(), target.encode(), ctypes.byref(params))
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
