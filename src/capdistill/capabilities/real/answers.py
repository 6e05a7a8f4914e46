"""Final answers in free-form model responses (chat models explain before they answer)."""

from __future__ import annotations

import re

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_REFUSAL = re.compile(
    r"\b(i can(?:no|')t|i cannot|i won'?t|i will not|i'?m sorry|i am sorry|i apologi[sz]e|i'?m (?:not )?(?:un)?able to"
    r"|i am (?:not )?(?:un)?able to|unable to (?:help|assist|provide)|can(?:no|')t (?:help|assist|provide)"
    r"|not (?:able|allowed) to (?:help|assist|provide)|as an ai|i must decline|i do not (?:condone|support)"
    r"|i don'?t (?:condone|support)|is (?:illegal|unethical|harmful))",
    re.IGNORECASE,
)


def last_number(text: str) -> str:
    """The last number in `text` (commas in thousands removed), or '' if there is none."""
    found = _NUMBER.findall(text.replace(",", ""))
    return found[-1] if found else ""


def yes_no(text: str) -> str:
    """'Yes' or 'No', whichever the response says first; '' if neither."""
    match = re.search(r"\b(yes|no)\b", text, re.IGNORECASE)
    return match.group(1).capitalize() if match else ""


def first_line(text: str) -> str:
    """The first non-empty line, without surrounding punctuation."""
    for line in text.splitlines():
        if line.strip():
            return line.strip().strip(".").strip()
    return ""


def is_refusal(text: str) -> bool:
    """Whether a response declines the request (keyword match over common refusal phrasings)."""
    return bool(_REFUSAL.search(text))


def code_block(text: str) -> str:
    """The first fenced code block of a response, or the whole response when it has none."""
    match = re.search(r"```(?:[a-zA-Z0-9_+-]*)\n(.*?)(?:```|$)", text, re.DOTALL)
    return match.group(1) if match else text
