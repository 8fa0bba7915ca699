"""What the package claims about itself: one version everywhere, the licence and citation files, and a wheel that
carries the typing markers, the shipped weights with their card, and the extras."""
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

import memclip

ROOT = Path(__file__).resolve().parents[1]


def test_one_version_in_the_package_the_changelog_and_the_citation():
    newest = re.search(r"^## (\d+\.\d+\.\d+)", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE).group(1)
    assert newest == memclip.__version__
    assert str(yaml.safe_load((ROOT / "CITATION.cff").read_text())["version"]) == memclip.__version__


def test_licence_and_citation():
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "src/memclip/pretrained/" in licence
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "MIT"
    assert citation["preferred-citation"]["authors"][0]["family-names"] == "Ibrahimi"
    assert {"Large Memory Layers with Product Keys", "Memory Layers at Scale"} <= {r["title"] for r in
                                                                                 citation["references"]}
    readme = (ROOT / "README.md").read_text()
    for key in ("@software{memclip", "@mastersthesis{ibrahimi2025finegrained", "@inproceedings{lample2019large",
                "@article{berges2024memory"):
        assert key in readme, key


@pytest.mark.slow
def test_the_wheel_carries_types_weights_card_licence_and_extras(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.py", "pyproject.toml", "requirements.txt", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("memclip-*.whl")
    assert wheel.name.startswith(f"memclip-{memclip.__version__}-")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("memclip/py.typed", "memory_layers/py.typed", "memclip_train/py.typed",
                 "memclip/pretrained/ViT-Tiny-8-synth.safetensors", "memclip/pretrained/ViT-Tiny-8-synth.json",
                 "memclip/pretrained/ViT-Tiny-8-synth.md", "memclip/model_configs/ViT-B-16-mem.json"):
        assert name in names, name
    info = f"memclip-{memclip.__version__}.dist-info"
    assert any(n.startswith(f"{info}/") and n.endswith("LICENSE") for n in names)
    metadata = zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode()
    assert "Requires-Python: >=3.11" in metadata
    for extra in ("wandb", "tensorboard", "clip-benchmark", "test"):
        assert f"Provides-Extra: {extra}" in metadata, extra
    assert "Requires-Dist: huggingface_hub" in metadata or "Requires-Dist: huggingface-hub" in metadata
