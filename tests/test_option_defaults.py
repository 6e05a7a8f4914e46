"""Each option stated once: a class's signature holds its defaults, `capdistill.config.store` puts them in the
config, and a `conf/loss` or `conf/allocator` option states only what it changes, saying why."""

from __future__ import annotations

import inspect
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_class
from omegaconf import OmegaConf

from capdistill.config.hydra_setup import CONF_DIR, setup
from capdistill.config.store import GROUPS, schemas
from capdistill.losses import DistillLoss


def signature_defaults(cls: type) -> dict[str, Any]:
    """The options the imported class takes and their defaults: a loss's settings as built with none given
    (mlot's OTSettings included); an allocator's constructors along the MRO, `**kwargs` followed to the parent."""
    if issubclass(cls, DistillLoss):
        return cls().settings()
    found: dict[str, Any] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        for p in params:
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in ("self", *GROUPS["allocator"][1]):
                found.setdefault(p.name, p.default)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return found
    return found


def target_of(path: Path, group: str) -> str:
    """The `_target_` an option file composes to: its own, or its base's (a `/schema/...` node or another option)."""
    own = OmegaConf.load(path)
    if "_target_" in own:
        return own["_target_"]
    base = next(str(d).split("@")[0] for d in own.get("defaults", []) if d != "_self_")
    if base.startswith("/schema/"):
        return schemas()[group][base.rsplit("/", 1)[1]]["_target_"]
    return target_of(path.with_name(f"{base}.yaml"), group)


def problems(conf_dir: Path) -> list[str]:
    """Each value a `loss` or `allocator` option file sets that its class's signature already gives, that the
    class does not take, or that differs from the signature's default with no comment on its line or the one
    above saying why."""
    found = []
    for group in GROUPS:
        for path in sorted((conf_dir / group).glob("*.yaml")):
            cls = get_class(target_of(path, group))
            defaults = signature_defaults(cls)
            lines = path.read_text().splitlines()
            for key, value in OmegaConf.to_container(OmegaConf.load(path)).items():
                if key in ("defaults", "_target_"):
                    continue
                where = f"{group}/{path.name}: {key}: {value!r}"
                row = next(i for i, line in enumerate(lines) if re.match(rf"{key}\s*:", line))
                said = "#" in lines[row] or (row > 0 and lines[row - 1].lstrip().startswith("#"))
                if key not in defaults:
                    found.append(f"{where} is not an option of {cls.__name__}")
                elif value == defaults[key]:
                    found.append(f"{where} repeats {cls.__name__}'s default: remove the line")
                elif not said:
                    found.append(f"{where} differs from {cls.__name__}'s default {defaults[key]!r} without a comment")
    return found


@pytest.mark.parametrize("group", list(GROUPS))
def test_the_store_reads_each_shipped_class_signature(group: str) -> None:
    """The nodes read from the source without importing it hold what the imported classes declare."""
    for name, node in schemas()[group].items():
        cls = get_class(node["_target_"])
        assert cls.name and cls.__name__ == name
        assert {k: v for k, v in node.items() if k != "_target_"} == signature_defaults(cls), name


def test_no_option_repeats_or_silently_contradicts_its_class_default() -> None:
    assert problems(CONF_DIR) == []


def test_the_check_finds_a_repeated_default_and_an_unexplained_value(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    with (conf / "loss" / "fkl.yaml").open("a") as f:
        f.write("temperature: 1.0\nce_weight: 0.5\nvocab_size: 64  # the teacher's padded rows\n")
    with (conf / "allocator" / "read_no_spillover.yaml").open("a") as f:
        f.write("\nkappa: 1.0\nbetta: 0.2\n")
    assert problems(conf) == [
        "loss/fkl.yaml: temperature: 1.0 repeats ForwardKLLoss's default: remove the line",
        "loss/fkl.yaml: ce_weight: 0.5 differs from ForwardKLLoss's default 0.0 without a comment",
        "allocator/read_no_spillover.yaml: kappa: 1.0 repeats ReadBandit's default: remove the line",
        "allocator/read_no_spillover.yaml: betta: 0.2 is not an option of ReadBandit",
    ]


def test_every_option_composes_to_every_effective_value() -> None:
    """`capdistill distill --cfg job allocator=read` (any option) prints each option its class takes: the
    signature's default unless the option file, or the option it extends, sets it."""
    setup()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        composed = {
            (group, path.stem): OmegaConf.to_container(compose("train", [f"{group}={path.stem}"])[group])
            for group in GROUPS
            for path in sorted((CONF_DIR / group).glob("*.yaml"))
        }
    for (group, option), node in composed.items():
        defaults = signature_defaults(get_class(node.pop("_target_")))
        assert node.keys() == defaults.keys(), f"{group}={option}"
    read = composed["allocator", "read"]
    assert read == signature_defaults(get_class("capdistill.allocation.bandit.ReadBandit"))
    assert read["proxy_units"] is None  # the paper's nats, as read.yaml always said
    assert composed["allocator", "greedy"] == read | {"kappa": 0.0, "warmup": 0}
    assert composed["allocator", "read_trust"] == read | {"trust_radius": 0.3}
    assert composed["allocator", "single"] == {"capability": None}  # given per run: allocator.capability=math
    assert composed["loss", "mlot"]["temperature"] == 2.0  # the DSKD-based code's, as mlot.yaml always said
