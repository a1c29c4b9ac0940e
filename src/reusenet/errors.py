"""The one exception type for mistakes a user can fix (bad paths, formats, names, values).

The CLI prints these as a single line and exits non-zero; anything else is a bug and keeps its traceback.
"""
import difflib


class UserError(ValueError):
    """Bad input: the message says what was wrong and what to do instead."""


def did_you_mean(word: str, choices, n: int = 3) -> str:
    """A ' Did you mean: a, b?' suffix for an unknown `word`, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)
    return f" Did you mean: {', '.join(close)}?" if close else ""
