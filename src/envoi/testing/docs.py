"""Run the curl walk-throughs of `docs/*.md` against a live server and compare the answers.

A page's examples are fenced blocks, in order:

- ```` ```sh ```` with one `curl` command (real shell: `$ENVOI`, `$LOGIN`, `$SECRET` and
  captured variables are set in its environment);
- ```` ```http ```` right after it: `HTTP/1.1 <status> <reason>`, a blank line, then the
  JSON body (nothing for an empty body);
- optionally ```` ```csv file=NAME ```` (or any language with `file=NAME`) before the
  curl block: written to NAME in the working directory, for `-F 'x=@NAME'` uploads;
- optionally `<!-- export NAME=key -->` after a response: sets `$NAME` to that top-level
  key of the response for the next commands. Top-level scalar keys are exported too,
  upper-cased (`"id": 5` sets `$ID`).

Documented bodies must match the real ones except for values that differ between runs:
ids, timestamps, tokens (keys named `id`, `*_id`, `*_at`, `*token*`, `category`, `post`,
...) and any documented string `"..."`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
_EXPORT = re.compile(r"<!--\s*export\s+([A-Z_][A-Z0-9_]*)=([\w.]+)\s*-->")
_VOLATILE_KEYS = {"id", "category", "post", "secret", "api_key", "login", "url", "generated_at"}


@dataclass
class Example:
    command: str
    status: int
    body: Any
    line: int
    files: dict[str, str] = field(default_factory=dict)
    exports: dict[str, str] = field(default_factory=dict)


def parse_page(text: str) -> list[Example]:
    examples: list[Example] = []
    pending_files: dict[str, str] = {}
    command: tuple[str, int] | None = None
    for match in _FENCE.finditer(text):
        info, content = match.group(1).strip(), match.group(2)
        line = text.count("\n", 0, match.start()) + 1
        file_name = re.search(r"file=(\S+)", info)
        if file_name:
            pending_files[file_name.group(1)] = content
        elif info == "sh" and "curl" in content:
            command = (content, line)
        elif info == "http" and command is not None:
            status, body = _parse_response(content)
            tail = text[match.end() : match.end() + 400]
            nxt = text.find("```", match.end())
            exports = dict(_EXPORT.findall(tail if nxt < 0 else text[match.end() : nxt]))
            examples.append(Example(command[0], status, body, command[1], pending_files, exports))
            pending_files, command = {}, None
    return examples


def _parse_response(content: str) -> tuple[int, Any]:
    head, _, body = content.partition("\n")
    status = int(head.split()[1])
    body = body.strip()
    return status, json.loads(body) if body else None


def run_command(command: str, env: dict[str, str], cwd: Path) -> tuple[int, Any, str]:
    """Run one documented curl in bash, with `-i` added so the status line can be read."""
    script = 'curl() { command curl -sS -i "$@"; }\n' + command
    done = subprocess.run(  # noqa: S603 - runs the project's own documentation
        ["/bin/bash", "-c", script],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"command failed: {done.stderr}")
    raw = done.stdout.replace("\r\n", "\n")
    # Skip interim answers such as `HTTP/1.1 100 Continue`.
    while raw.startswith("HTTP/") and raw.split(" ", 2)[1].startswith("1"):
        raw = raw.split("\n\n", 1)[1]
    headers, _, body = raw.partition("\n\n")
    status = int(headers.split()[1])
    parsed = json.loads(body) if body.strip() else None
    return status, parsed, body


def is_volatile(key: str) -> bool:
    return (
        key in _VOLATILE_KEYS
        or key.endswith(("_id", "_at"))
        or "token" in key
        or key.endswith("_url")
    )


def mismatches(documented: Any, actual: Any, path: str = "$") -> list[str]:
    """Where the real body differs from the documented one, ignoring volatile values."""
    if documented == "...":
        return []
    if isinstance(documented, dict) and isinstance(actual, dict):
        problems = []
        if set(documented) != set(actual):
            problems.append(f"{path}: keys {sorted(documented)} != {sorted(actual)}")
        for key in documented.keys() & actual.keys():
            if is_volatile(key) and type(documented[key]) is type(actual[key]):
                continue  # an id or a time: same kind of value is all a page can promise
            problems += mismatches(documented[key], actual[key], f"{path}.{key}")
        return problems
    if isinstance(documented, list) and isinstance(actual, list):
        if len(documented) != len(actual):
            return [f"{path}: {len(documented)} items documented, {len(actual)} returned"]
        return [
            p
            for i, (d, a) in enumerate(zip(documented, actual, strict=True))
            for p in mismatches(d, a, f"{path}[{i}]")
        ]
    return [] if documented == actual else [f"{path}: {documented!r} != {actual!r}"]


def exported(example: Example, body: Any) -> dict[str, str]:
    values: dict[str, str] = {}
    if isinstance(body, dict):
        for key, value in body.items():
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                values[key.upper()] = str(value)
        for name, key in example.exports.items():
            values[name] = str(body[key])
    elif isinstance(body, list) and body and isinstance(body[0], dict):
        for name, key in example.exports.items():
            values[name] = str(body[0][key])
    return values


def run_page(path: Path, env: dict[str, str], workdir: Path) -> None:
    """Run every example of one page in order; raise AssertionError on the first difference."""
    env = dict(env)
    examples = parse_page(path.read_text())
    if not examples:
        raise AssertionError(f"{path.name} has no runnable example")
    for example in examples:
        for name, content in example.files.items():
            (workdir / name).write_text(content)
        status, body, raw = run_command(example.command, env, workdir)
        where = f"{path.name}:{example.line}"
        if status != example.status:
            raise AssertionError(f"{where}: status {status}, documented {example.status}: {raw}")
        problems = mismatches(example.body, body)
        if problems:
            raise AssertionError(f"{where}: " + "; ".join(problems))
        env.update(exported(example, body))
