#!/usr/bin/env python3
"""Runs the callback Lambda embedded in a template, the way AWS Lambda would.

    run_callback.py [TEMPLATE] < event.json

Reads a CloudFormation custom-resource event (JSON) on standard input, takes the
inline `ZipFile:` source out of TEMPLATE (default: ../xrole-role.yaml), loads it
as the module `index` and calls `index.handler(event, context)`. The handler
posts the signed callback and PUTs its answer to the event's ResponseURL, so
point both at local receivers. Standard library only, like the Lambda.

XROLE_CALLBACK_RETRY_SECONDS shortens the handler's retry window (default 50 s).
Used by the tests because the emulator cannot run Lambda functions without Docker.
"""

import json
import pathlib
import re
import sys
import time
import types


def extract_zipfile(template: str) -> str:
    """The literal block after `ZipFile: |`, dedented."""
    lines = template.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "ZipFile: |":
            block, indent = [], None
            for raw in lines[i + 1 :]:
                if not raw.strip():
                    block.append("")
                    continue
                depth = len(raw) - len(raw.lstrip(" "))
                if indent is None:
                    indent = depth
                if depth < indent:
                    break
                block.append(raw[indent:])
            return "\n".join(block).rstrip("\n") + "\n"
    raise SystemExit("no inline `ZipFile: |` block in the template")


def lambda_timeout(template: str) -> int:
    match = re.search(r"^\s+Timeout:\s*(\d+)\s*$", template, re.MULTILINE)
    return int(match.group(1)) if match else 3


class Context:
    """The one part of the Lambda context object the handler uses."""

    def __init__(self, timeout_seconds: int):
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)


def main() -> None:
    default = pathlib.Path(__file__).resolve().parent.parent / "xrole-role.yaml"
    template = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else default).read_text()
    module = types.ModuleType("index")
    exec(compile(extract_zipfile(template), "index.py", "exec"), module.__dict__)
    event = json.load(sys.stdin)
    module.handler(event, Context(lambda_timeout(template)))


if __name__ == "__main__":
    main()
