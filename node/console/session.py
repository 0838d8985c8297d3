"""One console session, independent of the port: bytes in, bytes out, a clock.

The session turns the line editor's lines into commands: it checks the PIN for commands that
change state (prompting for it, with the lockout of `PinGuard`), refuses overlong lines,
suggests the closest command for a mistyped one, runs the command, writes its output as plain
ASCII lines of at most 80 columns, and audits every command. `tick()` runs the idle timeout
and the live `aim` display; `notice()` prints a message that did not come from typing (the
automatic config revert) without losing the line being typed.
"""

from __future__ import annotations

import difflib
import shlex
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node import __version__
from node.config import Config
from node.console.audit import AuditLog
from node.console.lineedit import Cancel, Line, LineEditor
from node.console.pin import PinError, PinGuard
from node.console.staged import StagedConfig
from node.console.system import Runner, run_command
from node.control import ControlError, query

WIDTH = 80
GARBAGE_HINT = 32  # dropped bytes before the console says the line speed may be wrong
Query = Callable[[Path, dict[str, Any]], dict[str, Any]]


class ActionError(Exception):
    """A command failed; the message is shown as `error: ...`."""


class ServiceDownError(ActionError):
    """The service does not answer on its control socket."""


class NotReportedError(ActionError):
    """The service does not know this control command (its subsystem is not in this build)."""


