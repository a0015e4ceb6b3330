"""Rows as users have them: each format's fields (renamed by data.columns), ShareGPT turns turned into
chat messages, and one check per row whose message is the same at validate time (qcompile imports this
part; it needs only the standard library) and at the start of the job."""

import json

FIELDS = {"alpaca": ("instruction", "input", "output"), "chat": ("messages",), "sharegpt": ("conversations",),
          "text": ("text",)}
REQUIRED = {"alpaca": ("instruction", "output"), "chat": ("messages",), "sharegpt": ("conversations",),
            "text": ("text",)}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system"}
CHAT_ROLES = ("system", "user", "assistant")


class RowError(ValueError):
    """One bad row: the message, the key it is about (for its column), and a hint."""

    def __init__(self, message: str, key: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message, self.key, self.hint = message, key, hint


def format_hint(row: dict, fmt: str, columns: dict) -> str | None:
    """The format a row with the wrong fields looks like, e.g. a ShareGPT file declared as chat."""
    for other, fields in REQUIRED.items():
        if other != fmt and all(f in row for f in fields):
            return f"the row looks like the {other} format: set data.format: {other}"
    return f"map your column names with data.columns (the {fmt} format reads {', '.join(FIELDS[fmt])})" \
        if not columns else None


def check_row(row, fmt: str, columns: dict) -> dict:
    """The row with the format's field names (columns renamed), checked; RowError when it is bad."""
    if not isinstance(row, dict):
        raise RowError(f"expected a JSON object for the {fmt} format, got {type(row).__name__}")
    fields = {name: columns.get(name, name) for name in FIELDS[fmt]}
    for name in REQUIRED[fmt]:
        if row.get(fields[name]) is None:
            shown = repr(fields[name]) + ("" if fields[name] == name else f" (data.columns.{name})")
            raise RowError(f"missing key {shown} for the {fmt} format", None, format_hint(row, fmt, columns))
    out = {name: row.get(column) for name, column in fields.items()}
    if fmt == "chat":
        check_messages(out["messages"], fields["messages"])
    elif fmt == "sharegpt":
        out["messages"] = sharegpt_messages(out.pop("conversations"), fields["conversations"])
    else:
        for name in FIELDS[fmt]:
            if out[name] is not None and not isinstance(out[name], str):
                raise RowError(f"{fields[name]!r} must be a string, got {type(out[name]).__name__}", fields[name])
    return out


def check_messages(messages, key: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise RowError(f"{key!r} must be a non-empty list of messages", key)
    for i, message in enumerate(messages):
        if isinstance(message, dict) and "from" in message and "value" in message and "role" not in message:
            raise RowError(f"{key}[{i}] has from/value, not role/content", key,
                           "the row looks like the sharegpt format: set data.format: sharegpt")
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise RowError(f"{key}[{i}] needs a string 'content'", key)
        if message.get("role") not in CHAT_ROLES:
            raise RowError(f"{key}[{i}].role must be system, user or assistant, got {message.get('role')!r}", key)
    if not any(m["role"] == "assistant" for m in messages):
        raise RowError(f"{key!r} has no assistant message to learn from", key)


def sharegpt_messages(turns, key: str) -> list:
    """ShareGPT turns ({from, value}) as chat messages ({role, content})."""
    if not isinstance(turns, list) or not turns:
        raise RowError(f"{key!r} must be a non-empty list of turns", key)
    messages = []
    for i, turn in enumerate(turns):
        if isinstance(turn, dict) and "role" in turn and "content" in turn and "from" not in turn:
            raise RowError(f"{key}[{i}] has role/content, not from/value", key,
                           "the row looks like the chat format: set data.format: chat")
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise RowError(f"{key}[{i}] needs a string 'value'", key)
        role = SHAREGPT_ROLES.get(str(turn.get("from")).lower())
        if role is None:
            raise RowError(f"{key}[{i}].from must be human, gpt, system, user or assistant, "
                           f"got {turn.get('from')!r}", key)
        messages.append({"role": role, "content": turn["value"]})
    if not any(m["role"] == "assistant" for m in messages):
        raise RowError(f"{key!r} has no gpt/assistant turn to learn from", key)
    return messages


def check_json_line(line: str, fmt: str, columns: dict) -> tuple[dict | None, RowError | None, int]:
    """A JSON lines row: (row, None, 0) or (None, error, its 1-based column)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        try:  # again without the line end, so an error at the end of the line points into it
            json.loads(line.rstrip("\r\n"))
        except json.JSONDecodeError as exc:
            return None, RowError(f"not valid JSON: {exc.msg}"), exc.colno
        return None, RowError("not valid JSON"), 1
    return checked(row, line, fmt, columns)


def checked(row, line: str, fmt: str, columns: dict) -> tuple[dict | None, RowError | None, int]:
    try:
        return check_row(row, fmt, columns), None, 0
    except RowError as exc:
        column = line.find(json.dumps(exc.key)) + 1 if exc.key else 0
        return None, exc, max(column, 1)


def plain_row_test(fmt: str, columns: dict):
    """A fast test that passes the rows check_row passes, for the formats of plain string fields
    (alpaca, text); None for the others. Rows it fails go through check_row for the message."""
    if fmt not in ("alpaca", "text"):
        return None
    required = [columns.get(f, f) for f in REQUIRED[fmt]]
    optional = [columns.get(f, f) for f in FIELDS[fmt] if f not in REQUIRED[fmt]]

    def ok(row) -> bool:  # plain loops: generators would double the cost per row
        if type(row) is not dict:
            return False
        for column in required:
            if type(row.get(column)) is not str:
                return False
        for column in optional:
            value = row.get(column)
            if value is not None and type(value) is not str:
                return False
        return True
    return ok


def scan_file(path: str, fmt: str, columns: dict, cap: int = 20) -> tuple[list, int]:
    """Check a local .jsonl or .json file row by row: ([(line, column, RowError)] for the first `cap` bad
    rows, number of bad rows). JSON lines are streamed in chunks of about 1 MB, each parsed in one call;
    a .json array's rows are numbered, with line 0."""
    if path.endswith(".json"):
        return scan_json_array(path, fmt, columns, cap)
    problems, bad, first_line = [], 0, 1
    fast = plain_row_test(fmt, columns)
    with open(path, "rb") as handle:
        while lines := handle.readlines(1 << 20):
            numbers = [first_line + i for i, line in enumerate(lines) if not line.isspace()]
            kept = lines if len(numbers) == len(lines) else [lines[n - first_line] for n in numbers]
            first_line += len(lines)
            try:
                rows = json.loads(b"[" + b",".join(kept) + b"]")
            except json.JSONDecodeError:
                rows = None  # some line is not JSON: check this chunk line by line
            for index, number in enumerate(numbers):
                if rows is not None and fast is not None and fast(rows[index]):
                    continue
                text = kept[index].decode("utf-8")
                if rows is None:
                    _, error, column = check_json_line(text, fmt, columns)
                else:
                    _, error, column = checked(rows[index], text, fmt, columns)
                if error is not None:
                    bad += 1
                    if len(problems) < cap:
                        problems.append((number, column, error))
    return problems, bad


def scan_json_array(path: str, fmt: str, columns: dict, cap: int) -> tuple[list, int]:
    problems, bad = [], 0
    with open(path, encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as exc:
            return [(exc.lineno, exc.colno, RowError(f"not valid JSON: {exc.msg}"))], 1
    if not isinstance(data, list):
        return [(1, 1, RowError("a .json data file holds a list of rows", None,
                                "write [ {...}, {...} ], or one object per line in a .jsonl file"))], 1
    for number, row in enumerate(data, start=1):
        try:
            check_row(row, fmt, columns)
        except RowError as exc:
            bad += 1
            if len(problems) < cap:
                exc.message = f"row {number}: {exc.message}"
                problems.append((0, 0, exc))
    return problems, bad
