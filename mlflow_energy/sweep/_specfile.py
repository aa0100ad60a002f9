"""Reading a sweep spec file: its size, its encoding and its nesting checked before the YAML is built.

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "s.yaml")
    >>> _ = open(path, "wb").write(b"name: caf\\xe9\\n")
    >>> read_text(path)
    Traceback (most recent call last):
    ...
    mlflow_energy.errors.ConfigError: spec='...s.yaml' is not allowed: expected a UTF-8 YAML file (byte 0xe9 at \
offset 9 is not UTF-8)
"""

from __future__ import annotations

from typing import Any

from mlflow_energy.errors import ConfigError

__all__ = ["MAX_SPEC_BYTES", "MAX_SPEC_DEPTH", "load_yaml", "read_text"]

#: A spec file is a few hundred bytes of YAML; refuse megabytes before parsing them.
MAX_SPEC_BYTES = 1_000_000
#: Deepest nesting of a valid spec is 5 (overrides > model > resolution > [H, W]).
MAX_SPEC_DEPTH = 10


def read_text(path: str) -> str:
    """The spec file's text: at most :data:`MAX_SPEC_BYTES`, UTF-8 (or with a UTF-8/UTF-16 byte-order mark)."""
    import codecs

    with open(path, "rb") as fh:
        raw = fh.read(MAX_SPEC_BYTES + 1)
    if len(raw) > MAX_SPEC_BYTES:
        raise ConfigError("spec", path, f"a YAML file of at most {MAX_SPEC_BYTES} bytes")
    encoding = "utf-8"
    for bom, enc in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if raw.startswith(bom):
            encoding = enc
            break
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        bad = raw[exc.start:exc.start + 1].hex()
        raise ConfigError("spec", path, f"a UTF-8 YAML file (byte 0x{bad} at offset {exc.start} is not "
                          f"{'UTF-8' if encoding.startswith('utf-8') else encoding.upper()})") from None


def load_yaml(path: str, text: str) -> Any:
    """Parse ``text``; its nesting is checked on the parser's events first (they need no recursion)."""
    import yaml

    def fail(exc: yaml.YAMLError | None, allowed: str = "valid YAML") -> ConfigError:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        return ConfigError("spec", path, allowed + (f" (line {line + 1})" if line is not None else ""))

    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_SPEC_DEPTH:
                    raise ConfigError("spec", path, f"YAML nested at most {MAX_SPEC_DEPTH} levels deep (line "
                                      f"{event.start_mark.line + 1} is deeper)")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise fail(exc) from None
    except RecursionError:  # pragma: no cover - the depth check comes first
        raise fail(None, f"YAML nested at most {MAX_SPEC_DEPTH} levels deep") from None
