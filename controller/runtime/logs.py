"""Logging: structlog key/value events, one renderer for ours and the libraries', secrets masked.

Events go to stderr, pretty on a terminal and one JSON object a line otherwise (systemd's
journal, pipes; `run --log-format` chooses), or always as JSON to `--logfile`. Under systemd
each line starts with its syslog priority (`<4>` a warning), which journald files it under.
Standard-library logging (botocore, aiohttp, asyncssh) is routed through the same renderer, but
only from WARNING up: their INFO/DEBUG chatter is not ours to show. The seed's `--verbosity`
keeps its meaning: 0 errors, 1 warnings, 2 info, 3 debug.

Secrets never reach the output: `redact_secrets` masks the value of any key that names a secret
(see `is_secret_key`) and any string that looks like one (`mask_secrets`), and the rendered line
is masked once more, so an exception's traceback or a library's message is covered too.

A line that cannot be written (stderr a pipe whose reader went away, a terminal that hung up, a
full disk) is dropped and counted (`dropped_lines`), never raised: a lost log must not end the
process that owns paid instances, which then could neither scale them in nor tear them down.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import sys
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

import structlog

MASK = "***"
_LEVELS = (logging.ERROR, logging.WARNING, logging.INFO, logging.DEBUG)  # by verbosity 0..3

# A key names a secret when one of its words is one of these...
_SECRET_WORDS = frozenset(
    {
        "secret",
        "password",
        "passwd",
        "passphrase",
        "token",
        "credential",
        "credentials",
        "authorization",
        "cookie",
        "signature",
    }
)
# ...or when it says "<one of these> key" (access_key, private_key; ssh_key is a key pair name)...
_KEY_QUALIFIERS = frozenset({"access", "private", "api", "session", "signing", "secret"})
# ...unless its last word says it is only where the secret lives (token_file, private_key_path),
# or it is one of EC2's tokens that guard nothing (idempotency and pagination).
_HARMLESS_LAST_WORDS = frozenset({"file", "path", "name"})
_HARMLESS_NAMES = frozenset({"clienttoken", "nexttoken"})

_WORD_BOUNDARY = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
_VALUE_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # AWS access key ids (long-term AKIA, temporary ASIA)
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), MASK),
    # name=value / name: value / "name": "value" for secret-bearing names
    (
        re.compile(
            r"(?i)\b((?:aws_)?secret(?:_access)?_key|secretaccesskey|(?:aws_)?session_token"
            r"|password|passwd|token|signature)(\"?'?\s*[:=]\s*\"?'?)(?!\*\*\*)[^\s\"',;&]+"
        ),
        r"\1\2" + MASK,
    ),
    # Authorization header values
    (re.compile(r"(?i)\b(bearer|basic)\s+(?!\*\*\*)[A-Za-z0-9._~+/=-]+"), r"\1 " + MASK),
    # passwords inside URLs: scheme://user:password@host
    (re.compile(r"(://[^/\s:@]+:)[^/\s@]+@"), r"\1" + MASK + "@"),
)


def is_secret_key(name: str) -> bool:
    """True when an event key names a secret: `aws_secret_access_key`, `SessionToken`,
    `access_key_id`, `stats_token`, `password`; not `ssh_key`, `token_file`, `instance_id`,
    `client_token`."""
    words = [w.lower() for w in _WORD_BOUNDARY.split(name) if w]
    if not words or words[-1] in _HARMLESS_LAST_WORDS or "".join(words) in _HARMLESS_NAMES:
        return False
    if any(w in _SECRET_WORDS for w in words):
        return True
    return any(a in _KEY_QUALIFIERS and b == "key" for a, b in itertools.pairwise(words))


def mask_secrets(text: str) -> str:
    """The text with anything that looks like a credential replaced by ***."""
    for pattern, replacement in _VALUE_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_secrets(
    logger: object, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask secret-named keys and secret-looking values, nested too."""
    for key, value in event_dict.items():
        event_dict[key] = _redact(key, value)
    return event_dict


def _redact(key: object, value: Any) -> Any:
    if isinstance(key, str) and is_secret_key(key) and value:
        return MASK
    match value:
        case str():
            return mask_secrets(value)
        case dict():
            return {k: _redact(k, v) for k, v in value.items()}
        case list() | tuple():
            return type(value)(_redact(None, v) for v in value)
        case None | bool() | int() | float():
            return value
    text = str(value)
    masked = mask_secrets(text)
    return value if masked == text else masked


def _masking(renderer: Callable[..., str], journal: bool = False) -> Callable[..., str]:
    """The renderer, with its finished line masked again (tracebacks, reprs of objects), and
    with `journal` led by the syslog priority journald reads (`<4>` for a warning), so that
    `journalctl -p warning` shows warnings and errors."""

    def render(logger: object, method_name: str, event_dict: MutableMapping[str, Any]) -> str:
        prefix = f"<{_PRIORITY.get(str(event_dict.get('level')), 6)}>" if journal else ""
        return prefix + mask_secrets(renderer(logger, method_name, event_dict))

    return render


