"""The documentation keeps up with the code."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from node.config import Config

ROOT = Path(__file__).resolve().parent.parent


def test_every_config_key_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = []
    for section in dataclasses.fields(Config):
        if section.name == "schema_version":
            continue
        assert f"### [{section.name}]" in doc, f"section [{section.name}] not documented"
        body = doc.split(f"### [{section.name}]", 1)[1].split("\n### ", 1)[0]
        missing += [
            f"{section.name}.{f.name}"
            for f in dataclasses.fields(section.default_factory)  # type: ignore[arg-type]
            if f"| `{f.name}` |" not in body
        ]
    assert not missing, f"keys missing from docs/configuration.md: {missing}"


def test_readme_opens_with_the_two_commands() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    block = "\n".join(lines[:8])
    assert "make demo" in block
    assert "make test" in block


def test_config_example_in_docs_is_valid() -> None:
    import tomllib

    from node.configload import validate

    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    cfg = validate(tomllib.loads(example))
    assert cfg.node.id == "hn-cau-giay-07"
    assert cfg.capture.source == "picam://0"
