"""A :class:`~memclip_train.params.TrainConfig` as a command line, and recipe files (``-c recipe.yaml``).

A config and its command line are two spellings of one thing: :func:`flag_values` gives the flags of a config that
differ from the defaults, as ``{"long-short-alpha": 0.8, "trainable": "visual", ...}`` (the values a recipe file
holds), and :func:`values_to_argv` turns such a mapping back into ``--flag value`` words. So every stage a program
builds as a typed config is still printed as the ordinary, copyable command, and
``parse_args(config.to_argv()) == config``.

A recipe file (YAML or JSON; timm's ``-c``) holds flag values under their flag names (``long-short-alpha`` or
``long_short_alpha``); flags given on the command line override the file's::

    python -m memclip_train.main -c configs/recipes/thesis-finetune.yaml --train-data ... --lr 2e-5
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set

from memclip.errors import InputError

TrainConfig = Any
"""A :class:`memclip_train.params.TrainConfig`; the config and its parser (``params.build_parser()``) are arguments,
so that this module, which params uses, imports nothing of params."""

CONFIG_FLAGS = ("-c", "--config")
"""The flag that names a recipe file."""


def _sections(config: TrainConfig) -> List[Any]:
    return [config.data, config.model, config.optim, config.task, config.logging, config.distributed]


def _flat(seed: Any, device: Any, sections: Sequence[Any]) -> Dict[str, Any]:
    """``{argparse dest: value}`` of every field of a config's sections, in the parser's terms."""
    values: Dict[str, Any] = {"seed": seed, "device": device}
    for section in sections:
        values.update({f.name: getattr(section, f.name) for f in dataclasses.fields(section)})
    values["no_progress"] = not values.pop("progress")
    return values


def _long_flag(action: argparse.Action) -> str:
    return next(flag for flag in action.option_strings if flag.startswith("--"))


def _flag_value(dest: str, value: Any) -> Any:
    """A field's value as its flag writes it: comma lists, ``KEY=VALUE`` lists, plain numbers and strings."""
    if value is None:
        return None
    if dest in ("memory", "aug_cfg"):
        return [f"{key}={_setting(dest, item)}" for key, item in value]
    if dest in ("trainable", "distill_trainable"):
        return ",".join(value)
    if dest == "report_to":
        return ",".join(value) or "none"
    if isinstance(value, tuple):
        return list(value)
    return value


def _setting(dest: str, value: Any) -> str:
    """One ``--memory`` or ``--aug-cfg`` value as its parser reads it back."""
    if dest == "memory":
        if isinstance(value, tuple):
            return ",".join(str(v) for v in value)
        return str(value).lower() if isinstance(value, bool) else str(value)
    return value if isinstance(value, str) and not _is_literal(value) else repr(value)


def _is_literal(text: str) -> bool:
    try:
        ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return False
    return True


def flag_values(config: TrainConfig, parser: argparse.ArgumentParser, always: Sequence[str] = ()) -> Dict[str, Any]:
    """The flags of ``config`` that differ from the defaults, ``{flag name without dashes: value}``, in the order of
    ``--help``; ``--train-data`` and the flags named in ``always`` (``"caption-key"``) even at their default."""
    values = _flat(config.seed, config.device, _sections(config))
    defaults = _flat(0, None, [type(section)() for section in _sections(config)])
    flags: Dict[str, Any] = {}
    for action in parser._actions:
        dest = action.dest
        if not action.option_strings or dest not in values or dest == "help":
            continue
        if values[dest] != defaults[dest] or dest == "train_data" or _long_flag(action)[2:] in always:
            flags[_long_flag(action)[2:]] = _flag_value(dest, values[dest])
    return flags