@dataclass
class Context:
    """What every session of one console shares."""

    cfg: Config
    state_dir: Path
    config_path: Path | None
    port: str
    guard: PinGuard
    audit: AuditLog
    staged: StagedConfig
    runner: Runner = run_command
    query: Query = query
    clock: Callable[[], float] = time.monotonic
    log_file: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def ask(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Ask the service; ServiceDownError, NotReportedError or ActionError if it cannot."""
        try:
            reply = self.query(self.state_dir, {"cmd": cmd, **args})
        except ControlError as e:
            raise ServiceDownError(f"service not running: {e}") from None
        if reply.get("ok"):
            return reply
        error = str(reply.get("error", "no answer"))
        if error.startswith("unknown command"):
            raise NotReportedError(f"{cmd}: not reported by the service in this build")
        raise ActionError(f"{cmd}: {error}")

    def service_up(self) -> bool:
        try:
            self.query(self.state_dir, {"cmd": "ping"})
        except ControlError:
            return False
        return True


def ascii_lines(text: str) -> list[str]:
    """One line of output as screen lines: printable ASCII only, at most 80 columns each
    (a longer line continues, indented, on the next)."""
    clean = "".join(c if " " <= c <= "~" else "?" for c in text.expandtabs(4)).rstrip()
    if len(clean) <= WIDTH:
        return [clean]
    return textwrap.wrap(
        clean, WIDTH, subsequent_indent="    ", break_on_hyphens=False, drop_whitespace=True
    )


def wrap(text: str, indent: int = 0) -> list[str]:
    return textwrap.wrap(text, WIDTH, subsequent_indent=" " * indent, break_on_hyphens=False) or [
        ""
    ]


Live = Callable[[], list[str]]


class Session:
    """Bytes from the terminal in (`feed`), bytes to it out (through `write`)."""

    def __init__(self, ctx: Context, write: Callable[[bytes], None]) -> None:
        from node.console.actions import COMMANDS

        self.ctx = ctx
        self.commands = COMMANDS
        self._write = write
        self.editor = LineEditor(ctx.cfg.console.max_line)
        self.unlocked = False
        self.last_input = ctx.clock()
        self._idle_reported = False
        self._pending: Callable[[str], list[str]] | None = None  # a prompt's continuation
        self._prompt_text = ""
        self._live: Live | None = None
        self._live_next = 0.0
        self._live_until = 0.0
        self._hinted = False

    # --- output ------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if data:
            self._write(data)

    def lines(self, lines: list[str]) -> None:
        out = "".join(part + "\r\n" for line in lines for part in ascii_lines(line))
        self.write(out.encode("ascii"))

    @property
    def prompt(self) -> str:
        if self._pending is not None:
            return self._prompt_text
        node = self.ctx.cfg.node.id[:24]
        return f"{node}{'#' if self.unlocked else '>'} "

    def show_prompt(self) -> None:
        self.write(self.prompt.encode("ascii", "replace") + self.editor.redraw())

    def banner(self) -> None:
        cfg = self.ctx.cfg
        service = "running" if self.ctx.service_up() else "NOT RUNNING (`service start` starts it)"
        if not self.ctx.guard.configured:
            access = "no PIN set on this unit: read-only"
        elif cfg.console.read_only_without_pin:
            access = "read-only; the PIN unlocks changes (`unlock`)"
        else:
            access = "locked: every command needs the PIN (`unlock`)"
        self.lines(
            [
                "",
                f"roadnode {__version__} console on {self.ctx.port}",
                f"node     {cfg.node.id}  {cfg.node.site}",
                f"service  {service}",
                f"access   {access}",
                "type `help` for the commands, `help CMD` for one",
            ]
        )
        self.show_prompt()

    def notice(self, lines: list[str]) -> None:
        """Print `lines` between prompts, then the prompt and the line typed so far again."""
        self.write(b"\r\n")
        self.lines(lines)
        self.show_prompt()

    # --- input -------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        for byte in data:
            self.last_input = self.ctx.clock()
            self._idle_reported = False
            if self._live is not None:  # any key ends the live display
                self._live = None
                self.lines(["(stopped)"])
                self.show_prompt()
                continue
            echo, event = self.editor.feed(byte)
            self.write(echo)
            if isinstance(event, Cancel):
                self._cancel()
            elif isinstance(event, Line):
                self._line(event)
        if self.editor.garbage >= GARBAGE_HINT and not self._hinted:
            self._hinted = True
            self.editor.take_garbage()
            baud = self.ctx.cfg.console.baud
            self.notice(
                [
                    f"(ignoring binary input: is the terminal set to {baud} baud, 8N1, no flow "
                    "control?)"
                ]
            )

    def _cancel(self) -> None:
        if self._pending is not None:
            self._pending = None
            self.editor.secret = False
            self.lines(["cancelled"])
        self.show_prompt()

    def _line(self, line: Line) -> None:
        if line.overlong:
            self.ctx.audit.record("overlong_line", limit=self.editor.max_line)
            self.lines([f"error: line longer than {self.editor.max_line} characters: ignored"])
            self._pending = None
            self.editor.secret = False
            self.show_prompt()
            return
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self.editor.secret = False
            self._output(pending, line.text)
        else:
            self.execute(line.text)
        self.show_prompt()

    def _output(self, fn: Callable[[str], list[str]], arg: str) -> None:
        try:
            self.lines(fn(arg))
        except ActionError as e:
            self.lines(wrap(f"error: {e}", 7))

    # --- commands ----------------------------------------------------------------------------

    def execute(self, text: str) -> None:
        try:
            words = shlex.split(text)
        except ValueError as e:
            self.lines([f"error: {e}"])
            return
        if not words:
            return
        name = words[0].lower()
        command = self.commands.get(name)
        if command is None:
            self.ctx.audit.record("unknown_command", length=len(text))
            close = difflib.get_close_matches(name, list(self.commands), n=1, cutoff=0.5)
            hint = f"; did you mean `{close[0]}`?" if close else "; type `help`"
            shown = name if len(name) <= 24 and name.isalnum() else "that"
            self.lines([f"unknown command {shown}{hint}"])
            return
        words[0] = name
        needs_pin = command.changes(words[1:]) or (
            not self.ctx.cfg.console.read_only_without_pin and not command.open_
        )
        if needs_pin and not self.unlocked:
            self._ask_pin(lambda: self._run(command, words))
            return
        self._run(command, words)

    def _run(self, command: Any, words: list[str]) -> list[str]:
        outcome, detail = "ok", ""
        try:
            out: list[str] = command.run(self, words[1:])
        except NotReportedError as e:
            outcome, detail, out = "not_available", str(e), wrap(str(e), 7)
        except ActionError as e:
            outcome, detail, out = "error", str(e), wrap(f"error: {e}", 7)
        except Exception as e:  # a command's bug must not take the console down
            outcome, detail = "fault", f"{type(e).__name__}: {e}"
            out = wrap(f"error: {type(e).__name__}: {e}", 7)
        self.ctx.audit.command(words, outcome, self.unlocked, detail)
        self.lines(out)
        return []

    # --- PIN ---------------------------------------------------------------------------------

    def _ask_pin(self, then: Callable[[], list[str]]) -> None:
        guard = self.ctx.guard
        if not guard.configured:
            self.ctx.audit.record("pin", outcome="no_pin_configured")
            self.lines(
                wrap(
                    "refused: no technician PIN is set on this unit (console.pin_hash), so "
                    "nothing that changes state can be done from the console",
                    9,
                )
            )
            return
        locked = guard.locked_for()
        if locked > 0:
            self.ctx.audit.record("pin", outcome="locked", locked_s=round(locked))
            self.lines([f"refused: too many wrong PINs; locked for {locked:.0f} s more"])
            return

        def check(pin: str) -> list[str]:
            if not pin:
                return ["cancelled"]
            try:
                result = guard.check(pin)
            except PinError as e:
                return [f"error: {e}"]
            if result.ok:
                self.ctx.audit.record("pin", outcome="ok")
                self.unlocked = True
                then()
                return []
            if result.locked_s > 0:
                self.ctx.audit.record("pin", outcome="locked_out", locked_s=round(result.locked_s))
                return [f"wrong PIN: locked for {result.locked_s:.0f} s"]
            self.ctx.audit.record("pin", outcome="wrong", left=result.left)
            return [f"wrong PIN ({result.left} more before a lockout)"]

        self.prompt_for("PIN: ", check, secret=True)

    def prompt_for(self, text: str, then: Callable[[str], list[str]], secret: bool = False) -> None:
        """Ask a question; `then(answer)` runs on the next line (Ctrl-C cancels)."""
        self._prompt_text = text
        self._pending = then
        self.editor.secret = secret

    def lock(self) -> None:
        self.unlocked = False

    # --- time --------------------------------------------------------------------------------

    def start_live(self, fn: Live, every_s: float = 1.0, for_s: float = 600.0) -> None:
        """Run `fn` every `every_s` and print its lines until a key is pressed."""
        now = self.ctx.clock()
        self._live = fn
        self._live_every = every_s
        self._live_next = now + every_s  # the caller printed the first lines itself
        self._live_until = now + for_s

    def tick(self) -> None:
        now = self.ctx.clock()
        if self._live is not None and now >= self._live_next:
            self._live_next = now + self._live_every
            if now >= self._live_until:
                self._live = None
                self.lines(["(stopped after 10 minutes)"])
                self.show_prompt()
            else:
                try:
                    self.lines(self._live())
                except ActionError as e:
                    self._live = None
                    self.lines([*wrap(f"error: {e}", 7), "(stopped)"])
                    self.show_prompt()
        idle = now - self.last_input
        if idle >= self.ctx.cfg.console.idle_timeout_s and not self._idle_reported:
            self._idle_reported = True
            busy = self.unlocked or self._pending is not None or self.editor.text or self._live
            if busy:
                self.ctx.audit.record("idle_timeout", idle_s=round(idle))
                self.unlocked = False
                self._pending = None
                self._live = None
                self.editor.secret = False
                self.editor.clear()
                self.notice([f"idle for {idle:.0f} s: locked"])
