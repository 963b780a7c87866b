"""A generation request inside the worker: its status, its tokens and where they stand.

A sequence goes RENDERING (a side thread builds its prompt) → WAITING (for KV cells) →
PREFILLING (its prompt goes into the batch, a chunk per step) → GENERATING (one token per step)
→ finished. A preempted sequence goes back to WAITING and computes its tokens again once cells
are free (vLLM's RequestStatus, whose words these are). A sequence whose grammar refused the
token its sampler chose is SAMPLING while a side thread applies the grammar to the whole
vocabulary: it keeps its cells and sits out the steps meanwhile.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from workers.context import Window
from workers.options import RequestOptions

if TYPE_CHECKING:
    from workers.grammar import Grammar
    from workers.sampling import Chain
    from workers.logprobs import Distribution
    from workers.speculation import Drafter
    from workers.protocol import Logprob
    from workers.textstream import TextStream
    from workers.vision import EncodedImage

ALL = sys.maxsize  # Sequence.clean when no context shift has touched its cells


class Status(str, Enum):
    RENDERING = "rendering"
    WAITING = "waiting"
    PREFILLING = "prefilling"
    GENERATING = "generating"
    SAMPLING = "sampling"


@dataclass(eq=False)
class Sequence:
    job_id: int
    opts: RequestOptions
    want_context: bool
    t_start: int  # ns, when the request reached the worker
    status: Status = Status.RENDERING
    slot: int = -1  # llama.cpp sequence id while it holds cells
    prompt: list[int] = field(default_factory=list)  # as fitted to the context
    # What its cells hold or will hold, position = index: the prompt, then each sampled token.
    # While generating, the last one is sampled but not yet decoded. A context shift drops
    # tokens here as it drops their cells.
    tokens: list[int] = field(default_factory=list)
    n_computed: int = 0  # tokens[:n_computed] are in the KV cache
    clean: int = ALL  # tokens[:clean] have the cells a fresh computation gives (reusable)
    reused: int = 0  # prompt tokens found in the cache
    shared: bool = False  # some cells are shared with another sequence: never shift them
    last_chunk: int = 0  # where the prefill chunk that ended its prompt began
    window: Window | None = None
    limit: int = 0  # most tokens it may generate
    chain: Chain | None = None
    grammar: Grammar | None = None  # structured output (`format`)
    text: TextStream | None = None
    generated: list[int] = field(default_factory=list)
    unsent_tokens: int = 0  # tokens whose text is held back (partial character or stop)
    t_first: int = 0  # when the prompt was done and the first token sampled
    truncate: bool = True  # False: a prompt longer than the context fails instead of being cut
    shift: bool = True  # False: a full context ends the answer ("length") instead of shifting
    logprobs: int = -1  # -1: not asked for; else how many top logprobs each token carries
    distribution: Distribution | None = None  # the last logits row, measured for its logprobs
    # The logprobs of tokens whose text is held back, each with its text's length in characters.
    unsent_logprobs: list[tuple[Logprob, int]] = field(default_factory=list)
    # Its prompt's images by their first position (a run of placeholder ids in `tokens`), and
    # those positions sorted: a prefill chunk stops where an image starts.
    images: dict[int, EncodedImage] = field(default_factory=dict)
    image_starts: list[int] = field(default_factory=list)
    drafter: Drafter | None = None  # None: it never drafts (a grammar or logprobs need each step)
    draft: list[int] = field(default_factory=list)  # this step's guess at its next tokens

    @property
    def holds_cells(self) -> bool:
        return self.status in (Status.PREFILLING, Status.GENERATING, Status.SAMPLING)
