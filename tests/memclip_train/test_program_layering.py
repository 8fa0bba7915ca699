"""The programs on top sit side by side: the demo, the study, the sweep and teacher pretraining import none of one
another; what they share lives below them (recipes, report, stages, worlds)."""
from pathlib import Path

from test_package_layering import SRC, imported_modules

PROGRAMS = ("memclip_train.demo", "memclip_train.study", "memclip_train.sweep", "memclip_train.pretrain")


def program_of(module: str) -> str:
    return next((program for program in PROGRAMS if module == program or module.startswith(program + ".")), "")


def test_demo_study_sweep_and_pretrain_import_none_of_one_another():
    crossings = []
    for path in (SRC / "memclip_train").rglob("*.py"):
        module = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        own = program_of(module)
        if not own:
            continue
        crossings += [f"{module} -> {name}" for name in sorted(imported_modules(path))
                      if program_of(name) not in ("", own)]
    assert not crossings, crossings


def test_the_shared_layers_import_no_program():
    shared = [SRC / "memclip_train" / "recipes.py", SRC / "memclip_train" / "worlds.py",
              SRC / "memclip_train" / "stages.py", *(SRC / "memclip_train" / "report").rglob("*.py")]
    for path in shared:
        assert not {name for name in imported_modules(path) if program_of(name)}, path
    assert Path(SRC / "memclip_train" / "report" / "bootstrap.py").is_file()
