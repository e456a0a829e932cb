"""A YAML file of options (--config, BATCHSCORE_CONFIG): read safely, keys checked, relative paths resolved."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .options import OPTION_NAMES

if TYPE_CHECKING:
    import yaml

# A config file holds a few dozen options: anything larger is not one (and is not read into memory whole).
MAX_CONFIG_BYTES = 1 << 20


def load_config_file(path: str) -> dict[str, Any]:
    """The options in a YAML file; anything that keeps it from being read is a ConfigError naming the fix."""
    import yaml

    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"Config file '{path}' not found; check the --config path.") from None
    except IsADirectoryError:
        raise ConfigError(f"Config file '{path}' is a folder; pass --config naming a YAML file.") from None
    except OSError as exc:
        raise ConfigError(
            f"Cannot read config file '{path}' ({exc.strerror or exc}); check the --config path."
        ) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"Config file '{path}' is larger than {MAX_CONFIG_BYTES >> 20} MiB, far more than a "
            "file of options; check the --config path."
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"Config file '{path}' is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8."
        ) from None
    try:
        data = yaml.load(text, Loader=_options_loader())  # noqa: S506 - a SafeLoader: plain values only
    except _AliasFound as exc:
        raise ConfigError(
            f"Config file '{path}' uses a YAML alias (*{exc.anchor}, line {exc.line}); write the "
            "value out: a file of options needs no aliases, and refusing them keeps a small file "
            "from expanding into gigabytes."
        ) from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
        raise ConfigError(f"Config file '{path}' is not valid YAML ({first}).") from None
    except RecursionError:
        raise ConfigError(
            f"Config file '{path}' nests too deeply to be a file of options; write one option: value per line."
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"Config file '{path}' must be a mapping of option: value.")
    unknown = [k for k in data if str(k).replace("-", "_") not in OPTION_NAMES]
    if unknown:
        raise ConfigError(
            f"Unknown key '{unknown[0]}' in config file '{path}'; known keys are: {', '.join(OPTION_NAMES)}."
        )
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _options_loader() -> type[yaml.SafeLoader]:
    import yaml

    class OptionsLoader(yaml.SafeLoader):
        """safe_load's loader (plain values only) that refuses aliases.

        An alias repeats a node without copying it: 354 bytes of nested aliases
        stand for billions of values, which any walk over them (a message
        quoting the value, a str() of it) expands. Counting expansions would
        need a limit to tune; options have no use for aliases at all.
        """

        def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise _AliasFound(event.anchor, event.start_mark.line + 1)
            return super().compose_node(parent, index)

    return OptionsLoader


class _AliasFound(Exception):
    def __init__(self, anchor: str, line: int) -> None:
        super().__init__(anchor)
        self.anchor, self.line = anchor, line


def resolve_paths(values: dict[str, Any], config_file: str) -> dict[str, Any]:
    """Relative paths in a config file are relative to the file's folder, so a job runs from any folder.

    `input` and `model` may also be Hub names (`user/name`): a relative value
    resolves only when it exists beside the file (a glob: when it matches there)
    or is explicitly relative (`./x`, `../x`); otherwise it is kept as given.
    `output` is always written where the file says.
    """
    folder = os.path.dirname(config_file)
    resolved = dict(values)
    for key in ("input", "model", "output"):
        value = values.get(key)
        if (
            not isinstance(value, str)
            or not value
            or "\0" in value
            or "://" in value
            or os.path.isabs(value)
            or value.startswith("~")
        ):
            continue
        there = os.path.normpath(os.path.join(folder, value))
        explicit = value in (".", "..") or value.startswith(("./", "../"))
        if key == "output" and values.get("output_format") == "iceberg":
            continue  # NAMESPACE.TABLE names a table in its catalog, not a path
        if key == "output" or explicit or _exists(there):
            resolved[key] = there
    if isinstance(values.get("models"), list):  # each model's path, like `model`
        resolved["models"] = [
            {**m, **resolve_paths({"model": m["model"]}, config_file)}
            if isinstance(m, dict) and isinstance(m.get("model"), str)
            else m
            for m in values["models"]
        ]
    return resolved


def _exists(path: str) -> bool:
    import glob

    if any(c in path for c in "*?["):
        return bool(glob.glob(path))
    return os.path.exists(path)
