"""Checks that every command shown in README.md and docs/ is exercised.

Each shell command (a line of a fenced ```sh block, or an inline code span
that starts like a command) must be one of:

- run here, exactly as written: the README's quick start, the blocks marked
  `<!-- check-docs: quickstart -->`, in order, from the repository's root as
  on a fresh machine (no AWS credentials, a scratch database); a command
  that starts the server (`… serve --dev`) runs in the background as the
  "first terminal" and is stopped when the next one starts; then the check
  reads what a newcomer would see: one calm line about AWS credentials and
  no instance-metadata probing in the first server's log, the `whoami`
  answer, the quick-create URL;
- run here, exactly as written: the blocks of docs/operations.md marked
  `<!-- check-docs: NAME -->`, in a scratch directory with `xrole` on PATH,
  against a database that holds sealed values; each scenario then checks its
  effect (the keyring's keys, the backup, sealed values still opening);
- run exactly as written by scripts/demo, which CI runs: the blocks marked
  `<!-- check-docs: NAME -->` with a NAME in DEMO_BLOCKS below (the demo
  reads them from the docs by that marker);
- run verbatim by CI: a whole command on a code line (not a comment) of
  .ci/run or of a script it runs (CI_FILES);
- a narrower or longer form of a command CI runs (SUBSETS below), checked to refer to
  things that exist;
- a manual command (MANUAL below; empty at present), checked likewise.

Anything else fails the check, so a new command in the docs needs a home.
Run with scripts/check-docs.
"""

