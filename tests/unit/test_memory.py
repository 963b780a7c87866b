"""Memory estimates from GGUF sizes, checked against what llama.cpp allocated for Gemma 3 270M.

llama.cpp's log for the Gemma file with 16384 KV cells shared by 32 slots (flash attention on,
CPU): model 235.16 MiB (llama_model_size 246587904 bytes), KV 288 MiB, compute 514.50 MiB,
output 32 MiB; with n_batch = n_ubatch = 2048 (`num_batch` 2048), compute 2063.01 MiB.
"""

from __future__ import annotations

from dataclasses import replace

from scheduler.memory import ModelMemory, estimate, fit_layers

MiB = 1 << 20
# Gemma 3 270M (Q4_K_M) as its GGUF header gives it.
GEMMA = ModelMemory(
    layers=(3995648, 3995648, 3596288, 3596288, 3995648, 3596288, 3596288, 3995648, 3596288,
            3596288, 3995648, 3596288, 3596288, 3995648, 3596288, 3995648, 3995648, 3995648),
    input_bytes=178257920, output_bytes=2560, tied_output=True,
    kv_bytes_per_cell=18 * 1 * 512 * 2, n_embd=640, n_head=4, n_vocab=262144)
CELLS, SLOTS = 16384, 32


def test_on_the_cpu_it_matches_llama_cpps_buffers() -> None:
    est = estimate(GEMMA, CELLS, SLOTS, gpu_layers=0)
    assert est.weights_ram == 246587904
    assert est.kv_ram == 288 * MiB
    assert est.compute_ram == int(514.5 * MiB) + 32 * MiB  # compute, then one logits row a slot
    assert est.vram == 0 and est.total == est.ram


def test_full_offload_keeps_the_token_embeddings_in_ram_and_copies_a_tied_head() -> None:
    est = estimate(GEMMA, CELLS, SLOTS, gpu_layers=GEMMA.all_layers)
    assert est.weights_gpu == sum(GEMMA.layers) + 2560 + 178257920
    assert est.weights_ram == 178257920
    assert (est.kv_gpu, est.kv_ram) == (288 * MiB, 0)
    assert (est.compute_gpu, est.compute_ram) == (int(514.5 * MiB), 32 * MiB)


def test_partial_offload_puts_the_last_layers_and_their_kv_on_the_gpu() -> None:
    est = estimate(GEMMA, CELLS, SLOTS, gpu_layers=9)
    assert est.weights_gpu == sum(GEMMA.layers[9:])
    assert est.weights_ram == 178257920 + sum(GEMMA.layers[:9]) + 2560
    assert est.kv_gpu == est.kv_ram == 144 * MiB
    assert est.compute_gpu == int(514.5 * MiB)  # both sides compute
    assert est.compute_ram == int(514.5 * MiB) + 32 * MiB


def test_the_compute_buffer_grows_with_the_ubatch_as_llama_cpps_does() -> None:
    est = estimate(GEMMA, CELLS, SLOTS, gpu_layers=0, ubatch=2048)
    compute = est.compute_ram - 32 * MiB  # less the logits rows of the slots
    assert abs(compute - 2063.01 * MiB) < 0.005 * compute


def test_without_flash_attention_the_attention_scores_can_outgrow_the_logits() -> None:
    small_vocab = ModelMemory((1000,) * 4, 100, 100, False, 1024, n_embd=4096, n_head=32,
                              n_vocab=32000)
    with_fa = estimate(small_vocab, 65536, 1, 0, flash_attention=True)
    without = estimate(small_vocab, 65536, 1, 0, flash_attention=False)
    assert with_fa.compute_ram == 4 * 512 * (32000 + 2 * 4096) + 4 * 32000
    assert without.compute_ram == 4 * 512 * (1 + 4 * 4096 + 65536 * 33) + 4 * 32000


def test_fit_layers_takes_the_most_that_fit() -> None:
    full = estimate(GEMMA, CELLS, SLOTS, GEMMA.all_layers).vram
    assert fit_layers(GEMMA, CELLS, SLOTS, full) == GEMMA.all_layers
    assert fit_layers(GEMMA, CELLS, SLOTS, full - 1) == len(GEMMA.layers)
    nine = estimate(GEMMA, CELLS, SLOTS, 9).vram
    assert fit_layers(GEMMA, CELLS, SLOTS, nine) == 9


def test_fit_layers_is_zero_when_the_compute_buffer_alone_does_not_fit() -> None:
    assert fit_layers(GEMMA, CELLS, SLOTS, 500 * MiB) == 0


def test_the_weights_llama_cpp_reports_replace_the_headers_in_the_same_proportion() -> None:
    est = estimate(GEMMA, CELLS, SLOTS, gpu_layers=9).with_weights(2 * 246587904)
    assert est.weights_gpu + est.weights_ram == 2 * 246587904
    assert est.weights_gpu == 2 * sum(GEMMA.layers[9:])


def test_a_draft_model_and_its_kv_go_where_the_layers_go() -> None:
    drafted = replace(GEMMA, draft_bytes=100 * MiB, draft_kv_bytes_per_cell=1024)
    on_cpu, plain_cpu = estimate(drafted, CELLS, SLOTS, 0), estimate(GEMMA, CELLS, SLOTS, 0)
    assert on_cpu.weights_ram - plain_cpu.weights_ram == 100 * MiB
    assert on_cpu.kv_ram - plain_cpu.kv_ram == 1024 * CELLS
    on_gpu, plain_gpu = estimate(drafted, CELLS, SLOTS, 1), estimate(GEMMA, CELLS, SLOTS, 1)
    assert on_gpu.weights_gpu - plain_gpu.weights_gpu == 100 * MiB
    assert on_gpu.kv_gpu - plain_gpu.kv_gpu == 1024 * CELLS
    assert on_gpu.ram == plain_gpu.ram
