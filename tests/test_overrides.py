"""Every key of every shipped config can be set on the command line, null included, and lands.

For each config, every leaf setting gets a different value of its declared type (another
Literal choice, null for an Optional, n + 1, a flipped bool, ...) given as `--group.key value`,
all in one command line; the parsed config must then hold each new value.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import types
import typing
from pathlib import Path

import lightning as L
import pytest
import yaml

from vinci.cli import GROUPS, parse_config
from vinci.data.datamodule import VinciDataModule

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(ROOT.glob("configs/**/*.yaml"))
UNSET = object()


def import_class(path: str):
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def init_hints(cls) -> dict:
    """Parameter name -> annotation of `cls.__init__` (dataclass fields for a dataclass)."""
    if dataclasses.is_dataclass(cls):
        return typing.get_type_hints(cls)
    hints = {}
    for klass in reversed(cls.__mro__):  # subclasses forward **kwargs to their parents' keywords
        init = klass.__dict__.get("__init__")
        if init is not None:
            try:
                hints.update(typing.get_type_hints(init))
            except TypeError:  # a builtin's __init__
                pass
    return hints


def changed(hint, value):
    """A value of type `hint` that differs from `value` (UNSET when there is none to give)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return changed(args[0], value)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and value is not None:
            return None  # the null override
        options = [a for a in args if a is not type(None)]
        for option in options:  # the member the current value belongs to
            candidate = changed(option, value) if fits(option, value) else UNSET
            if candidate is not UNSET:
                return candidate
        return changed(options[0], None)
    if origin is typing.Literal:
        return next((choice for choice in args if choice != value), UNSET)
    if hint is bool:
        return not value
    if hint is int:
        return (value or 0) + 1
    if hint is float:
        return (value or 0.0) + 0.25
    if hint in (str, Path) or hint is typing.Any:
        return f"{value}-x" if value else "x"
    if origin in (list, tuple) or hint in (list, tuple):
        items = list(value or [])
        if len(items) > 1:
            return items[:-1]
        inner = args[0] if args else str
        return items + [changed(inner, items[0] if items else None)]
    return UNSET


def fits(hint, value) -> bool:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(fits(a, value) for a in typing.get_args(hint))
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint) and not (hint is int and isinstance(value, bool))
    return value is not None


def nested_class(hint):
    """The dataclass or class_path-configured class a hint holds, if any."""
    for option in (hint, *typing.get_args(hint)):
        if dataclasses.is_dataclass(option):
            return option
    return None


def overrides(cls, settings: dict, prefix: str, out: dict) -> None:
    """Fill `out` with command-line key -> new value for every leaf of `settings` (args of `cls`)."""
    hints = init_hints(cls)
    for name, value in settings.items():
        key = f"{prefix}{name}"
        if name not in hints:
            raise AssertionError(f"{key}: not a parameter of {cls.__name__}")
        hint = hints[name]
        if isinstance(value, dict) and "class_path" in value:
            overrides(import_class(value["class_path"]), value.get("init_args") or {}, f"{key}.init_args.", out)
        elif isinstance(value, dict) and nested_class(hint) is not None:
            overrides(nested_class(hint), value, f"{key}.", out)
        elif value is None and nested_class(hint) is not None:  # a null group: setting one field fills it
            first = dataclasses.fields(nested_class(hint))[0]
            default = first.default_factory() if first.default_factory is not dataclasses.MISSING else first.default
            out[f"{key}.{first.name}"] = changed(typing.get_type_hints(nested_class(hint))[first.name], default)
        else:
            new = changed(hint, value)
            assert new is not UNSET, f"{key}: no other value for {hint}"
            out[key] = new


def config_overrides(config: dict) -> dict:
    classes = {"trainer": L.Trainer, "data": VinciDataModule}
    out: dict = {}
    for group, settings in config.items():
        if group == "seed_everything":
            out[group] = settings + 1
        elif isinstance(settings, dict) and "class_path" in settings:  # model and the callback groups
            overrides(import_class(settings["class_path"]), settings.get("init_args") or {}, f"{group}.init_args.", out)
        else:
            overrides(classes[group], settings, f"{group}.", out)
    return out


def as_arg(value) -> str:
    return "null" if value is None else json.dumps(value) if not isinstance(value, str) else value


def lookup(config, key: str):
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def plain(value):
    if isinstance(value, Path) or type(value).__name__ == "Path_fr":
        return str(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_key_of_every_config_can_be_overridden(config):
    loaded = yaml.safe_load(config.read_text())
    wanted = config_overrides(loaded)
    assert len(wanted) > 20  # every setting, not a sample
    args = ["--config", str(config)]
    for key, value in wanted.items():
        group = key.split(".", 1)[0]
        if group != "model":  # the callback groups in their short form: --sampler.temperature
            key = key.replace(f"{group}.init_args.", f"{group}.", 1)
        args += [f"--{key}", as_arg(value)]
    parsed = parse_config(args)
    wrong = {}
    for key, value in wanted.items():
        got = plain(lookup(parsed, key))
        if isinstance(got, str) and not isinstance(value, str):  # a Union that takes str first: "2" for 2
            got = yaml.safe_load(got)
        if got != value and not (isinstance(value, float) and got == pytest.approx(value)):
            wrong[key] = (value, got)
    assert not wrong, f"overrides that did not land (wanted, got): {wrong}"
    assert any(value is None for value in wanted.values())  # nulls are among them


def test_the_shorthand_and_null_reach_the_virl_step():
    virl = ROOT / "configs" / "virl.yaml"
    parsed = parse_config(["--config", str(virl), "--sampler.temperature", "0.8", "--sampler.num_samples", "8",
                           "--render.workers", "8", "--model.backbone.adapter", "null"])
    assert parsed.sampler.init_args.temperature == 0.8 and parsed.sampler.init_args.num_samples == 8
    assert parsed.render.init_args.workers == 8
    assert parsed.model.init_args.backbone.adapter is None  # not the string "None"
    assert parsed.model.init_args.temperature == 0.8  # linked from the sampler, set once


def test_every_callback_group_is_in_a_shipped_config():
    used = set()
    for config in CONFIGS:
        used |= set(yaml.safe_load(config.read_text()))
    assert {key for key, _ in GROUPS} <= used


@pytest.mark.parametrize("typo", ["--sampler.temperatur", "--render.worker", "--model.backbone.adaptr"])
def test_a_misspelt_key_is_rejected_by_name(typo, capsys):
    with pytest.raises(SystemExit):
        parse_config(["--config", str(ROOT / "configs" / "virl.yaml"), typo, "1"])
    assert typo.rsplit(".", 1)[-1] in capsys.readouterr().err


def test_signature_hints_are_resolvable():
    for _, callback in GROUPS:
        assert inspect.signature(callback.__init__)  # the groups' parameters are typed
