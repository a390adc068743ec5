"""Values written as Hydra overrides, so that Hydra's parser reads them back unchanged."""

import re


def override_value(value) -> str:
    """A value as an override writes it: null, true, [1, 2]; a choice's strings are kept as
    Hydra's parser gave them (already escaped for an override)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(override_value(v) for v in value) + "]"
    return str(value)


def quoted(text: str) -> str:
    """text as a quoted override value that Hydra's parser reads back unchanged: quotes and
    the backslashes before a quote or at the end are escaped, nothing else is."""
    text = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
    text = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text)
    return f"'{text}'"
