"""Caption text helpers: the short caption of a long one (Long-CLIP's first-sentence convention)."""
from __future__ import annotations

import re

# Tokens that end in a period without ending a sentence.
ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "etc", "e.g", "i.e", "approx", "no", "fig",
    "inc", "ltd", "co", "corp", "u.s", "u.k", "a.m", "p.m", "ca", "cf", "al",
})
_END = re.compile(r"[.!?]+(?=[\s\"')\]]|$)")


def _is_abbreviation(text: str, end: int) -> bool:
    """Whether the period at ``end`` closes an abbreviation or an initial rather than a sentence."""
    start = end
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    word = text[start:end].strip("\"'([").lower()
    if word in ABBREVIATIONS:
        return True
    if len(word) == 1 and word.isalpha():
        return True  # an initial: "J. R. R. Tolkien"
    return bool(re.fullmatch(r"(?:[a-z]\.)+[a-z]", word))  # dotted acronyms: "u.s.a"


def first_sentence(caption: str) -> str:
    """The first sentence of ``caption``, stripped (Long-CLIP's short caption).

    A sentence ends at '.', '!' or '?' followed by whitespace, a closing quote/bracket or the end, except after an
    abbreviation ("e.g.", "Dr.") or an initial, and at a line break. A caption with no sentence end is returned
    whole (stripped); an empty caption gives ''.
    """
    text = caption.strip()
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    for match in _END.finditer(first_line):
        if match.group().startswith(".") and len(match.group()) == 1 and _is_abbreviation(first_line, match.start()):
            continue
        end = match.end()
        while end < len(first_line) and first_line[end] in "\"')]":
            end += 1
        return first_line[:end].strip()
    return first_line
