"""Per-sequence llama.cpp sampler chains built from request options.

Top-k runs before the repetition penalties (llama.cpp warns that penalties over a whole vocabulary
are slow: Gemma has 262k tokens), then typical-p, top-p, min-p, temperature and a seeded draw. Temperature
<= 0 means greedy, as in Ollama; there the penalties see the whole vocabulary so that they can
still change the choice. Structured output adds a grammar beside the chain (grammar.py).
"""

from __future__ import annotations

import llama_cpp as llama

from workers.options import RequestOptions


def build_chain(opts: RequestOptions, n_ctx: int, n_vocab: int,
                history: list[int]) -> llama.llama_sampler_p:
    chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())

    def add(sampler: llama.llama_sampler_p) -> None:
        llama.llama_sampler_chain_add(chain, sampler)

    last_n = n_ctx if opts["repeat_last_n"] < 0 else opts["repeat_last_n"]
    penalize = last_n > 0 and (opts["repeat_penalty"] != 1.0 or opts["frequency_penalty"] != 0
                               or opts["presence_penalty"] != 0)

    def add_penalties() -> None:
        if penalize:
            add(llama.llama_sampler_init_penalties(n_vocab, last_n, opts["repeat_penalty"],
                                                   opts["frequency_penalty"],
                                                   opts["presence_penalty"]))

    if opts["temperature"] <= 0:
        add_penalties()
        add(llama.llama_sampler_init_greedy())
    else:
        if opts["top_k"] > 0:
            add(llama.llama_sampler_init_top_k(opts["top_k"]))
        add_penalties()
        if 0 < opts["typical_p"] < 1:
            add(llama.llama_sampler_init_typical(opts["typical_p"], 1))
        if 0 < opts["top_p"] < 1:
            add(llama.llama_sampler_init_top_p(opts["top_p"], 1))
        if opts["min_p"] > 0:
            add(llama.llama_sampler_init_min_p(opts["min_p"], 1))
        add(llama.llama_sampler_init_temp(opts["temperature"]))
        seed = llama.LLAMA_DEFAULT_SEED if opts["seed"] < 0 else opts["seed"] & 0xFFFFFFFF
        add(llama.llama_sampler_init_dist(seed))
    # Penalties look back over the prompt too, as llama.cpp's server does.
    if penalize:
        for token in history[-last_n:]:
            llama.llama_sampler_accept(chain, token)
    return chain


def free_chain(chain: llama.llama_sampler_p) -> None:
    llama.llama_sampler_free(chain)