def _words(flag: str, action: argparse.Action, value: Any) -> List[str]:
    if action.nargs == 0:
        if not isinstance(value, bool):
            raise InputError(f"{flag} is a switch: give true or false, not {value!r}")
        return [flag] if value else []
    if value is None:
        return []
    if isinstance(value, list):
        if not value:
            return []
        if action.nargs in ("+", "*"):
            return [flag, *map(_word, value)]
        return [word for item in value for word in (flag, _word(item))]
    return [flag, _word(value)]


def _word(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def values_to_argv(values: Mapping[str, Any], parser: argparse.ArgumentParser, skip: Set[str] = frozenset(),
                   source: str = "the recipe") -> List[str]:
    """``{"long-short-alpha": 0.8, "distill": True, "memory": ["knn=8"]}`` -> ``["--long-short-alpha", "0.8",
    "--distill", "--memory", "knn=8"]``; flags whose dest is in ``skip`` are left out.

    Raises:
        ValueError: keys that are no training flag (all named, in one line), or a switch given a non-boolean.
    """
    actions = parser._option_string_actions
    unknown = [key for key in values if "--" + key.replace("_", "-") not in actions or key in ("help", "config")]
    if unknown:
        raise InputError(f"{source}: {', '.join(unknown)}: not flags of python -m memclip_train.main "
                         "(see its --help)")
    argv: List[str] = []
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        action = actions[flag]
        if action.dest not in skip:
            argv += _words(flag, action, value)
    return argv


SPELLED_OUT = ("model", "batch-size", "epochs", "lr", "wd")
"""Flags a printed command always shows, even at their default: what a reader looks for first."""


def to_argv(config: TrainConfig, parser: argparse.ArgumentParser) -> List[str]:
    """The command line (after ``python -m memclip_train.main``) that parses back into ``config``: the flags that
    differ from the defaults, and :data:`SPELLED_OUT`."""
    return values_to_argv(flag_values(config, parser, always=SPELLED_OUT), parser)


def read_recipe(path: Path) -> Dict[str, Any]:
    """A recipe file's flag values (YAML, or JSON by its ``.json`` suffix).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: it does not hold a mapping of flag names to values.
    """
    text = Path(path).read_text(encoding="utf-8")
    if Path(path).suffix == ".json":
        values = json.loads(text)
    else:
        import yaml

        values = yaml.safe_load(text)
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise InputError(f"-c {path}: a recipe file holds flag names and values (a mapping), not "
                         f"{type(values).__name__}")
    return values


def given_dests(argv: Sequence[str], parser: argparse.ArgumentParser) -> Set[str]:
    """The dests the command line sets, with those of their mutually exclusive groups (a file's ``warmup`` gives way
    to a command line's ``--warmup-fraction``)."""
    actions = parser._option_string_actions
    given = {actions[word.split("=", 1)[0]] for word in argv if word.split("=", 1)[0] in actions}
    dests = {action.dest for action in given}
    for group in parser._mutually_exclusive_groups:
        if any(action in given for action in group._group_actions):
            dests |= {action.dest for action in group._group_actions}
    return dests


def expand_recipe_file(argv: Sequence[str], parser: argparse.ArgumentParser) -> List[str]:
    """``argv`` with ``-c FILE`` replaced by the file's flags, less those the command line gives itself.

    Raises:
        FileNotFoundError, ValueError: the file is missing, unreadable or names unknown flags (one line).
    """
    argv = list(argv)
    found: Optional[int] = next((i for i, word in enumerate(argv) if word in CONFIG_FLAGS
                                 or word.startswith("--config=")), None)
    if found is None:
        return argv
    word = argv[found]
    if "=" in word:
        path, rest = word.split("=", 1)[1], argv[:found] + argv[found + 1:]
    else:
        if found + 1 >= len(argv):
            raise InputError(f"{word} needs a recipe file")
        path, rest = argv[found + 1], argv[:found] + argv[found + 2:]
    if not Path(path).is_file():
        raise FileNotFoundError(f"-c {path}: no such recipe file")
    return values_to_argv(read_recipe(Path(path)), parser, given_dests(rest, parser), source=f"-c {path}") + rest
