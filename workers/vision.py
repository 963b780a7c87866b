"""Images in a prompt, through llama.cpp's mtmd library and the model's projector (mmproj).

On the prompt thread, an image is decoded (Pillow: PNG, JPEG, WebP, GIF's first frame), cut
into chunks together with the prompt's text by `mtmd_tokenize` (the text holds one marker per
image, where the template put it), and encoded by the projector into embeddings. The engine
then decodes those embeddings into the sequence's cells between steps: the only part that
touches the shared llama.cpp context. In a sequence's tokens an image is a run of one
placeholder id per position, negative and drawn from a hash of the image's bytes, so the
prompt cache matches a prefix only where the same image sits at the same place.
"""

from __future__ import annotations

import ctypes
import hashlib
from dataclasses import dataclass

import llama_cpp as llama
import llama_cpp.mtmd_cpp as mtmd
import numpy as np

from workers.images import ImageError, decode_rgb, placeholder


@dataclass
class EncodedImage:
    """One image chunk of a prompt, encoded: what the engine decodes into cells."""

    chunk: mtmd.mtmd_input_chunk_p  # our copy, freed by free()
    embeddings: np.ndarray  # n_tokens x n_embd, float32
    n_tokens: int

    def free(self) -> None:
        if self.chunk:
            mtmd.mtmd_input_chunk_free(self.chunk)
            self.chunk = None


@dataclass
class ImagePrompt:
    tokens: list[int]  # text tokens, and a run of placeholders for each image
    images: dict[int, EncodedImage]  # by the position of its first placeholder


class Projector:
    def __init__(self, path: str, model: llama.llama_model_p, n_threads: int,
                 use_gpu: bool) -> None:
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.n_threads = n_threads
        params.print_timings = False
        self.ctx = mtmd.mtmd_init_from_file(path.encode(), model, params)
        if not self.ctx:
            raise ValueError(f"unable to load the projector {path}")
        self.marker = mtmd.mtmd_default_marker().decode()
        self.n_embd = llama.llama_model_n_embd_inp(model)
        # Positions that are not one per token (Qwen2-VL's M-RoPE) would need their own
        # bookkeeping in the KV cache: such models are refused images for now.
        self.mrope = bool(mtmd.mtmd_decode_use_mrope(self.ctx))

    def prompt(self, text: str, images: list[bytes], add_special: bool,
               room: int) -> ImagePrompt:
        """The prompt's tokens with its images encoded (`text` holds a marker per image); a
        prompt of `room` positions or more fails before any image is encoded (the costly part,
        and a prompt with images is never cut)."""
        if self.mrope:
            raise ImageError("images are not supported for this model's position encoding "
                             "(M-RoPE)")
        bitmaps: list[mtmd.mtmd_bitmap_p] = []
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            bitmaps += (self._bitmap(data) for data in images)
            encoded = text.encode()
            spec = mtmd.mtmd_input_text(encoded, len(encoded), add_special, True)
            array = (mtmd.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
            rc = mtmd.mtmd_tokenize(self.ctx, chunks, ctypes.byref(spec), array, len(bitmaps))
            if rc == 1:
                raise ImageError(f"the prompt has {text.count(self.marker)} image markers "
                                 f"for {len(images)} images")
            if rc != 0:
                raise ImageError("the image could not be prepared for this model")
            if mtmd.mtmd_helper_get_n_tokens(chunks) >= room:
                raise ImageError("the input length exceeds the context length")
            return self._walk(chunks, images)
        finally:
            mtmd.mtmd_input_chunks_free(chunks)
            for bitmap in bitmaps:
                mtmd.mtmd_bitmap_free(bitmap)

    def _bitmap(self, data: bytes) -> mtmd.mtmd_bitmap_p:
        rgb = decode_rgb(data)
        pixels = rgb.tobytes()
        bitmap = mtmd.mtmd_bitmap_init(rgb.width, rgb.height,
                                       (ctypes.c_uint8 * len(pixels)).from_buffer_copy(pixels))
        mtmd.mtmd_bitmap_set_id(bitmap, hashlib.sha256(data).hexdigest().encode())
        return bitmap

    def _walk(self, chunks: mtmd.mtmd_input_chunks_p, images: list[bytes]) -> ImagePrompt:
        tokens: list[int] = []
        encoded: dict[int, EncodedImage] = {}
        pending = iter(images)
        try:
            for i in range(mtmd.mtmd_input_chunks_size(chunks)):
                chunk = mtmd.mtmd_input_chunks_get(chunks, i)
                kind = mtmd.mtmd_input_chunk_get_type(chunk)
                if kind == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                    n = ctypes.c_size_t()
                    ids = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                    tokens += ids[:n.value]
                elif kind == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                    image = self._encode(chunk)
                    encoded[len(tokens)] = image
                    tokens += [placeholder(next(pending))] * image.n_tokens
                else:
                    raise ImageError("audio input is not supported")
        except BaseException:
            for image in encoded.values():
                image.free()
            raise
        return ImagePrompt(tokens, encoded)

    def _encode(self, chunk: mtmd.mtmd_input_chunk_p) -> EncodedImage:
        n_tokens = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
        if mtmd.mtmd_input_chunk_get_n_pos(chunk) != n_tokens:
            raise ImageError("images are not supported for this model's position encoding")
        if mtmd.mtmd_encode_chunk(self.ctx, chunk) != 0:
            raise ImageError("the projector could not encode the image")
        out = mtmd.mtmd_get_output_embd(self.ctx)
        embeddings = np.ctypeslib.as_array(out, shape=(n_tokens * self.n_embd,)).copy()
        return EncodedImage(mtmd.mtmd_input_chunk_copy(chunk), embeddings, n_tokens)

    def decode(self, lctx: llama.llama_context_p, image: EncodedImage, pos: int, seq_id: int,
               n_batch: int) -> bool:
        """The image's embeddings into the sequence's cells from `pos` (the engine's thread)."""
        new_pos = llama.llama_pos(0)
        rc = mtmd.mtmd_helper_decode_image_chunk(
            self.ctx, lctx, image.chunk,
            image.embeddings.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), pos, seq_id,
            n_batch, ctypes.byref(new_pos), mtmd.mtmd_helper_post_decode_callback(), None)
        return rc == 0

    def close(self) -> None:
        if self.ctx:
            mtmd.mtmd_free(self.ctx)
            self.ctx = None
