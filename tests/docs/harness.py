"""Run the examples of README.md and docs/*.md as written, and check what they print.

The convention (docs/development.md, "Examples are tests") in short:

- Runnable blocks: ```` ```console ```` (``$ `` commands, each followed by its output),
  ```` ```bash ```` / ```` ```sh ```` (a script; run in the page's shell session) and
  ```` ```python ```` (run in the page's Python namespace). ```` ```text ````, ```` ```json ````
  and unlabelled blocks are output: when one directly follows a runnable block (blank lines
  only between), it is what that block must print.
- Every page runs in a fresh directory holding the test models under their documented names
  (``./tiny-qwen3``, ``./tiny-qwen3-emb``, ``./tiny-bert``) and ``data/``; shell blocks share
  one bash session per page (variables carry over), Python blocks one namespace.
- ``finerank serve`` / ``finerank ui`` start in the background on a free port, the page's
  later ``localhost:PORT`` URLs are pointed at it, and it is stopped (SIGTERM, exit 0) at the
  end of the page.
- Output is compared line by line, whitespace-insensitively: ``...`` matches anything (a whole
  line of ``...``: any number of lines); numbers must match (floats to their printed precision
  or 1e-5); durations and rates (``12.3 s``, ``5.9 chunks/s``) may differ. JSON is compared as
  JSON: same keys, same list lengths, same values, except ids, timestamps and timings.
- Markers, an HTML comment on the line(s) before a block: ``<!-- docs-test: skip (reason) -->``,
  ``<!-- docs-test: exit=2 -->``, ``<!-- docs-test: timeout=600 -->``,
  ``<!-- docs-test: output -->`` (this block is the output of the runnable block above it, with
  prose between) and ``<!-- docs-test: any-output (reason) -->`` (run, do not compare output).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import queue
import re
import shlex
import signal
import socket
import subprocess
import threading
import time
import traceback
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

RUNNABLE = {"console": "console", "shell-session": "console", "bash": "shell", "sh": "shell"}
RUNNABLE |= {"shell": "shell", "python": "python", "py": "python"}
OUTPUT = {"", "text", "json", "output"}
MARKER = re.compile(r"<!--\s*docs-test:\s*(.*?)\s*-->")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w-]*)")
SERVER = re.compile(r"(?:^|&&\s*)(?P<cmd>finerank\s+(?P<kind>serve|ui)\b[^\n]*)$")
DEFAULT_PORTS = {"serve": 8000, "ui": 7860}
INSTALLS = re.compile(r"\b(pip3?|uv pip|apt-get|apt|conda) install\b")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
VOLATILE_KEYS = {"id", "created", "seconds", "root", "uptime", "elapsed"}
DURATION_UNITS = r"(?:ms|s|seconds|min|minutes|h|[\w-]+/s|/s|it/s|MiB|GiB|MB|GB)\b"


# --- parsing -----------------------------------------------------------------------------


@dataclass
class Block:
    """One fenced block of a page, its markers and (for runnable blocks) its expected output."""

    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    markers: list[str] = field(default_factory=list)
    expected: str | None = None  # the output block that follows, if any

    @property
    def kind(self) -> str | None:
        return RUNNABLE.get(self.lang)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    def marker(self, name: str) -> str | None:
        """The argument of marker ``name`` (``""`` if it has none), or None if absent."""
        for marker in self.markers:
            key, _, rest = marker.partition(" ")
            key, eq, value = key.partition("=")
            if key == name:
                return value if eq else rest.strip().strip("()")
        return None

    @property
    def skip_reason(self) -> str | None:
        return self.marker("skip")


def parse_page(text: str, page: str) -> list[Block]:
    """The fenced blocks of a markdown page, output blocks attached to their commands."""
    lines = text.splitlines()
    blocks: list[Block] = []
    pending: list[str] = []  # markers since the last block
    gap_is_blank = False  # only blank lines / markers since the last block
    index = 0
    while index < len(lines):
        line = lines[index]
        markers = MARKER.findall(line)
        if markers:
            pending.extend(markers)
            index += 1
            continue
        match = FENCE.match(line)
        if not match:
            if line.strip():
                gap_is_blank = False
            index += 1
            continue
        indent, fence = len(match["indent"]), match["fence"]
        body: list[str] = []
        index += 1
        while index < len(lines) and not lines[index].strip().startswith(fence):
            body.append(lines[index][indent:] if lines[index][:indent].isspace() else lines[index])
            index += 1
        block = Block(page, index - len(body), match["lang"].lower(), "\n".join(body), pending)
        previous = blocks[-1] if blocks else None
        is_output = block.lang in OUTPUT and previous is not None and previous.kind
        if is_output and (gap_is_blank or "output" in pending) and previous.expected is None:
            previous.expected = block.text
        else:
            blocks.append(block)
        pending = []
        gap_is_blank = True
        index += 1
    return blocks


def console_commands(text: str) -> list[tuple[str, str]]:
    """``(command, expected output)`` pairs of a console block (``$ `` prompts, ``\\`` joins)."""
    items: list[tuple[str, list[str]]] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("$ "):
            command = [line[2:]]
            while command[-1].rstrip().endswith("\\") and index + 1 < len(lines):
                index += 1
                command.append(lines[index])
            items.append(("\n".join(command), []))
        elif items:
            items[-1][1].append(line)
        index += 1
    return [(command, "\n".join(output)) for command, output in items]


# --- comparing output --------------------------------------------------------------------

TIMESTAMP = r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _clean(text: str) -> list[str]:
    lines = []
    for raw in ANSI.sub("", text).splitlines():
        line = raw.rsplit("\r", 1)[-1].rstrip()  # progress bars redraw with \r
        if line.strip():
            lines.append(line)
    return lines


def _line_pattern(expected: str) -> tuple[re.Pattern, list[str | None]]:
    """A regex for one expected line; its groups are the numbers to compare (None: any)."""
    parts: list[str] = []
    numbers: list[str | None] = []
    position = 0
    tokens = re.finditer(
        rf"(?P<dots>\.\.\.|…$)|(?P<stamp>{TIMESTAMP}|{UUID})|(?P<num>{NUMBER.pattern})(?P<unit>\s*{DURATION_UNITS})?"
        r"|(?P<space>\s+)|(?P<box>([━─═]))(?P=box)*",
        expected,
    )
    for token in tokens:
        parts.append(re.escape(expected[position : token.start()]))
        position = token.end()
        if token["dots"]:
            parts.append(".*?" if token["dots"] == "..." else "…")
        elif token["stamp"]:
            parts.append(f"(?:{TIMESTAMP}|{UUID})")
        elif token["num"] is not None:
            volatile = token["unit"] is not None
            parts.append(rf"({NUMBER.pattern})")
            numbers.append(None if volatile else token["num"])
            if token["unit"]:
                parts.append(r"\s*" + re.escape(token["unit"].strip()))
        elif token["space"]:
            parts.append(r"\s+")
        else:
            parts.append(re.escape(token["box"]) + "+")
    parts.append(re.escape(expected[position:]))
    return re.compile("".join(parts)), numbers


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _numbers_match(expected: str, actual: str) -> bool:
    if "." not in expected and "e" not in expected.lower():
        return expected.replace(",", "") == actual.replace(",", "")
    decimals = len(expected.split(".", 1)[1]) if "." in expected else 0
    tolerance = max(1e-5, 0.51 * 10.0**-decimals) if decimals < 6 else 1e-5
    return math.isclose(_number(expected), _number(actual), rel_tol=1e-5, abs_tol=tolerance)


def _line_matches(expected: str, actual: str) -> bool:
    pattern, numbers = _line_pattern(expected.strip())
    match = pattern.fullmatch(actual.strip())
    if not match:
        return False
    return all(
        want is None or _numbers_match(want, got)
        for want, got in zip(numbers, match.groups(), strict=True)
    )


def _lines_match(expected: list[str], actual: list[str]) -> bool:
    """Line-wise match where an expected line ``...`` covers any number of actual lines."""
    memo: dict[tuple[int, int], bool] = {}

    def match(i: int, j: int) -> bool:
        if (i, j) in memo:
            return memo[i, j]
        if i == len(expected):
            result = j == len(actual)
        elif expected[i].strip() == "...":
            result = any(match(i + 1, k) for k in range(j, len(actual) + 1))
        else:
            result = (
                j < len(actual) and _line_matches(expected[i], actual[j]) and match(i + 1, j + 1)
            )
        memo[i, j] = result
        return result

    return match(0, 0)


def _lines_in_order(expected: list[str], actual: list[str]) -> bool:
    """Each expected line matches some actual line, in order (other lines in between)."""
    position = 0
    for want in expected:
        if want.strip() == "...":
            continue
        while position < len(actual) and not _line_matches(want, actual[position]):
            position += 1
        if position == len(actual):
            return False
        position += 1
    return True


def _json_values(text: str) -> list | None:
    """The JSON values printed one after another in ``text``, or None if it is not JSON."""
    decoder = json.JSONDecoder()
    values, position, text = [], 0, text.strip()
    while position < len(text):
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            return None
        values.append(value)
        position = end
        while position < len(text) and text[position].isspace():
            position += 1
    return values or None


def _volatile(key: str) -> bool:
    return key in VOLATILE_KEYS or key.endswith(("_ms", "_seconds", "_s"))


def _same_kind(expected, actual) -> bool:
    """Volatile values (ids, times) only need the documented kind of value."""
    if expected is None or actual is None or expected == "...":
        return True
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return True
    return type(expected) is type(actual)


def json_diff(expected, actual, path: str = "$") -> str | None:
    """Why ``actual`` does not match ``expected`` (None: it does); see the module doc."""
    if expected == "...":
        return None
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{path}: expected an object, got {type(actual).__name__}"
        extra_allowed = "..." in expected
        wanted = {k: v for k, v in expected.items() if k != "..."}
        missing = [k for k in wanted if k not in actual]
        extra = [k for k in actual if k not in wanted]
        if missing or (extra and not extra_allowed):
            return f"{path}: keys differ: missing {missing}, unexpected {extra}"
        for key, value in wanted.items():
            if _volatile(key) or path.endswith(".timings_ms"):
                if not _same_kind(value, actual[key]):
                    return f"{path}.{key}: expected a {type(value).__name__}"
                continue
            problem = json_diff(value, actual[key], f"{path}.{key}")
            if problem:
                return problem
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return f"{path}: expected a list, got {type(actual).__name__}"
        open_ended = bool(expected) and expected[-1] == "..."
        wanted = expected[:-1] if open_ended else expected
        if len(actual) < len(wanted) or (not open_ended and len(actual) != len(wanted)):
            return f"{path}: expected {len(wanted)} items, got {len(actual)}"
        for index, value in enumerate(wanted):
            problem = json_diff(value, actual[index], f"{path}[{index}]")
            if problem:
                return problem
        return None
    if isinstance(expected, bool) or expected is None:
        return None if expected is actual else f"{path}: expected {expected!r}, got {actual!r}"
    if isinstance(expected, int | float):
        if isinstance(actual, bool) or not isinstance(actual, int | float):
            return f"{path}: expected a number, got {actual!r}"
        if isinstance(expected, int) and isinstance(actual, int):
            return None if expected == actual else f"{path}: expected {expected}, got {actual}"
        if math.isclose(expected, actual, rel_tol=1e-5, abs_tol=1e-5):
            return None
        return f"{path}: expected {expected}, got {actual}"
    if isinstance(expected, str):
        if not isinstance(actual, str):
            return f"{path}: expected a string, got {actual!r}"
        if expected.endswith("...") and actual.startswith(expected[:-3]):
            return None
        if "..." in expected and re.fullmatch(
            ".*?".join(map(re.escape, expected.split("..."))), actual, flags=re.S
        ):
            return None
        return None if expected == actual else f"{path}: expected {expected!r}, got {actual!r}"
    return f"{path}: unexpected {expected!r}"


def output_diff(expected: str, actual: str) -> str | None:
    """Why ``actual`` output does not match the documented ``expected`` (None: it does)."""
    want_json = _json_values(expected)
    if want_json is not None:
        got_json = _json_values(ANSI.sub("", actual))
        if got_json is None:
            return f"expected JSON, got:\n{actual}"
        if len(got_json) != len(want_json):
            return f"expected {len(want_json)} JSON values, got {len(got_json)}:\n{actual}"
        for want, got in zip(want_json, got_json, strict=True):
            problem = json_diff(want, got)
            if problem:
                return f"{problem}\nactual output:\n{actual}"
        return None
    if _lines_match(_clean(expected), _clean(actual)):
        return None
    return f"expected:\n{expected}\n--- actual:\n{actual}"


# --- running -----------------------------------------------------------------------------


class ExampleFailure(AssertionError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class BackgroundServer:
    kind: str
    doc_port: int
    port: int
    pid: int
    log: Path


def _ready(port: int, probe: str, kind: str, log: Path) -> bool:
    """Up and loaded: ``probe`` answers 200; behind a key (401), the log says ready."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{probe}", timeout=5) as response:
            return response.status == 200
    except urllib.error.HTTPError as error:
        if error.code not in (401, 403):
            return False
        return kind == "ui" or "finerank ready" in log.read_text(errors="replace")
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


