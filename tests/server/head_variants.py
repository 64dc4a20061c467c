"""Plain SIP heads with a few of their header lines varied, for the hypothesis tests that hold a reader of a plain
shape (server/splice.py) to the full parser: the same message through both must give the same answers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hypothesis import strategies as st

#: What "sep" puts between a varied header's name and its value, and what "case" makes of its value.
SEPARATORS = (":", " : ", ":  ", ": \t", ":\t")


def varied_head(draw: st.DrawFn, varied: set[str], start: str, values: Mapping[str, str],
                names: Mapping[str, Sequence[str]], extras: Sequence[str], body: str = "") -> str:
    """The message text: ``start``, then the header lines of ``values`` (name: value, in that order), then
    ``body``, with the parts named in ``varied`` changed: "order" (the lines shuffled), "drop" (one left out),
    "twice" (one repeated), "name" (one under another of its ``names``), "sep", "case" (one value's case or
    trailing space), "extra" (one of ``extras`` inserted), "end" (bare LF line ends), "utf8" (a non-ASCII name)."""
    lines = [start]
    order = list(values)
    if "order" in varied:
        order = draw(st.permutations(order))
    dropped = draw(st.sampled_from(order)) if "drop" in varied else ""
    twice = draw(st.sampled_from(order)) if "twice" in varied else ""
    renamed = draw(st.sampled_from(order)) if "name" in varied else ""
    spaced = draw(st.sampled_from(order)) if "sep" in varied else ""
    cased = draw(st.sampled_from(order)) if "case" in varied else ""
    for key in order:
        if key == dropped:
            continue
        name = draw(st.sampled_from(names[key])) if key == renamed else key
        sep = draw(st.sampled_from(SEPARATORS)) if key == spaced else ": "
        value = values[key]
        if key == cased:
            value = draw(st.sampled_from([value + " ", value + "\t", value.upper(), value.lower()]))
        lines.append(f"{name}{sep}{value}")
        if key == twice:
            lines.append(f"{name}{sep}{value}")
    if "extra" in varied:
        lines.insert(draw(st.integers(1, len(lines))), draw(st.sampled_from(extras)))
    end = "\n" if "end" in varied else "\r\n"
    text = end.join(lines) + end + end + body
    if "utf8" in varied:
        text = text.replace("alice", "al\u00efce")
    return text
