"""The interactive chat: prompt_toolkit for the input line, rich for the answer.

Enter sends; Esc then Enter (or Alt+Enter) starts a new line. Ctrl-C during an answer
stops it (the connection is cut, the session stays); at the prompt it clears the line.
Ctrl-D or /exit leaves. /attach PATH attaches an image to the next message.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..errors import GPROChatError, ImageError
from ..images import Image, load_image
from ..log import Attachment, ConversationLog, LogError, data_dir
from ._common import repair_text
from ._conversation import Conversation, Target, exchange

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live

__all__ = ["run_session", "HELP"]

HELP = """\
Commands:
  /help          this help
  /system TEXT   use TEXT as the system prompt from now on (/system alone shows it,
                 /system off removes it)
  /attach PATH   attach an image (PNG, JPEG, WebP or GIF) to the next message;
                 repeat for several; they are sent with it, then no longer attached
                 (kept if the message gets no answer)
  /attach        list what is attached to the next message
  /attach clear  attach nothing to the next message
  /clear         start a new conversation (the system prompt and attachments stay)
  /exit          leave (Ctrl-D does too)
Enter sends the message; Esc then Enter (or Alt+Enter) starts a new line, and pasted
text keeps its lines. Ctrl-C stops an answer and keeps the session; at the prompt it
clears the line. Up and Down walk through earlier prompts."""

_REFRESH_SECONDS = 0.08  # re-render the Markdown at most this often while text streams


class _PlainOutput:
    """The answer as plain text, chunk by chunk, on stdout (not a terminal: a pipe, a file).

    Everything else (the banner, /help, errors) goes to stderr, with the prompt, so
    the pipe gets the answers only.
    """

    def __init__(self) -> None:
        self.out = sys.stdout

    def start(self) -> None:
        pass

    def write(self, chunk: str) -> None:
        self.out.write(chunk)
        self.out.flush()

    def stop(self) -> None:
        self.out.write("\n")
        self.out.flush()

    def note(self, text: str) -> None:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


class _Tail:
    """The last lines of a renderable that fit on the screen (the live region's content).

    rich's Live display cannot move the cursor above the top of the screen: once an
    answer is taller than the terminal, every refresh printed the whole answer again
    below the lines it could no longer reach, so the scrollback held it many times.
    """

    def __init__(self, renderable: Any) -> None:
        self.renderable = renderable

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.segment import Segment

        lines = console.render_lines(self.renderable, options, pad=False)
        keep = max(1, console.size.height - 1)  # one row for the cursor below the region
        for line in lines[-keep:]:
            yield from line
            yield Segment.line()


class _MarkdownOutput:
    """The answer rendered as Markdown while it streams (rich's Live display).

    While it streams, the live region shows the answer's last screenful; at the end the
    region is erased and the whole answer printed once, so the scrollback holds it once.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.text: list[str] = []
        self.live: Optional[Live] = None
        self.shown = 0.0

    def start(self) -> None:
        from rich.live import Live

        self.text = []
        self.live = Live(console=self.console, auto_refresh=False, transient=True)
        self.live.start()

    def write(self, chunk: str) -> None:
        self.text.append(chunk)
        now = time.monotonic()
        if now - self.shown >= _REFRESH_SECONDS:
            self._render()
            self.shown = now

    def _render(self) -> None:
        from rich.markdown import Markdown

        assert self.live is not None
        self.live.update(_Tail(Markdown("".join(self.text))), refresh=True)

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()  # transient: the region is erased
            self.live = None
            if self.text:
                from rich.markdown import Markdown

                self.console.print(Markdown("".join(self.text)))

    def note(self, text: str) -> None:
        self.console.print(text, style="dim", markup=False, highlight=False)


@contextlib.contextmanager
def _keys_not_echoed() -> Iterator[None]:
    """The terminal does not echo what is typed (Ctrl-C's ``^C`` included) while an
    answer is written: rich's live display pads each line to the full width, so an echo
    at the end of one wrapped onto a new line, and the display, one line lower than it
    knew, left the answer's first line on the screen twice. What is typed meanwhile
    is kept for the next prompt, which shows it."""
    try:
        import termios
    except ImportError:  # Windows: no echo to turn off this way
        yield
        return
    try:
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
    except (termios.error, OSError, ValueError):  # standard input is not a terminal
        yield
        return
    quiet = list(saved)
    quiet[3] &= ~termios.ECHO  # lflag
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(fd, termios.TCSANOW, saved)


def _history(path: Path) -> Any:
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        return FileHistory(str(path))
    except OSError:
        return InMemoryHistory()


async def run_session(
    target: Target, conversation: Conversation, log: Optional[ConversationLog],
    images: Optional[list[Image]] = None,
) -> None:
    """Prompt, answer, repeat, until /exit or Ctrl-D; ``images`` go with the first message."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.key_binding import KeyBindings

    bindings = KeyBindings()

    @bindings.add("escape", "enter")
    def _new_line(event: Any) -> None:
        event.current_buffer.insert_text("\n")

    output: _PlainOutput | _MarkdownOutput
    terminal: Any = None
    if sys.stdout.isatty():
        from rich.console import Console

        output = _MarkdownOutput(Console())
    else:
        from prompt_toolkit.output import create_output

        output = _PlainOutput()
        terminal = create_output(stdout=sys.stderr)  # the prompt on the terminal, not the pipe
    session: PromptSession[str] = PromptSession(
        history=_history(data_dir() / "prompt-history"),
        key_bindings=bindings,
        prompt_continuation=lambda width, line, wrapped: "." * (width - 1) + " ",
        output=terminal,
    )
    resumed = f", continuing {len(conversation.turns)} earlier turns" if conversation.turns else ""
    output.note(
        f"Chatting with {target.deployment} ({target.served_model or target.model or 'default model'}), "
        f"conversation "
        f"{conversation.id}{resumed}. /help for commands, Esc Enter for a new line, Ctrl-D to leave."
    )
    attached: list[Image] = list(images or [])
    if attached:
        output.note(_attached_text(attached))
    while True:
        try:
            line = await session.prompt_async("> ")
        except KeyboardInterrupt:
            continue
        except EOFError:
            return
        text = repair_text(line, "the message", output.note).strip()
        if not text:
            continue
        if text.startswith("/"):
            if not _command(text, conversation, output, attached):
                return
            continue
        log, answered = await _answer(target, conversation, text, log, output, attached)
        if answered:
            attached.clear()
        elif attached:
            output.note(f"{_count(attached)} still attached to the next message (/attach clear drops it).")


def _count(images: list[Image]) -> str:
    return "1 image" if len(images) == 1 else f"{len(images)} images"


def _attached_text(images: list[Image]) -> str:
    if not images:
        return "Nothing attached. /attach PATH attaches an image to the next message."
    lines = [f"Attached to the next message: {_count(images)}"]
    lines += [f"  {number}. {Attachment.of(image).describe()}" for number, image in enumerate(images, 1)]
    return "\n".join(lines)


def _attach(argument: str, attached: list[Image], output: _PlainOutput | _MarkdownOutput) -> None:
    if not argument:
        output.note(_attached_text(attached))
        return
    if argument.lower() in ("clear", "none", "off"):
        output.note(f"{_count(attached)} no longer attached." if attached else "Nothing was attached.")
        attached.clear()
        return
    if len(argument) > 1 and argument[0] == argument[-1] and argument[0] in "'\"":
        argument = argument[1:-1]  # a path pasted in quotes
    path = Path(argument).expanduser()
    try:
        image = load_image(path, where="attachment")
    except ImageError as exc:
        output.note(f"Error: {exc}; nothing attached")
        return
    attached.append(image)
    output.note(f"Attached {path.name}: {Attachment.of(image).describe()}; "
                f"{_count(attached)} {'goes' if len(attached) == 1 else 'go'} with the next message.")


def _command(
    text: str, conversation: Conversation, output: _PlainOutput | _MarkdownOutput,
    attached: list[Image],
) -> bool:
    """Run a /command; ``False`` means leave."""
    name, _, argument = text.partition(" ")
    argument = argument.strip()
    if name in ("/exit", "/quit"):
        return False
    if name == "/help":
        output.note(HELP)
    elif name == "/attach":
        _attach(argument, attached, output)
    elif name == "/clear":
        fresh = Conversation(system=conversation.system)
        conversation.id, conversation.turns = fresh.id, fresh.turns
        output.note(f"New conversation {conversation.id}.")
    elif name == "/system":
        if not argument:
            output.note(f"System prompt: {conversation.system!r}" if conversation.system
                        else "No system prompt. /system TEXT sets one.")
        elif argument.lower() in ("off", "none"):
            conversation.system = None
            output.note("System prompt removed.")
        else:
            conversation.system = argument
            output.note("System prompt set.")
    else:
        output.note(f"Unknown command {name}: /help lists them.")
    return True


async def _answer(
    target: Target, conversation: Conversation, prompt: str, log: Optional[ConversationLog],
    output: _PlainOutput | _MarkdownOutput, images: list[Image],
) -> tuple[Optional[ConversationLog], bool]:
    """One exchange; Ctrl-C cancels it. The log to use next (``None`` once it failed),
    and whether the message got an answer (then its images were sent and are done)."""
    loop = asyncio.get_running_loop()
    with _keys_not_echoed():
        output.start()
        turns = len(conversation.turns)
        task = asyncio.ensure_future(
            exchange(target, conversation, prompt, output.write, log, list(images))
        )
        previous = signal.getsignal(signal.SIGINT)
        try:
            loop.add_signal_handler(signal.SIGINT, task.cancel)  # Ctrl-C: stop this answer only
            handled = True
        except (NotImplementedError, RuntimeError):  # no loop signal handlers (Windows)
            handled = False
        try:
            await asyncio.wait({task})
        finally:
            if handled:
                loop.remove_signal_handler(signal.SIGINT)
                signal.signal(signal.SIGINT, previous)
            output.stop()
    answered = len(conversation.turns) > turns  # an answer, even a cut one, is in the history
    if task.cancelled():
        output.note("[answer stopped]")
        return log, answered
    failure = task.exception()
    if isinstance(failure, GPROChatError):
        output.note(f"Error: {target.explain(failure)}")
    elif isinstance(failure, LogError):
        output.note(f"Error: {failure}; the rest of this session is not logged")
        return None, answered
    elif failure is not None:
        raise failure
    return log, answered
