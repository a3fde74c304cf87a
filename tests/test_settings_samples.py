"""Every settings root has a commented `*.env.sample` beside it, and every sample parses.

A settings root is a class derived from common.settings.WRSettings (found in the source).
A sample's active lines are loaded into the environment of the root whose prefix they carry
and parsed; its commented `# NAME=value` examples must be settings of that root too, each a
valid value; and the sample names every setting (a secret by itself or by its `_FILE` twin).
"""

import ast
import importlib
import os
import re
from pathlib import Path

import pytest

from common.env_names import UnknownSettingError, known_names, unknown_names
from common.secret_files import FILE_SUFFIX
from common.settings import WRSettings
from tests.support import REPO

PACKAGES = ("common", "kiosk", "firmware_bridge", "gateway", "server", "storage", "protocol")
LINE = re.compile(r"^\s*(#\s*)?(WR_[A-Z0-9_]+)=(.*)$")


def _roots() -> dict[str, type[WRSettings]]:
    """Every settings root in the source, by its env prefix."""
    found: dict[str, type[WRSettings]] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if not isinstance(node, ast.ClassDef):
                    continue
                if not any(isinstance(b, ast.Name) and b.id == "WRSettings" for b in node.bases):
                    continue
                module = ".".join(path.relative_to(REPO).with_suffix("").parts)
                cls = getattr(importlib.import_module(module.removesuffix(".__init__")), node.name)
                found[cls.model_config["env_prefix"]] = cls
    return found


ROOTS = _roots()
SAMPLES = sorted(
    p
    for p in REPO.rglob("*.env.sample")
    if not {".venv", "node_modules", "var", ".git"} & set(p.relative_to(REPO).parts)
)


def _lines(sample: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The sample's active and commented-out (example) variables."""
    active: dict[str, str] = {}
    examples: dict[str, str] = {}
    for line in sample.read_text(encoding="utf-8").splitlines():
        m = LINE.match(line)
        if m:
            (examples if m.group(1) else active)[m.group(2)] = m.group(3)
    return active, examples


def _root_of(names: set[str]) -> tuple[str, type[WRSettings]]:
    """The settings root whose prefix every name carries (the longest matching prefix)."""
    prefixes = {max((p for p in ROOTS if n.startswith(p)), key=len, default="") for n in names}
    assert len(prefixes) == 1 and "" not in prefixes, f"names of several or no roots: {prefixes}"
    prefix = prefixes.pop()
    return prefix, ROOTS[prefix]


def _clear(monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    """Remove the environment's variables of `prefix`."""
    for name in list(os.environ):
        if name.upper().startswith(prefix):
            monkeypatch.delenv(name)


def test_settings_roots_are_found() -> None:
    """The source has the roots the project is made of (guards the discovery itself)."""
    assert {"WR_SERVER_", "WR_SCORES_", "WR_GATEWAY_", "WR_KIOSK_", "WR_BRIDGE_"} <= set(ROOTS)


def test_no_prefix_contains_another() -> None:
    """No root's prefix starts with another's (the shorter one would refuse the longer's)."""
    assert [(a, b) for a in ROOTS for b in ROOTS if a != b and b.startswith(a)] == []


def test_every_settings_root_has_a_sample() -> None:
    """Each root's prefix is the prefix of some sample's variables."""
    covered = {_root_of(set(a) | set(e))[0] for a, e in map(_lines, SAMPLES)}
    assert sorted(set(ROOTS) - covered) == []


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: str(p.relative_to(REPO)))
def test_sample_parses_and_names_only_known_settings(
    sample: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Active lines parse; every name (active or example) is a setting; examples are valid."""
    active, examples = _lines(sample)
    prefix, root = _root_of(set(active) | set(examples))
    extra = root.secret_extra
    assert unknown_names([*active, *examples], root, prefix, "__", extra) == []
    _clear(monkeypatch, prefix)
    for name, value in active.items():
        monkeypatch.setenv(name, value)
    root()
    for name, value in examples.items():
        if name.endswith(FILE_SUFFIX) and name.removesuffix(FILE_SUFFIX) in {*active, *examples}:
            continue  # a secret's file twin: the example path does not exist here
        with monkeypatch.context() as m:
            m.delenv(name.removesuffix(FILE_SUFFIX), raising=False)
            m.setenv(name, value)
            root()


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: str(p.relative_to(REPO)))
def test_sample_names_every_setting(sample: Path) -> None:
    """Every leaf setting of the root is in the sample, active or as an example."""
    active, examples = _lines(sample)
    prefix, root = _root_of(set(active) | set(examples))
    exact, _ = known_names(root, prefix, "__", root.secret_extra)
    names = {n.upper() for n in exact if not n.upper().endswith(FILE_SUFFIX)}
    leaves = {n for n in names if not any(o.startswith(n + "__") for o in names)}
    listed = {n.removesuffix(FILE_SUFFIX) for n in (*active, *examples)}
    assert sorted(leaves - listed) == []


@pytest.mark.parametrize("prefix", sorted(ROOTS))
def test_unknown_variable_is_refused_by_name(prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`<PREFIX>BOGUS=1` (and a section's unknown key) stops the root, naming the variable."""
    _clear(monkeypatch, prefix)
    monkeypatch.setenv(f"{prefix}BOGUS", "1")
    with pytest.raises(UnknownSettingError, match=f"{prefix}BOGUS"):
        ROOTS[prefix]()
    monkeypatch.delenv(f"{prefix}BOGUS")
    exact, _ = known_names(ROOTS[prefix], prefix)
    sections = [n for n in ROOTS[prefix].model_fields if any(
        e.startswith(f"{prefix}{n}__".lower()) for e in exact
    )]  # fmt: skip
    for section in sections:
        name = f"{prefix}{section.upper()}__BOGUS"
        with monkeypatch.context() as m:
            m.setenv(name, "1")
            with pytest.raises(UnknownSettingError, match=name):
                ROOTS[prefix]()


def test_a_secret_file_twin_is_a_known_name_and_a_plain_one_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WR_SERVER_MQTT__PASSWORD_FILE is read; WR_SERVER_HOST_FILE (not a secret) is refused."""
    from server.settings import ServerSettings

    _clear(monkeypatch, "WR_SERVER_")
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("WR_SERVER_MQTT__PASSWORD_FILE", str(secret))
    s = ServerSettings()
    assert s.mqtt.password is not None and s.mqtt.password.get_secret_value() == "s3cret"
    monkeypatch.setenv("WR_SERVER_HOST_FILE", str(secret))
    with pytest.raises(UnknownSettingError, match="WR_SERVER_HOST_FILE"):
        ServerSettings()


def test_an_old_flat_case_variable_names_its_new_section(monkeypatch: pytest.MonkeyPatch) -> None:
    """WR_SERVER_CASE_POLL_S (before sections) is refused with WR_SERVER_CASES__POLL_S."""
    from server.settings import ServerSettings

    _clear(monkeypatch, "WR_SERVER_")
    monkeypatch.setenv("WR_SERVER_CASE_POLL_S", "2")
    with pytest.raises(UnknownSettingError, match="did you mean WR_SERVER_CASES__POLL_S"):
        ServerSettings()
    monkeypatch.delenv("WR_SERVER_CASE_POLL_S")
    monkeypatch.setenv("WR_SERVER_CASES__POLL_S", "2")
    assert ServerSettings().cases.poll_s == 2
