"""Write the settings table of docs/configuration.md from ``finerank.settings.Settings``.

    python docs/gen_configuration.py          # rewrite the table in place
    python docs/gen_configuration.py --check  # exit 1 if the page is stale (what the test does)

One row per field, grouped by the ``# --- section ---`` comments of the class; the meaning is
the field's ``description``, so a new setting is documented by describing it where it is
defined. ``tests/docs/test_configuration.py`` fails when the page and the class differ.
"""

from __future__ import annotations

import inspect
import re
import sys
import types
import typing
from pathlib import Path

PAGE = Path(__file__).resolve().parent / "configuration.md"
BEGIN = (
    "<!-- generated from finerank.settings.Settings by docs/gen_configuration.py; "
    "edit the class, then run that script -->"
)
END = "<!-- end of the generated table -->"


def _sections(settings_class) -> dict[str, str]:
    """Field name -> the ``# --- name ---`` section it is declared under."""
    section, found = "settings", {}
    for line in inspect.getsource(settings_class).splitlines():
        heading = re.match(r"\s*# -+ (.+?) -+\s*$", line)
        if heading:
            section = heading.group(1)
            continue
        field = re.match(r"\s{4}(\w+)\s*:", line)
        if field and field.group(1) in settings_class.model_fields:
            found[field.group(1)] = section
    return found


def _kind(info) -> str:
    annotation = info.annotation
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    args = [a for a in typing.get_args(annotation) if a is not type(None)] if optional else []
    if typing.get_origin(annotation) is typing.Literal or (
        args and typing.get_origin(args[0]) is typing.Literal
    ):
        literal = annotation if typing.get_origin(annotation) is typing.Literal else args[0]
        return " \\| ".join(f"`{value}`" for value in typing.get_args(literal))
    base = args[0] if args else annotation
    if typing.get_origin(base) is list:
        return "list (JSON or comma separated)"
    name = {str: "text", int: "integer", float: "number", bool: "true \\| false"}.get(base)
    if name is None:
        name = "path" if base is Path else getattr(base, "__name__", str(base))
    bounds = []
    for item in info.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(item, attr, None)
            if value is not None:
                bounds.append(f"{sign} {_number(value)}")
    return name + (f", {', '.join(bounds)}" if bounds else "")


def _number(value) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        if value >= 1 << 20 and value % (1 << 20) == 0:
            return f"{value >> 20} MiB"
        return f"{value:,}" if value >= 100_000 else str(value)
    return str(value)


def _default(info) -> str:
    if info.default_factory is not None:
        value = info.default_factory()
        return "none" if not value else f"`{value}`"
    value = info.default
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int | float):
        return _number(value)
    return f"`{value}`"


def table() -> str:
    """The generated markdown, one table per section."""
    from finerank.settings import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    sections = _sections(Settings)
    out: list[str] = []
    current = None
    for name, info in Settings.model_fields.items():
        if sections.get(name) != current:
            current = sections.get(name)
            out += ["", f"**{current}**", ""]
            out += ["| setting | environment variable | values | default | meaning |"]
            out += ["|---|---|---|---|---|"]
        meaning = " ".join((info.description or "").split()).replace("|", "\\|")
        row = [f"`{name}`", f"`{prefix}{name.upper()}`", _kind(info), _default(info), meaning]
        out.append("| " + " | ".join(row) + " |")
    return "\n".join(out[1:])


def render(page: str) -> str:
    """``page`` with the generated region replaced (appended if missing)."""
    region = f"{BEGIN}\n{table()}\n{END}"
    if BEGIN in page and END in page:
        head, rest = page.split(BEGIN, 1)
        return head + region + rest.split(END, 1)[1]
    return page.rstrip("\n") + "\n\n" + region + "\n"


def main(argv: list[str]) -> int:
    current = PAGE.read_text(encoding="utf-8")
    wanted = render(current)
    if "--check" in argv:
        if current != wanted:
            print(f"{PAGE} is stale: run python docs/gen_configuration.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
