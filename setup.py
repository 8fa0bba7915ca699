"""Packaging for memclip: product-key memory for open_clip vision towers.

Three packages live under src/: ``memory_layers`` (standalone product-key memory), ``memclip`` (the open_clip
extension) and ``memclip_train`` (command-line programs).
"""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def read_version() -> str:
    namespace: dict = {}
    exec((HERE / "src" / "memclip" / "version.py").read_text(), namespace)
    return namespace["__version__"]


LOGGERS = ["wandb", "tensorboard"]
BENCHMARK = ["clip_benchmark>=1.6"]


def read_requirements() -> list:
    lines = (HERE / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setup(
    name="memclip",
    version=read_version(),
    description="Product-key memory for CLIP vision transformers, trained by distillation (an open_clip extension)",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    python_requires=">=3.11",  # what the test suite runs on; torch 2.14 itself needs 3.10
    classifiers=[
        "License :: OSI Approved :: MIT License",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Typing :: Typed",
    ],
    package_dir={"": "src"},
    packages=find_packages(where="src"),
    package_data={
        "memclip": ["model_configs/*.json", "pretrained/*.json", "pretrained/*.safetensors", "pretrained/*.md",
                    "py.typed"],
        "memory_layers": ["py.typed"],
        "memclip_train": ["py.typed"],
    },
    include_package_data=True,
    install_requires=read_requirements(),
    extras_require={
        # The test extra holds what the tests exercise for real: W&B in offline mode, TensorBoard, clip_benchmark.
        "test": ["pytest>=7", *LOGGERS, *BENCHMARK],
        "kernels": ["triton>=2.2"],
        "wandb": ["wandb"],
        "tensorboard": ["tensorboard"],
        "clip_benchmark": BENCHMARK,
    },
    entry_points={
        "console_scripts": [
            "memclip-train=memclip_train.main:main",
        ],
    },
)
