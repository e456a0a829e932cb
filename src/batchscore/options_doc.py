"""docs/options.md, generated from `OPTIONS` (options.py): the table can never drift from the CLI.

    python -m batchscore.options_doc docs/options.md    # what `make docs` runs
    python -m batchscore.options_doc                    # print it

Only `config` is imported (no torch, no transformers): it runs in a fraction of a second.
"""

from __future__ import annotations

import sys
from typing import Any

from .config import JobConfig
from .options import ENV_PREFIX, INT64_MAX, OPTIONS, Option

INTRO = """\
# Options

<!-- Generated from OPTIONS in src/batchscore/options.py by `make docs`
(python -m batchscore.options_doc docs/options.md): edit those, not this file. -->

Every option of `batchscore score` can be set three ways besides its built-in
default: on the command line, in an environment variable `BATCHSCORE_<NAME>`
(e.g. `BATCHSCORE_TOP_K=all`), and in a YAML file given with `--config FILE`
(or `BATCHSCORE_CONFIG`), keys with underscores (`top_k: all`);
`configs/default.yaml` lists each one with its default. Precedence:
**command line > environment > config file > built-in default**.
`batchscore score --help` prints the same list.

- An unknown key in a config file is an error naming the key (exit 2).
- A config file is UTF-8, at most 1 MiB, without YAML aliases (`&x` / `*x`).
- Whole numbers are ASCII digits up to 2^63−1 (`1e3`, `١٢` are refused, exit 2);
  no value may hold a NUL.
- Flags take `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`) in a config
  file or an environment variable; on the command line, `--flag` / `--no-flag`.
- Relative paths in a config file are relative to the file's folder: `output`
  always; `input` and `model` when the path exists there (a glob: when it
  matches there) or starts with `./` or `../`; otherwise they are kept as given,
  as a Hub name (`user/name`). Paths on the command line and in environment
  variables are relative to the current directory.

`--quiet`, `--verbose` and `--log-format` are also taken by `batchscore
finalize`, `batchscore manifest` and their environment variables.

"""

KINDS = {
    "str": "text",
    "int": "whole number, at least 0",
    "count": "whole number, at least 1",
    "bool": "flag",
    "columns": "column names, comma-separated (a list in YAML), or `all` / `none`",
    "prefix": "text without commas, spaces or control characters",
    "fraction": "number from 0 to 1 (decimal, e.g. `0.3` or `3e-1`)",
    "models": "a list of mappings (YAML; the env var: YAML text): `model`, `prefix`, and that model's own options",
}


def _cell(text: str) -> str:
    """Plain text for a Markdown table cell: no pipes, no HTML tags."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _flag(opt: Option) -> str:
    if opt.name == "input":
        return "`INPUT` (argument)"
    if opt.kind == "models":
        return "(config file or env; on the command line, `--model` several times)"
    if opt.kind == "bool":
        return f"`{opt.flag}` / `--no-{opt.flag[2:]}`"
    value = "|".join(opt.choices) if opt.kind == "choice" else opt.metavar
    names = ", ".join(([opt.short] if opt.short else []) + [opt.flag])
    return "`" + _cell(f"{names} {value}" if value else names) + "`"


def _default(opt: Option) -> str:
    value: Any = JobConfig.__dataclass_fields__[opt.name].default
    if opt.name == "input":
        return "required"
    if opt.kind == "models":
        return "none: one model (`model`)"
    if value is None and opt.kind == "columns":
        return "`all`"  # None: every input column
    if value is None:
        return "see meaning" if "Default:" in opt.help else "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"`{value}`"


def _value(opt: Option) -> str:
    if opt.kind == "choice":
        return "one of " + ", ".join(f"`{c}`" for c in opt.choices)
    text = KINDS[opt.kind]
    if opt.kind in ("int", "count") and opt.maximum != INT64_MAX:
        text += f", at most {opt.maximum:,}"
    return text


def render() -> str:
    assert all(o.envvar.startswith(ENV_PREFIX) for o in OPTIONS)
    lines = [
        "| option | config key | environment variable | value | default | meaning |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for opt in OPTIONS:
        lines.append(
            f"| {_flag(opt)} | `{opt.name}` | `{opt.envvar}` | {_value(opt)} | {_default(opt)} | {_cell(opt.help)} |"
        )
    return INTRO + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if not args:
        sys.stdout.write(text)
        return
    with open(args[0], "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