# syslog priorities (sd-daemon(3)): journald strips the prefix and files the line under it
_PRIORITY = {"critical": 2, "exception": 3, "error": 3, "warning": 4, "info": 6, "debug": 7}


def under_journal(stream: TextIO) -> bool:
    """Is `stream` connected to systemd's journal ($JOURNAL_STREAM names its device:inode)?"""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


class _Unfailing:
    """A stream whose writes never raise: what it cannot write is dropped and counted (module
    docstring). Each write tries again, so a full disk that frees up is written to again."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.dropped = 0

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except (OSError, ValueError):  # EPIPE, EIO, ENOSPC; ValueError: the stream is closed
            self.dropped += 1
            return 0

    def flush(self) -> None:
        try:
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def isatty(self) -> bool:
        return _isatty(self.stream)


def dropped_lines() -> int:
    """Log lines that could not be written since configure_logging."""
    stream = _installed.get("stream")
    return stream.dropped if isinstance(stream, _Unfailing) else 0


class _NamedWriteLogger(structlog.WriteLogger):
    """A WriteLogger that remembers the name it was asked for, so events can carry it."""

    def __init__(self, file: TextIO, name: str | None):
        super().__init__(file)
        self.name = name


def _add_logger_name(
    logger: object, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    name = getattr(logger, "name", None)
    if name and "logger" not in event_dict:
        event_dict["logger"] = name
    return event_dict


def _lead_with_basics(
    logger: object, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """JSON lines read better when every one starts with time, level, logger and event."""
    first = {k: event_dict[k] for k in ("timestamp", "level", "logger", "event") if k in event_dict}
    return first | {k: v for k, v in event_dict.items() if k not in first}


# What configure_logging installed, so a second call (or reset_logging) replaces it cleanly.
_installed: dict[str, Any] = {}


def configure_logging(
    verbosity: int = 2, logfile: str | None = None, json: bool | None = None
) -> None:
    """Set up structlog and stdlib logging for the process.

    verbosity 0..3 is the seed's (errors, warnings, info, debug). With `logfile`, events are
    appended there as JSON; otherwise they go to stderr, as JSON unless stderr is a terminal
    (`json` forces either). Raises OSError when the logfile cannot be opened.
    """
    reset_logging()
    level = _LEVELS[max(0, min(verbosity, len(_LEVELS) - 1))]
    if logfile is not None:
        stream: TextIO = LogFile(logfile)  # type: ignore[assignment]  # writes like a TextIO
        _installed["file"] = stream
        as_json = True
    else:
        stream = sys.stderr
        as_json = (not _isatty(stream)) if json is None else json
    journal = logfile is None and under_journal(stream)
    stream = _installed["stream"] = _Unfailing(stream)  # type: ignore[assignment]

    if as_json:
        renderer: Callable[..., str] = structlog.processors.JSONRenderer()
        before_render: list[Any] = [structlog.processors.format_exc_info, _lead_with_basics]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_isatty(stream))
        before_render = []  # ConsoleRenderer formats exc_info and orders columns itself
    shared: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *shared,
            _add_logger_name,
            *before_render,
            redact_secrets,
            _masking(renderer, journal),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *args: _NamedWriteLogger(stream, args[0] if args else None),
        cache_logger_on_first_use=False,
    )

    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *before_render,
                redact_secrets,
                _masking(renderer, journal),
            ],
        )
    )
    root = logging.getLogger()
    root.addHandler(handler)
    _installed["handler"] = handler
    _installed["root_level"] = root.level
    root.setLevel(max(level, logging.WARNING))


class LogFile:
    """The --logfile, appended to line by line, and reopened on SIGHUP (`reopen_logfile`) so
    that logrotate can move it away without copytruncate."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file = open(path, "a", encoding="utf-8", buffering=1)

    def write(self, text: str) -> int:
        return self._file.write(text)

    def flush(self) -> None:
        self._file.flush()

    def isatty(self) -> bool:
        return False

    def reopen(self) -> None:
        """A fresh file at the path; the old one stays in use if the new cannot be opened."""
        new = open(self.path, "a", encoding="utf-8", buffering=1)
        old, self._file = self._file, new
        old.close()

    def close(self) -> None:
        self._file.close()


def reopen_logfile() -> None:
    """SIGHUP: start writing to a new file at --logfile's path (none: nothing to do).
    Raises OSError when it cannot be opened; the old file is kept then."""
    stream = _installed.get("file")
    if isinstance(stream, LogFile):
        stream.reopen()


def reset_logging() -> None:
    """Undo configure_logging: structlog defaults, our handler removed, the logfile closed."""
    root = logging.getLogger()
    if (handler := _installed.pop("handler", None)) is not None:
        root.removeHandler(handler)
        root.setLevel(_installed.pop("root_level", logging.WARNING))
    _installed.pop("stream", None)
    if (stream := _installed.pop("file", None)) is not None:
        stream.close()
    structlog.reset_defaults()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False