import http.client
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + sorted(
    os.path.join("docs", f) for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md"))
CI_FILES = [".ci/run", "scripts/test", "scripts/check-readme-run", "scripts/check-docs",
            "scripts/bench", "scripts/openapi-check", "scripts/status-page-check"]

# Narrower or longer forms of what CI runs: command -> (what CI runs, paths that must exist).
SUBSETS = {
    "cargo test -p xrole-server --test hardening":
        ("scripts/test", ["crates/xrole-server/tests/hardening.rs"]),
    "cargo test -p xrole-server --test hardening_secrets":
        ("scripts/test", ["crates/xrole-server/tests/hardening_secrets.rs"]),
    "cargo test -p xrole-server --test hardening_replicas":
        ("scripts/test", ["crates/xrole-server/tests/hardening_replicas.rs"]),
    "cargo test -p xrole-server --test hardening_crash":
        ("scripts/test", ["crates/xrole-server/tests/hardening_crash.rs"]),
    "FUZZ_SECONDS=600 scripts/fuzz cidr": ("scripts/fuzz", ["fuzz/fuzz_targets/cidr.rs"]),
    "cargo +nightly fuzz run <target> <crash file>": ("scripts/fuzz", ["fuzz/Cargo.toml"]),
    "ST_PHASES=examples,coverage,fuzzing,stateful scripts/schemathesis":
        ("scripts/schemathesis", ["scripts/schemathesis"]),
    # CI runs `scripts/bench --quick`: every part, with shorter server
    # measurements and two of the three tenant scales.
    "scripts/bench": ("scripts/bench --quick", ["scripts/bench", "scripts/bench.py"]),
    "scripts/bench --only server": ("scripts/bench --quick", ["scripts/bench"]),
    "scripts/bench --only crates": ("scripts/bench --quick", ["scripts/bench"]),
    "scripts/bench --only server --quick": ("scripts/bench --quick", ["scripts/bench"]),
    "scripts/bench --only fairness": ("scripts/bench --quick", ["scripts/bench"]),
    # Run by `scripts/bench --quick` with 100 hostile jobs and 10 honest ones.
    "scripts/bench-fairness": ("scripts/bench --quick", ["scripts/bench-fairness",
                                                        "scripts/bench-fairness.py"]),
    "XROLE_WORKERS=32 scripts/bench-fairness": ("scripts/bench --quick",
                                                ["scripts/bench-fairness"]),
    # scripts/test runs this test with its defaults (40 accounts, 25 STS/s).
    "XROLE_ORG_SCALE_ACCOUNTS=1000 XROLE_ORG_SCALE_STS_PER_SECOND=50 XROLE_ORG_SCALE_STS_BURST=100 "
    "cargo test --workspace --locked --test flow org_scale -- --nocapture":
        ("scripts/test", ["crates/xrole-server/tests/flow/org_scale.rs"]),
}
# Marked blocks that scripts/demo runs exactly as written: marker -> the script
# that finds them by that marker.
DEMO_BLOCKS = {"demo-create-stack": "scripts/demo.py", "demo-create-stackset": "scripts/demo.py"}
# The operations runbook's marked blocks, run here.
RUN_HERE = ("keyring", "rotate-one-box", "rotate-replicas")
# The README's quick start, run here (see run_quickstart).
QUICKSTART = "quickstart"
# Run by hand: none at present (a command here needs a reason it cannot run in CI).
MANUAL = {}
# Inline code that names a program or mode in prose rather than a line to type.
NAMES = {"xrole serve", "xrole serve --dev", "xrole worker", "pg_dump", "xrole migrate",
         "xrole keys rotate", "xrole keys reseal", "xrole keys rotate --retire-old",
         "xrole keys retire",
         "keys rotate", "scripts/check-docs"}
COMMANDISH = re.compile(r"^([A-Z_]+=\S* )*(scripts/|cargo |xrole |sqlite3 |pg_dump|curl |aws )")
OPERATOR = "check-docs-operator-token-0123456789"


def strip_comment(line):
    out, quote = [], None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            break
        out.append(ch)
    return "".join(out).strip()


def doc_commands():
    """(file, command, marker) for every command in the docs."""
    found = []
    for rel in DOCS:
        text = open(os.path.join(ROOT, rel)).read()
        marker, in_block, lang, pending = None, False, "", ""
        for line in text.splitlines():
            if not in_block:
                m = re.match(r"<!-- check-docs: ([\w-]+) -->", line.strip())
                if m:
                    marker = m.group(1)
                    continue
                if line.startswith("```"):
                    in_block, lang = True, line[3:].strip()
                    continue
                for span in re.findall(r"`([^`\n]+)`", line):
                    if COMMANDISH.match(span) and span not in NAMES:
                        found.append((rel, span, None))
                marker = None if line.strip() else marker
            elif line.startswith("```"):
                in_block, marker = False, None
            elif lang in ("sh", "bash", "shell"):
                cmd = strip_comment(line)
                if cmd.endswith("\\"):
                    pending += cmd[:-1].strip() + " "
                    continue
                cmd, pending = (pending + cmd).strip(), ""
                if cmd:
                    found.append((rel, cmd, marker))
    return found


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port, method, path, body=None, token=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    h = {"content-type": "application/json", **(headers or {})}
    if token:
        h["authorization"] = f"Bearer {token}"
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = c.getresponse()
    raw = r.read()
    if r.status >= 300:
        raise SystemExit(f"check-docs: {method} {path} -> {r.status}: {raw[:300]!r}")
    return json.loads(raw)


class Server:
    """`xrole serve` in the scratch directory, with the environment the docs set."""

    def __init__(self, db=None):
        self.port = free_port()
        env = dict(os.environ, XROLE_LISTEN=f"127.0.0.1:{self.port}",
                   XROLE_OPERATOR_TOKEN=OPERATOR,
                   XROLE_PUBLIC_URL=f"http://127.0.0.1:{self.port}",
                   XROLE_SAAS_PRINCIPAL_ARN="arn:aws:iam::123456789012:user/xrole-saas",
                   RUST_LOG="warn")
        if db:
            env["XROLE_DATABASE_URL"] = db
        self.log = open("server.log", "a")
        self.proc = subprocess.Popen(["xrole", "serve"], env=env, stdout=self.log,
                                     stderr=self.log)
        for _ in range(300):
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/readyz")
                if c.getresponse().status == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise SystemExit("check-docs: xrole serve did not come up:\n" + open("server.log").read())

    def stop(self):
        self.proc.terminate()
        self.proc.wait(20)
        self.log.close()


def prepare():
    """An organization and an AWS account link: an External ID and a stored
    idempotent response, both sealed under the current primary key."""
    s = Server()
    try:
        org = call(s.port, "POST", "/v1/organizations",
                   {"name": "docs", "admin_email": "admin@docs.example.com"}, OPERATOR)
        token = org["api_key"]["token"]
        link = call(s.port, "POST", "/v1/aws-accounts",
                    {"name": "docs", "access_level": "read_only"}, token,
                    {"idempotency-key": "check-docs-link"})
        link = link.get("link", link)
        json.dump({"token": token, "link": link["id"], "external_id": link["external_id"]},
                  open("sealed.json", "w"))
    finally:
        s.stop()


def key_ids(path):
    text = open(path).read().strip()
    fields = dict(f.split("=", 1) for f in text.split(";") if "=" in f)
    ids = sorted(int(k[4:]) for k in fields if k.startswith("key."))
    return ids, int(fields["primary"])


def expect_sealed_values_open(db=None):
    want = json.load(open("sealed.json"))
    s = Server(db)
    try:
        got = call(s.port, "GET", f"/v1/aws-accounts/{want['link']}", token=want["token"])
        got = got.get("link", got)
        if got["external_id"] != want["external_id"]:
            raise SystemExit("check-docs: the External ID changed across the rotation")
    finally:
        s.stop()


def blobs_by_key(db):
    """How many sealed External IDs are under each key id (blob byte 1..5)."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT external_id_sealed FROM aws_account_links").fetchall()
    finally:
        con.close()
    out = {}
    for (blob,) in rows:
        kid = int.from_bytes(bytes(blob)[1:5], "big")
        out[kid] = out.get(kid, 0) + 1
    return out


def verify(scenario):
    if scenario == "rotate-one-box":
        if key_ids("keyring") != ([2], 2) or key_ids("keyring.backup") != ([1], 1):
            raise SystemExit(f"check-docs: keyrings after rotation: {key_ids('keyring')}, "
                             f"backup {key_ids('keyring.backup')}")
        if blobs_by_key("xrole.db") != {2: 1} or blobs_by_key("xrole-backup.db") != {1: 1}:
            raise SystemExit("check-docs: sealed values are not under the expected keys")
        expect_sealed_values_open()
        # The backup opens with the backed-up keyring.
        os.environ["XROLE_KEYRING_FILE"] = os.path.abspath("keyring.backup")
        expect_sealed_values_open("sqlite://" + os.path.abspath("xrole-backup.db"))
    elif scenario == "rotate-replicas":
        if key_ids("keyring") != ([2], 2) or blobs_by_key("xrole.db") != {2: 1}:
            raise SystemExit(f"check-docs: after the replica rotation: {key_ids('keyring')}, "
                             f"{blobs_by_key('xrole.db')}")
        expect_sealed_values_open()
    print(f"check-docs: {scenario}: keyring and sealed values as documented")


def run_scenario(blocks, scenario, bin_dir):
    """The keyring block, sealed data, then the scenario's block, in one shell."""
    work = tempfile.mkdtemp(prefix="xrole-docs-")
    me = os.path.abspath(__file__)
    lines = ["set -euo pipefail"]
    for name in ("keyring", "__prepare__", scenario, "__verify__"):
        if name == "__prepare__":
            lines.append(f'"{sys.executable}" "{me}" --prepare')
            continue
        if name == "__verify__":
            lines.append(f'"{sys.executable}" "{me}" --verify {scenario}')
            continue
        for cmd in blocks[name]:
            lines.append(f"printf '%s\\n' {shell_quote('$ ' + cmd)}")
            lines.append(cmd)
    env = {k: v for k, v in os.environ.items() if not k.startswith("XROLE_")}
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    print(f"==> check-docs: docs/operations.md, {scenario}", flush=True)
    try:
        r = subprocess.run(["bash", "-c", "\n".join(lines)], cwd=work, env=env)
        if r.returncode != 0:
            log = os.path.join(work, "server.log")
            if os.path.exists(log):
                sys.stderr.write(open(log).read())
            raise SystemExit(f"check-docs: {scenario} failed")
    finally:
        shutil.rmtree(work, ignore_errors=True)


QUICKSTART_SHELL = r"""
set -euo pipefail
server_pid=
stop_server() {
  if [ -n "$server_pid" ]; then
    kill -TERM -- "-$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
}
trap stop_server EXIT
start_server() {
  stop_server
  echo "==> server $1" >>"$QS_LOG"
  # Its own process group, so that stopping it stops cargo and xrole.
  setsid bash -c "$1" >>"$QS_LOG" 2>&1 &
  server_pid=$!
  for _ in $(seq 900); do
    curl -fsS http://127.0.0.1:8080/readyz >/dev/null 2>&1 && return 0
    kill -0 "$server_pid" 2>/dev/null || { cat "$QS_LOG"; echo "the server exited"; return 1; }
    sleep 1
  done
  cat "$QS_LOG"; echo "the server did not answer /readyz within 15 minutes"; return 1
}
"""


def run_quickstart(commands):
    """The README's quick start as a newcomer pastes it; returns what the
    newcomer would read (the commands' output and the server log)."""
    work = tempfile.mkdtemp(prefix="xrole-quickstart-")
    log, out = os.path.join(work, "server.log"), os.path.join(work, "out.txt")
    lines = [QUICKSTART_SHELL]
    for cmd in commands:
        lines.append(f"printf '%s\\n' {shell_quote('$ ' + cmd)}")
        if re.search(r"\bserve --dev$", cmd):
            lines.append(f"start_server {shell_quote(cmd)}")
        else:
            # In this shell (an `export` stays for the next commands); its
            # output shown, and kept for the checks.
            lines.append(f"{{ {cmd}\n}} >\"$QS_OUT.one\" 2>&1 && status=0 || status=$?")
            lines.append('cat "$QS_OUT.one"; echo; cat "$QS_OUT.one" >>"$QS_OUT"; echo >>"$QS_OUT"')
            lines.append('[ "$status" = 0 ] || exit "$status"')
    # A fresh machine: no AWS credentials or profile, no xrole settings; a
    # scratch database instead of ./xrole.db (the keyring is ./xrole-dev.keyring,
    # which the commands share, as they would).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XROLE_", "AWS_"))}
    env.update(XROLE_DATABASE_URL="sqlite://" + os.path.join(work, "xrole.db"),
               AWS_CONFIG_FILE=os.path.join(work, "no-aws-config"),
               AWS_SHARED_CREDENTIALS_FILE=os.path.join(work, "no-aws-credentials"),
               QS_LOG=log, QS_OUT=out, NO_COLOR="1")
    print("==> check-docs: README.md, the quick start", flush=True)
    try:
        r = subprocess.run(["bash", "-c", "\n".join(lines)], cwd=ROOT, env=env)
        server_log = open(log).read() if os.path.exists(log) else ""
        output = open(out).read() if os.path.exists(out) else ""
        if r.returncode != 0:
            sys.stderr.write(server_log)
            raise SystemExit("check-docs: the README's quick start failed")
        return output, server_log
    finally:
        shutil.rmtree(work, ignore_errors=True)


def verify_quickstart(output, server_log):
    starts = server_log.split("==> server ")[1:]
    if len(starts) != 2:
        raise SystemExit(f"check-docs: expected two server starts, saw {len(starts)}")
    first = starts[0]
    calm = [line for line in first.splitlines() if "no AWS credentials" in line]
    problems = []
    if len(calm) != 1 or "AWS account routes answer 503" not in calm[0] \
            or "scripts/demo" not in calm[0]:
        problems.append(f"the first start should say once that AWS credentials are missing: {calm}")
    if re.search(r"imds|instance metadata|169\.254\.169\.254", first, re.I):
        problems.append("the first start probed EC2 instance metadata")
    whoami = re.search(r'\{"organization_id":"[0-9a-f-]{36}".*"role":"admin"\}', output)
    if not whoami:
        problems.append("GET /v1/whoami did not answer an admin of the new organization")
    url = re.search(r"^https://console\.aws\.amazon\.com/cloudformation/home\?region=us-east-1"
                    r"#/stacks/quickcreate\?\S*param_ExternalId=\S+$", output, re.M)
    if not url or "arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fxrole-saas" not in url.group(0):
        problems.append("the link's quick-create URL is not in the output")
    if problems:
        sys.stderr.write(server_log + "\n" + output)
        raise SystemExit("check-docs: quick start: " + "; ".join(problems))
    print("check-docs: quick start: a calm start without AWS, the first organization, "
          "whoami, a link and its quick-create URL, as documented")


def shell_quote(s):
    return "'" + s.replace("'", "'\\''") + "'"


def main():
    if sys.argv[1:2] == ["--prepare"]:
        return prepare()
    if sys.argv[1:2] == ["--verify"]:
        return verify(sys.argv[2])
    bin_dir = sys.argv[1]
    commands = doc_commands()
    blocks = {}
    for _, cmd, marker in commands:
        if marker:
            blocks.setdefault(marker, []).append(cmd)
    for name in RUN_HERE:
        if name not in blocks:
            raise SystemExit(f"check-docs: docs/operations.md has no block marked {name}")
    if QUICKSTART not in blocks:
        raise SystemExit("check-docs: README.md has no block marked quickstart")
    verify_quickstart(*run_quickstart(blocks[QUICKSTART]))
    for scenario in ("rotate-one-box", "rotate-replicas"):
        run_scenario(blocks, scenario, bin_dir)

    ci_text = "\n".join(open(os.path.join(ROOT, f)).read() for f in CI_FILES)
    # What CI runs: the code lines of its files (comments are not runs).
    ci_lines = [strip_comment(line) for f in CI_FILES
                for line in open(os.path.join(ROOT, f)).read().splitlines()]

    def run_by_ci(cmd):
        """`cmd` is a whole command of some line: alone, or piped, redirected,
        continued, chained or after `if`/`then`/`do`/`!`."""
        before = r"(^|[;&|(]\s*|\b(if|then|do|while|until|exec|time)\s+|!\s+)"
        after = r"(\s*$|\s*[;&|)>\\]|\s+2>)"
        pattern = re.compile(before + re.escape(cmd) + after)
        return any(pattern.search(line) for line in ci_lines)

    problems = []
    for name, script in DEMO_BLOCKS.items():
        if name not in blocks:
            problems.append(f"no block in the docs is marked {name}")
        if f"check-docs: {name}" not in open(os.path.join(ROOT, script)).read():
            problems.append(f"{script} does not run the blocks marked {name}")
        if not re.search(r"^scripts/demo$", ci_text, re.M):
            problems.append("CI does not run scripts/demo")
    for rel, cmd, marker in commands:
        if marker in RUN_HERE:
            continue
        if marker == QUICKSTART:
            print(f"    {rel}: {cmd}  (run here, the quick start)")
            continue
        if marker in DEMO_BLOCKS:
            how = "run by scripts/demo, exactly as written"
        elif marker:
            problems.append(f"{rel}: `{cmd}`: nothing runs the blocks marked {marker}")
            continue
        elif run_by_ci(cmd):
            how = "run by CI"
        elif cmd in SUBSETS:
            parent, paths = SUBSETS[cmd]
            how = f"narrower form of {parent}, which CI runs"
            if not run_by_ci(parent):
                problems.append(f"{rel}: `{cmd}`: CI does not run {parent}")
            problems += [f"{rel}: `{cmd}`: {p} is missing" for p in paths
                         if not os.path.exists(os.path.join(ROOT, p))]
        elif any(cmd == m or cmd.startswith(m + " ") for m in MANUAL):
            m = next(m for m in MANUAL if cmd == m or cmd.startswith(m + " "))
            how = "run by hand"
            problems += [f"{rel}: `{cmd}`: {p} is missing" for p in MANUAL[m]
                         if not os.path.exists(os.path.join(ROOT, p))]
        else:
            problems.append(f"{rel}: `{cmd}` is not exercised by CI, the demo or this check")
            continue
        print(f"    {rel}: {cmd}  ({how})")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        raise SystemExit(1)
    print("check-docs: every command in README.md and docs/ is exercised or accounted for")


if __name__ == "__main__":
    main()
