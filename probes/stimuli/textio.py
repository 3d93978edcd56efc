"""Read a user's text file (JSONL stimuli) line by line as UTF-8, with errors that name the file, line and fix.

A file saved in another encoding (Latin-1/Windows-1252 from a spreadsheet, UTF-16 from a Windows shell
redirect) would otherwise fail with a bare ``UnicodeDecodeError`` and a byte offset. A UTF-8 byte-order
mark is accepted and dropped.

>>> import tempfile, pathlib
>>> f = pathlib.Path(tempfile.mkdtemp()) / "s.jsonl"
>>> _ = f.write_bytes('{"question": "caf\\u00e9"}\\n'.encode("latin-1"))
>>> list(read_lines(f))                                  # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
StimulusEncodingError: .../s.jsonl:1: not UTF-8 (byte 0xe9 at column 17) ...
"""

from __future__ import annotations

import codecs
import shlex
from collections.abc import Iterator
from pathlib import Path

from cotscope.errors import CotscopeError


class StimulusFormatError(CotscopeError):
    """A stimulus file has a line that cannot be read."""


class StimulusEncodingError(StimulusFormatError):
    """A stimulus file is not UTF-8."""


_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32LE"),
    (codecs.BOM_UTF32_BE, "UTF-32BE"),
    (codecs.BOM_UTF16_LE, "UTF-16LE"),
    (codecs.BOM_UTF16_BE, "UTF-16BE"),
)


def _fix(path: Path, source: str) -> str:
    out = path.with_name(f"{path.stem}.utf8{path.suffix}")
    return (
        f"re-encode it as UTF-8, e.g. `iconv -f {source} -t UTF-8 {shlex.quote(str(path))} > "
        f"{shlex.quote(str(out))}`, and load {out.name}"
    )


def read_lines(path: str | Path, what: str = "stimulus file") -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` (1-based, without the line ending) of a UTF-8 text file.

    Raises :class:`FileNotFoundError` for a missing file and :class:`StimulusEncodingError` naming the
    file, the line, the offending byte and an ``iconv`` command for anything that is not UTF-8.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist" + (" (it is a directory)" if path.is_dir() else ""))
    data = path.read_bytes()
    for bom, name in _WIDE_BOMS:
        if data.startswith(bom):
            raise StimulusEncodingError(
                f"{path}: the {what} is {name} (byte-order mark 0x{bom.hex()}), not UTF-8. Fix: {_fix(path, name[:-2])}"
            )
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the empty piece after the final newline
    for lineno, raw in enumerate(lines, start=1):
        if b"\x00" in raw:  # NUL bytes between letters: UTF-16/32 saved without a byte-order mark
            raise StimulusEncodingError(
                f"{path}:{lineno}: holds NUL bytes, so the {what} is UTF-16 or UTF-32, not "
                f"UTF-8. Fix: {_fix(path, 'UTF-16LE')}"
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            bad = raw[e.start : e.end]
            raise StimulusEncodingError(
                f"{path}:{lineno}: not UTF-8 (byte 0x{bad.hex()} at column {e.start + 1}); the {what} must be "
                f"UTF-8. Fix: if it was saved as Latin-1/Windows-1252 (spreadsheets, old editors), "
                f"{_fix(path, 'WINDOWS-1252')}"
            ) from None
        yield lineno, text.rstrip("\r")
