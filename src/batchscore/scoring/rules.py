"""What a run scores and how its results are named, known before any model loads: each model's rules.

A model's rules are its `ModelSpec` (the one record of its options) and the run's text column and token budget;
its head (heads.score_function of its config: softmax, sigmoid or none) completes them once the config is read, since a
multi-label head adds `labels`. The columns a run writes, and the input columns it may keep beside them, are
checked here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from ..errors import ConfigError, InputError
from .heads import SIGMOID, result_fields, result_names, window_fields

if TYPE_CHECKING:
    import pyarrow as pa

    from ..config import ModelSpec


@dataclass(frozen=True)
class ColumnHints:
    """How a message about columns names its fix: the CLI's options, or the library's arguments."""

    text_column: str  # the fix for a missing text column
    cli: bool  # a clash names --result-prefix and --keep-columns (the CLI), or result_prefix=... (the library)


CLI_HINTS = ColumnHints(text_column="Pass --text-column.", cli=True)
LIBRARY_HINTS = ColumnHints(text_column="Pass text_column=...", cli=False)


@dataclass(frozen=True, kw_only=True)
class ScoringRules:
    """One model's options and the run's text column and token budget; `head` once the model's config is read."""

    spec: ModelSpec
    text_column: str = "text"
    batch_tokens: int | None = None  # None: CPU_BATCH_TOKENS or GPU_BATCH_TOKENS by the device
    head: str | None = None  # the head's score function (heads.score_function); None: not known yet

    @property
    def prefix(self) -> str | None:
        return self.spec.prefix

    @property
    def windowed(self) -> bool:
        return self.spec.long_text == "window"

    @property
    def multi_label(self) -> bool:
        """A sigmoid head (multi_label_classification, or one label): each label is a yes/no of its own."""
        return self.head == SIGMOID

    def for_head(self, head: str) -> ScoringRules:
        """These rules for a model whose head applies `head` (heads.score_function of its config)."""
        return dataclasses.replace(self, head=head)

    @property
    def adds_head_columns(self) -> bool:
        """Whether the head adds result columns of its own (a multi-label head's `labels`)."""
        return self.result_names != dataclasses.replace(self, head=None).result_names

    @property
    def fields(self) -> list[pa.Field]:
        fields = result_fields(self.spec.top_k, self.prefix, self.multi_label)
        return fields + window_fields(self.prefix, self.spec.window_scores) if self.windowed else fields

    @property
    def result_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def check_columns(
        self,
        names: Iterable[Any],
        keep: Sequence[str] | None = None,
        id_column: str | None = None,
        hints: ColumnHints = LIBRARY_HINTS,
        text_type: pa.DataType | None = None,
    ) -> list[str]:
        """The input columns kept beside the results, in order: the id column, then `keep` (every column when
        None). Refuses a missing text, id or kept column, a text column of `text_type` that holds no text, and a
        kept column named like a result column."""
        names = [str(n) for n in names]
        listing = ", ".join(names)
        if self.text_column not in names:
            raise InputError(f"Column '{self.text_column}' not found; columns are: {listing}. {hints.text_column}")
        refused = not_text(text_type) if text_type is not None else None
        if refused is not None:
            raise InputError(
                f"Column '{self.text_column}' holds {refused}, not text; pass --text-column naming a string column."
            )
        if id_column is not None and id_column not in names:
            raise InputError(f"Column '{id_column}' not found; columns are: {listing}. Pass --id-column.")
        kept = list(names) if keep is None else list(keep)
        missing = [c for c in kept if c not in names]
        if missing:
            raise InputError(f"Column '{missing[0]}' not found; columns are: {listing}. Fix --keep-columns.")
        out = list(dict.fromkeys(([id_column] if id_column else []) + kept))
        results = self.result_names  # built once: a table may have a hundred thousand columns
        clash = [c for c in out if c in results]
        if clash:
            raise InputError(self._clash_message(clash[0], out, id_column, hints, results))
        return out

    def _clash_message(
        self, column: str, out: list[str], id_column: str | None, hints: ColumnHints, results: list[str]
    ) -> str:
        if not hints.cli:
            return (
                f"Input column '{column}' would clash with the result column of that name; "
                "pass result_prefix=..., e.g. result_prefix='pred_'."
            )
        # HF datasets nearly always have a `label` column: a prefix keeps it beside the prediction.
        import itertools

        prefix = self.prefix or ""
        candidates = itertools.chain(("pred_", "batchscore_"), (f"pred{i}_" for i in itertools.count(2)))
        names = result_names("all", multi_label=True)
        free = next(p for p in candidates if not any(p + name in out for name in names))
        fix = f"pass another --result-prefix, e.g. {free}" if prefix else f"pass --result-prefix {free}"
        if column != id_column:  # the id column is always kept
            others = ",".join(c for c in out if c not in results) or "none"
            fix += f" (or leave it out with --keep-columns {others})"
        given = f" (--result-prefix {prefix})" if prefix else ""
        return f"Input column '{column}' would clash with batchscore's output column of that name{given}; {fix}."


def rules_for(
    specs: Sequence[ModelSpec], text_column: str, batch_tokens: int | None, hints: ColumnHints = LIBRARY_HINTS
) -> list[ScoringRules]:
    """The rules of each model of a run, in order; refuses two models whose result columns share a name."""
    rules = [ScoringRules(spec=spec, text_column=text_column, batch_tokens=batch_tokens) for spec in specs]
    check_result_names(rules, hints)
    return rules


def check_result_names(rules: Sequence[ScoringRules], hints: ColumnHints = LIBRARY_HINTS) -> None:
    """Several models write side by side: no two may write a column of the same name (each needs its prefix)."""
    owner: dict[str, int] = {}
    for number, each in enumerate(rules, 1):
        # A head is not known before the load: the names any head may add are checked alike.
        for name in each.for_head(SIGMOID).result_names:
            if name in owner:
                prefix = each.prefix
                named = "--result-prefix" if hints.cli else "prefix"
                given = f"both have {named} {prefix}" if prefix else f"neither has a {named}"
                fix = (
                    "give each model its own --result-prefix, in the order of --model (or prefix: in a config "
                    "file's models list)"
                    if hints.cli
                    else "give each entry of models=[...] its own prefix, e.g. {'model': ..., 'prefix': 'a_'}"
                )
                raise ConfigError(
                    f"The results of model {owner[name]} and model {number} would both be named '{name}' ({given}); "
                    f"{fix}."
                )
            owner[name] = number


def not_text(kind: pa.DataType) -> pa.DataType | None:
    """The Arrow type (a dictionary's values) if a text column of this type is refused: bytes of any kind, lists,
    structs; None if its values are scored (strings, or numbers and the like as their string form)."""
    import pyarrow.types as t

    if t.is_dictionary(kind):
        kind = kind.value_type
    binary = t.is_binary(kind) or t.is_large_binary(kind) or t.is_fixed_size_binary(kind) or t.is_binary_view(kind)
    return kind if binary or t.is_nested(kind) else None