class ShellSession:
    """One bash process per page: commands run in order, variables and cwd carry over."""

    END = "__DOCS_TEST_END__"

    def __init__(self, cwd: Path, env: dict[str, str]):
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def run(self, script: str, *, timeout: float, stop_on_error: bool) -> tuple[int, str]:
        """Run ``script``; its exit status (first failing command with ``stop_on_error``)."""
        assert self.proc.stdin is not None
        check = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
        if check.returncode != 0:
            raise ExampleFailure(
                f"not a shell script (a synopsis belongs in ```text): {check.stderr.strip()}"
            )
        trap = "trap 'return $?' ERR; " if stop_on_error else ""
        # a function, so that `return` ends the script at its first failure (ERR trap) while
        # variables it sets stay in the session; stdin is closed to the script's commands
        wrapped = (
            f"__docs_block() {{\n{trap}\n{script}\n}}\n"
            f"__docs_block < /dev/null; __status=$?; trap - ERR; "
            f"printf '\\n{self.END} %d\\n' \"$__status\"\n"
        )
        self.proc.stdin.write(wrapped)
        self.proc.stdin.flush()
        output: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.close()
                raise ExampleFailure(
                    f"timed out after {timeout:.0f} s; output so far:\n" + "".join(output)
                ) from None
            if line is None:
                raise ExampleFailure("the shell exited; output:\n" + "".join(output))
            if line.startswith(self.END):
                text = "".join(output)
                return int(line.split()[1]), text[:-1] if text.endswith("\n") else text
            output.append(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


class PageRunner:
    """Runs one page's blocks in order in ``workspace`` (see the module doc)."""

    def __init__(self, workspace: Path, env: dict[str, str]):
        self.workspace = workspace
        self.env = env
        self.shell = ShellSession(workspace, env)
        self.namespace: dict = {"__name__": "__docs__"}
        self.servers: dict[int, BackgroundServer] = {}
        self.ran = 0

    # ports ---------------------------------------------------------------------------------
    def _rewrite(self, text: str) -> str:
        for server in self.servers.values():
            text = re.sub(
                rf"\b(localhost|127\.0\.0\.1|0\.0\.0\.0):{server.doc_port}\b",
                rf"\g<1>:{server.port}",
                text,
            )
        return text

    # servers -------------------------------------------------------------------------------
    def start_server(self, command: str, kind: str, where: str, timeout: float) -> BackgroundServer:
        words = shlex.split(command.replace("\\\n", " "))
        doc_port = DEFAULT_PORTS[kind]
        if "--port" in words:
            at = words.index("--port")
            doc_port = int(words[at + 1])
            del words[at : at + 2]
        if doc_port in self.servers:
            self.stop_server(doc_port)
        port = free_port()
        log = self.workspace / f".server-{port}.log"
        line = " ".join(shlex.quote(w) for w in [*words, "--port", str(port)])
        status, output = self.shell.run(
            f"{line} > {shlex.quote(str(log))} 2>&1 &\necho $!", timeout=30, stop_on_error=True
        )
        if status != 0:
            raise ExampleFailure(f"{where}: could not start {command!r}: {output}")
        server = BackgroundServer(kind, doc_port, port, int(output.split()[-1]), log)
        self.servers[doc_port] = server
        probe = "/health" if kind == "serve" else "/ui/"
        deadline = time.monotonic() + timeout
        while True:
            if _ready(port, probe, kind, log):
                return server
            alive = self.shell.run(
                f"kill -0 {server.pid} 2>/dev/null", timeout=10, stop_on_error=False
            )
            if alive[0] != 0 or time.monotonic() > deadline:
                del self.servers[doc_port]
                self.shell.run(
                    f"kill -KILL {server.pid} 2>/dev/null; wait {server.pid}",
                    timeout=30,
                    stop_on_error=False,
                )
                raise ExampleFailure(
                    f"{where}: {command!r} never answered {probe}:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.5)

    def stop_server(self, doc_port: int) -> None:
        server = self.servers.pop(doc_port)
        status, _ = self.shell.run(
            f"kill -TERM {server.pid}; wait {server.pid}", timeout=120, stop_on_error=False
        )
        if status != 0:
            raise ExampleFailure(
                f"finerank {server.kind} exited {status} on SIGTERM (expected 0):\n"
                + server.log.read_text()[-3000:]
            )

    def close(self) -> None:
        try:
            for doc_port in list(self.servers):
                self.stop_server(doc_port)
        finally:
            self.shell.close()

    # blocks --------------------------------------------------------------------------------
    def run_block(self, block: Block) -> None:
        if block.kind != "python" and INSTALLS.search(block.text):
            raise ExampleFailure(
                f"{block.where}: installs packages; mark it <!-- docs-test: skip (installs) -->"
            )
        timeout = float(block.marker("timeout") or 300)
        exit_code = int(block.marker("exit") or 0)
        compare = block.marker("any-output") is None
        if block.kind == "console":
            for command, expected in console_commands(block.text):
                self._shell(block, command, expected if compare else None, exit_code, timeout)
        elif block.kind == "shell":
            self._shell(block, block.text, block.expected if compare else None, exit_code, timeout)
        elif block.kind == "python":
            self._python(block, block.expected if compare else None)
        self.ran += 1

    def _shell(
        self, block: Block, script: str, expected: str | None, exit_code: int, timeout: float
    ) -> None:
        output_parts: list[str] = []
        chunk: list[str] = []
        logical = script.replace("\\\n", "\\\x00").split("\n")  # keep continuations together

        def flush() -> None:
            text = "\n".join(chunk).replace("\\\x00", "\\\n").strip()
            chunk.clear()
            if not text:
                return
            status, output = self.shell.run(
                self._rewrite(text), timeout=timeout, stop_on_error=exit_code == 0
            )
            output_parts.append(output)
            if status != exit_code:
                raise ExampleFailure(
                    f"{block.where}: exit status {status} (expected {exit_code}) for\n"
                    f"{text}\n--- output:\n{output}"
                )

        server = None
        for line in logical:
            match = SERVER.search(line.replace("\\\x00", " "))
            if match and not line.lstrip().startswith("#"):
                chunk.append(line[: len(line) - len(match["cmd"])].rstrip().removesuffix("&&"))
                flush()
                server = self.start_server(match["cmd"], match["kind"], block.where, timeout)
            else:
                chunk.append(line)
        flush()
        if server is not None and expected is not None:
            # a server's output is its log: each documented line must be in it, in order (it
            # may log its ready line just after it starts answering: wait a little for it)
            deadline = time.monotonic() + 30
            while True:
                log = server.log.read_text(encoding="utf-8", errors="replace")
                log = log.replace(f":{server.port}", f":{server.doc_port}")
                found = _lines_in_order(_clean(expected), _clean(log))
                if found or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            if not found:
                raise ExampleFailure(
                    f"{block.where}: the server's log lacks the documented lines:\n{expected}"
                    f"\n--- log:\n{log[-3000:]}"
                )
        elif expected is not None:
            problem = output_diff(expected, "\n".join(p for p in output_parts if p))
            if problem:
                raise ExampleFailure(f"{block.where}: output differs from the docs: {problem}")

    def _python(self, block: Block, expected: str | None) -> None:
        code = compile(self._rewrite(block.text), block.where, "exec")
        captured = io.StringIO()
        try:
            with contextlib.redirect_stdout(captured):
                exec(code, self.namespace)  # noqa: S102 - the docs' own example
        except Exception as error:
            trace = traceback.format_exc(limit=-3)
            raise ExampleFailure(
                f"{block.where}: {type(error).__name__}: {error}\n{trace}"
            ) from None
        if expected is not None:
            problem = output_diff(expected, captured.getvalue())
            if problem:
                raise ExampleFailure(f"{block.where}: output differs from the docs: {problem}")
