"""Quantizing a stored F16/F32 model into a new blob, with progress, for /api/create's
`quantize`. The work runs in a separate process (workers/quantize.py)."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import AsyncIterator

import orjson

from store.errors import InvalidInput
from store.gguf import FILE_TYPES
from store.store import MODEL_MEDIA, Layer, Store

# The types Ollama quantizes to, by llama.cpp file type number.
TYPES = {name.lower(): number for number, name in FILE_TYPES.items()
         if name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q3_K_S", "Q3_K_M", "Q3_K_L",
                     "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K")}
SOURCES = ("F32", "F16", "BF16")


def check(source: str, wanted: str) -> tuple[str, str]:
    """(source type, target type name) if a model of type `source` can be quantized to `wanted`."""
    if wanted.lower() not in TYPES:
        raise InvalidInput(f'unsupported quantization type "{wanted}"; use one of '
                           + ", ".join(FILE_TYPES[n] for n in TYPES.values()))
    if source not in SOURCES:
        raise InvalidInput(f"quantization is only supported for F16 and F32 models, "
                           f"this one is {source or 'of unknown type'}")
    return source, FILE_TYPES[TYPES[wanted.lower()]]


async def quantize(store: Store, layer: Layer, target: str,
                   result: list[Layer]) -> AsyncIterator[dict[str, int]]:
    """Yields progress ({"completed", "total"} tensors); appends the new model layer to `result`."""
    fd, name = tempfile.mkstemp(dir=store.blobs_dir, prefix=".partial-quantize-")
    os.close(fd)
    out = Path(name)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers.quantize", str(store.blob_path(layer.digest)), str(out),
        str(TYPES[target.lower()]), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        async for line in process.stdout:
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # not a progress line (llama.cpp may print other things)
        if await process.wait() != 0:
            raise InvalidInput(f"llama.cpp could not quantize this model to {target}")
        # The output already lies in blobs/: hash it where it is and rename it into place.
        blob = await asyncio.to_thread(lambda: store.blob_writer(resume=out).commit())
        result.append(Layer(MODEL_MEDIA, blob.digest, blob.size))
    finally:
        if process.returncode is None:  # the client went away: stop the work too
            process.kill()
            await process.wait()
        out.unlink(missing_ok=True)
