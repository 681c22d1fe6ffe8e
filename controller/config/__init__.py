"""The config: TOML in, frozen dataclasses out, every problem named by file, key and reason.

Owns: the schema (schema: one frozen dataclass per section), the reader (reader, sections, table,
checks, plugins: every key checked, every problem collected into one ConfigError), the TOML
renderer (render: what `check-config` prints) and the SIGHUP rules (reload: which changes apply
without a restart). Pure: no I/O library, no asyncio, subprocess or socket; it reads one file.
May import: the standard library only (tomli before Python 3.11).
"""
