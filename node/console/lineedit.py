"""A line editor for dumb serial terminals (screen, minicom, picocom, PuTTY).

Fed one byte at a time, it echoes what a terminal expects and reports finished lines:

- CR, LF and CRLF each end a line (the LF of a CRLF does not end a second, empty one);
- backspace (0x08) and DEL (0x7f) erase the last character (echo `BS SP BS`);
- Ctrl-C cancels the line (echo `^C`), Ctrl-U erases it;
- printable ASCII is kept; escape sequences (arrow keys, function keys) are swallowed whole;
  every other byte (binary noise, a wrong baud rate's garbage, UTF-8) is dropped and counted;
- a line longer than `max_line` keeps its first `max_line` characters, rings the bell once,
  and is reported as overlong so the caller refuses it instead of running a truncated command;
- in `secret` mode (PIN entry) each character echoes as `*`.
"""

from __future__ import annotations

from dataclasses import dataclass

BS, DEL, CTRL_C, CTRL_U, ESC, CR, LF, BEL = 0x08, 0x7F, 0x03, 0x15, 0x1B, 0x0D, 0x0A, 0x07
ERASE = b"\x08 \x08"


@dataclass(frozen=True)
class Line:
    text: str
    overlong: bool = False


@dataclass(frozen=True)
class Cancel:
    """Ctrl-C: the line was thrown away."""


Event = Line | Cancel


class LineEditor:
    def __init__(self, max_line: int = 256) -> None:
        if max_line < 1:
            raise ValueError("LineEditor: max_line must be at least 1")
        self.max_line = max_line
        self.secret = False
        self.garbage = 0  # bytes dropped since the last `take_garbage()`
        self._buf: list[str] = []
        self._overlong = False
        self._after_cr = False
        self._esc = 0  # 0: none; 1: after ESC; 2: in a CSI/SS3 sequence

    @property
    def text(self) -> str:
        return "".join(self._buf)

    def clear(self) -> None:
        self._buf.clear()
        self._overlong = False
        self._esc = 0

    def take_garbage(self) -> int:
        n, self.garbage = self.garbage, 0
        return n

    def redraw(self) -> bytes:
        """What to print after a prompt to show the line typed so far."""
        return ("*" * len(self._buf) if self.secret else self.text).encode("ascii")

    def feed(self, byte: int) -> tuple[bytes, Event | None]:
        """One input byte → (bytes to echo, a finished line or a cancel, or None)."""
        after_cr, self._after_cr = self._after_cr, False
        if self._esc:
            return self._escape(byte), None
        if byte in (CR, LF):
            if byte == LF and after_cr:
                return b"", None  # the LF of a CRLF
            self._after_cr = byte == CR
            line = Line(self.text, self._overlong)
            self.clear()
            return b"\r\n", line
        if byte in (BS, DEL):
            if not self._buf:
                return b"", None
            self._buf.pop()  # an overlong line stays refused: its tail is lost (Ctrl-U)
            return ERASE, None
        if byte == CTRL_C:
            self.clear()
            return b"^C\r\n", Cancel()
        if byte == CTRL_U:
            echo = ERASE * len(self._buf)
            self.clear()
            return echo, None
        if byte == ESC:
            self._esc = 1
            return b"", None
        if 0x20 <= byte < 0x7F:
            if len(self._buf) >= self.max_line:
                bell = b"" if self._overlong else bytes([BEL])
                self._overlong = True
                return bell, None
            self._buf.append(chr(byte))
            return (b"*" if self.secret else bytes([byte])), None
        self.garbage += 1
        return b"", None

    def _escape(self, byte: int) -> bytes:
        if self._esc == 1:
            # ESC [ and ESC O start a sequence; any other byte ends a two-byte escape
            self._esc = 2 if byte in (0x5B, 0x4F) else 0
            return b""
        if 0x40 <= byte <= 0x7E:  # the final byte of the sequence
            self._esc = 0
        elif not 0x20 <= byte <= 0x3F:  # not a parameter byte: noise, give up the sequence
            self._esc = 0
            self.garbage += 1
        return b""
