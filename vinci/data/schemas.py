"""Row schemas: which columns hold the prompt, the answer and the image, read off one record.

Schemas (``schema="auto"`` picks the first whose column is present, in this order):

- ``sft``: ``messages``, a list of ``{role, content}`` turns. ``content`` is a string with
  ``<image>`` where the image goes (ms-swift / VinciCoder SFT) or a list of parts,
  ``{"type": "text", "text": ...}`` and ``{"type": "image"}`` (HF / TRL conversational); an
  image part may hold the image itself (``image``, ``image_url`` or ``url``).
- ``sharegpt``: ``conversations``, a list of ``{from, value}`` turns (``human`` / ``gpt``).
- ``rl``: ``problem`` (the prompt), ``answer`` (optional) (EasyR1 / VinciCoder RL).
- ``columns``: a mapping ``{prompt: COL, answer: COL, image: COL, language: COL}`` (prompt and
  image required) for any other table; given a mapping, ``auto`` uses it.

For the first three the image is in an ``images`` column (a list or a single reference) or an
``image`` column, unless the prompt's parts hold it inline. Both turn lists accept either key
pair (``role``/``content`` or ``from``/``value``); roles ``user``/``human`` ask and
``assistant``/``gpt``/``model``/``bot`` answer; system turns are ignored, and with several
exchanges the first user turn and the assistant turn after it are used. One image per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from vinci.data.errors import BadRowError

IMAGE = "<image>"
SCHEMAS = ("auto", "sft", "sharegpt", "rl", "columns")
TURNS = {"sft": "messages", "sharegpt": "conversations"}  # schema -> its turn-list column
COLUMN_KEYS = ("prompt", "answer", "image", "language")
USER, ASSISTANT = {"user", "human"}, {"assistant", "gpt", "model", "bot"}


@dataclass(frozen=True)
class Plan:
    """How to read every record of one table (decided once, from its column names)."""

    schema: str  # sft | sharegpt | rl | columns
    prompt: str  # column of the prompt (or of the turn list)
    answer: Optional[str]  # column of the answer (rl / columns); None for turn lists
    image: Optional[str]  # column of the image; None when the parts hold it inline
    language: Optional[str]  # column of an explicit language, when the table has one


@dataclass(frozen=True)
class Parsed:
    prompt: str  # the user text with exactly one "<image>"
    answer: Optional[str]  # None when the row has none (an RL row without a reference)
    image: Any  # the image reference (see vinci.data.images)
    prompt_field: str  # where the prompt came from, for error messages: "messages[1].content"
    answer_field: str  # where the answer is (or would be): "messages[2].content", "answer"
    image_field: str  # where the image came from: "images", "messages[1].content[0].image"
    language: Optional[str]  # the explicit language value, not yet checked; None: read the prompt


def resolve(columns: Sequence[str], schema: str, mapping: Optional[dict], file: str) -> Plan:
    """The plan for a table with these columns; BadRowError (row None) when it fits no schema."""
    if schema not in SCHEMAS:
        raise ValueError(f"schema must be one of {', '.join(SCHEMAS)}, got {schema!r}")
    if mapping is not None:
        unknown = set(mapping) - set(COLUMN_KEYS)
        if unknown:
            raise ValueError(f"columns: unknown keys {sorted(unknown)}; use {', '.join(COLUMN_KEYS)}")
        if schema not in ("auto", "columns"):
            raise ValueError(f"columns: a mapping is its own schema; drop schema={schema!r} or the mapping")
        schema = "columns"
    if schema == "auto":
        found = [s for s, col in (("sft", "messages"), ("sharegpt", "conversations"), ("rl", "problem")) if col in columns]
        if not found:
            raise BadRowError(file, None, "messages|conversations|problem", "missing field",
                              f"no 'messages' (sft), 'conversations' (sharegpt) or 'problem' (rl) column, and no "
                              f"columns: mapping; columns: {list(columns)}")
        schema = found[0]
    image = "images" if "images" in columns else "image" if "image" in columns else None
    language = "language" if "language" in columns else None
    if schema == "columns":
        if not mapping or "prompt" not in mapping or "image" not in mapping:
            raise ValueError("schema 'columns' needs a columns: mapping with at least 'prompt' and 'image'")
        missing = [mapping[k] for k in COLUMN_KEYS if k in mapping and mapping[k] not in columns]
        if missing:
            raise BadRowError(file, None, missing[0], "missing field", f"mapped column(s) {missing} not in {list(columns)}")
        return Plan("columns", mapping["prompt"], mapping.get("answer"), mapping["image"], mapping.get("language", language))
    prompt = TURNS.get(schema, "problem")
    if prompt not in columns:
        raise BadRowError(file, None, prompt, "missing field", f"schema {schema!r} needs a '{prompt}' column; "
                                                                f"columns: {list(columns)}")
    return Plan(schema, prompt, "answer" if schema == "rl" else None, image, language)


def parse(record: dict, plan: Plan, file: str, index: int) -> Parsed:
    """Prompt, answer and image reference of one record; BadRowError naming the field."""
    inline: list[tuple[str, Any]] = []
    if plan.schema in TURNS:
        prompt, answer, prompt_field, answer_field = _turns(record, plan.prompt, file, index, inline)
    else:
        prompt_field, answer_field = plan.prompt, plan.answer or "answer"
        prompt = _text(_field(record, plan.prompt, file, index), file, index, plan.prompt)
        answer = record.get(plan.answer) if plan.answer else None
        if answer is not None:
            answer = _text(answer, file, index, plan.answer)
    answer = answer if answer is None or answer.strip() else None
    count = prompt.count(IMAGE)
    if count > 1:
        raise BadRowError(file, index, prompt_field, "multiple images", f"{count} {IMAGE} placeholders")
    prompt = prompt if count == 1 else IMAGE + prompt
    image_field, image = _image(record, plan, inline, file, index)
    language = record.get(plan.language) if plan.language else None
    if language is not None:
        language = _text(language, file, index, plan.language)
    return Parsed(prompt, answer, image, prompt_field, answer_field, image_field, language)


def _field(record: dict, name: str, file: str, index: int) -> Any:
    value = record.get(name)
    if value is None:
        raise BadRowError(file, index, name, "missing field", "absent or null")
    return value


def _text(value: Any, file: str, index: int, field: str) -> str:
    if not isinstance(value, str):
        raise BadRowError(file, index, field, "bad field", f"expected text, got {type(value).__name__}")
    return value


def _turns(record: dict, column: str, file: str, index: int, inline: list) -> tuple[str, str, str, str]:
    """(prompt, answer, prompt field, answer field) of a turn list; inline images are appended to `inline`."""
    turns = _field(record, column, file, index)
    if not isinstance(turns, list):
        raise BadRowError(file, index, column, "bad field", "expected a list of turns")
    roles = [_role(t) for t in turns]
    if "user" not in roles:
        raise BadRowError(file, index, column, "missing field", "no user turn")
    user = roles.index("user")
    if "assistant" not in roles[user + 1:]:
        raise BadRowError(file, index, column, "missing field", "no assistant turn after the user turn")
    helper = roles.index("assistant", user + 1)
    key = "content" if turns[user].get("content") is not None else "value"
    prompt_field = f"{column}[{user}].{key}"
    prompt = _content(turns[user].get(key), file, index, prompt_field, inline)
    key = "content" if "content" in turns[helper] and turns[helper].get("value") is None else "value"
    field = f"{column}[{helper}].{key}"
    answer = turns[helper].get(key)
    if answer is None:
        raise BadRowError(file, index, field, "missing field", "absent or null")
    answer = _content(answer, file, index, field, [])
    if not answer.strip():
        raise BadRowError(file, index, field, "empty answer", "assistant turn is empty")
    return prompt, answer, prompt_field, field


def _role(turn: Any) -> Optional[str]:
    if not isinstance(turn, dict):
        return None
    role = turn.get("role") if turn.get("role") is not None else turn.get("from")
    role = role.lower() if isinstance(role, str) else None
    return "user" if role in USER else "assistant" if role in ASSISTANT else role


def _content(content: Any, file: str, index: int, field: str, inline: list) -> str:
    """A turn's text: a string as is, or a list of parts joined with "<image>" for image parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRowError(file, index, field, "bad field",
                          f"expected text or a list of parts, got {type(content).__name__}")
    pieces = []
    for i, part in enumerate(content):
        if isinstance(part, str):
            pieces.append(part)
            continue
        if not isinstance(part, dict):
            raise BadRowError(file, index, f"{field}[{i}]", "bad field", f"a part must be an object, got {type(part).__name__}")
        kind = part.get("type")
        held = [(k, part[k]) for k in ("image", "image_url", "url", "path") if part.get(k) is not None and k != "type"]
        if kind in ("image", "image_url") or (kind is None and held):
            pieces.append(IMAGE)
            if held:
                key, value = held[0]
                value = value.get("url", value) if isinstance(value, dict) and "url" in value else value
                inline.append((f"{field}[{i}].{key}", value))
        elif kind in ("text", None):
            text = part.get("text")
            pieces.append(_text(text if text is not None else "", file, index, f"{field}[{i}].text"))
        else:
            raise BadRowError(file, index, f"{field}[{i}].type", "bad field", f"unsupported part type {kind!r}")
    return "".join(pieces)


def _image(record: dict, plan: Plan, inline: list, file: str, index: int) -> tuple[str, Any]:
    """(field, reference) of the row's one image: inline parts first, else the image column."""
    if len(inline) > 1:
        raise BadRowError(file, index, inline[1][0], "multiple images", f"{len(inline)} inline images, vinci uses one per row")
    if inline:
        return inline[0]
    if plan.image is None:
        raise BadRowError(file, index, "images", "missing field", "no 'images' or 'image' column and no inline image")
    images = _field(record, plan.image, file, index)
    if not isinstance(images, (list, tuple)):
        images = [images]  # a single reference instead of a list
    if not images or images[0] is None:
        raise BadRowError(file, index, plan.image, "missing image", "no image listed")
    if len(images) > 1:
        raise BadRowError(file, index, plan.image, "multiple images", f"{len(images)} images, vinci uses one per row")
    return plan.image, images[0]
