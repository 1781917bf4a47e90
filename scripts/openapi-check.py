"""The OpenAPI document as third-party tools see it (run by scripts/openapi-check).

Against a live `xrole serve --dev` (scripts/devstack.py, moto as AWS):

1. the document's `servers` names the server (`XROLE_PUBLIC_URL`), and every
   operation states its `security`;
2. openapi-spec-validator accepts it;
3. Redocly CLI's `recommended` ruleset finds no error;
4. openapi-python-client generates a client from it without a warning, and
   examples/python-client/link_account.py drives that client: create a link,
   get it, list links, then one error (a link that is not there).

Everything it writes (the document, the generated client, the logs) is left
in the output directory given as the second argument.
"""

import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from devstack import ROOT, VENV_BIN, DevStack  # noqa: E402

REDOCLY = os.path.join(ROOT, "scripts", "node", "node_modules", ".bin", "redocly")
EXAMPLE = os.path.join(ROOT, "examples", "python-client", "link_account.py")


def step(title):
    print(f"--> {title}", flush=True)


def run(argv, **kw):
    print("    $ " + " ".join(argv), flush=True)
    return subprocess.run(argv, **kw)


def check_document(doc, base):
    problems = []
    servers = [s.get("url") for s in doc.get("servers", [])]
    if servers != [base]:
        problems.append(f"servers is {servers}, expected [{base!r}]")
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in ("get", "put", "post", "delete", "patch", "head", "options"):
                continue
            if "security" not in op:
                problems.append(f"{method.upper()} {path} states no security")
            for status, response in op.get("responses", {}).items():
                if status[0] in "45" and "application/problem+json" not in response.get(
                        "content", {}):
                    problems.append(f"{method.upper()} {path} {status} is not a problem")
    return problems


def main():
    bin_dir, out = sys.argv[1], os.path.abspath(sys.argv[2])
    shutil.rmtree(out, ignore_errors=True)
    with DevStack(bin_dir, out) as stack:
        key = stack.org("acme")
        step("the live document: servers, security, error bodies")
        doc = stack.call("GET", "/openapi.json")
        path = os.path.join(out, "openapi.json")
        with open(path, "w") as f:
            json.dump(doc, f, indent=2)
        problems = check_document(doc, stack.base)
        if problems:
            raise SystemExit("openapi-check: " + "; ".join(problems))
        print(f"    {len(doc['paths'])} paths; document saved to {path}")

        step("openapi-spec-validator")
        if run([os.path.join(VENV_BIN, "openapi-spec-validator"), path]).returncode:
            raise SystemExit("openapi-check: openapi-spec-validator rejected the document")

        step("Redocly CLI, recommended ruleset (errors fail, warnings are shown)")
        if run([REDOCLY, "lint", "--extends", "recommended", "--format", "stylish",
                path]).returncode:
            raise SystemExit("openapi-check: Redocly reported errors")

        step("openapi-python-client: generate a client from the live document")
        client_dir = os.path.join(out, "client")
        config = os.path.join(out, "client-config.json")
        with open(config, "w") as f:
            json.dump({"project_name_override": "xrole-client",
                       "package_name_override": "xrole_client"}, f)
        r = run([os.path.join(VENV_BIN, "openapi-python-client"), "generate",
                 "--url", stack.base + "/openapi.json", "--config", config,
                 "--meta", "none", "--output-path", os.path.join(client_dir, "xrole_client"),
                 "--fail-on-warning", "--overwrite"],
                capture_output=True, text=True,
                # Its post-generation step formats the code with the venv's ruff.
                env=dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ["PATH"]))
        print(r.stdout + r.stderr)
        if r.returncode:
            raise SystemExit("openapi-check: openapi-python-client failed or warned")

        step("examples/python-client/link_account.py with the generated client")
        env = dict(os.environ, PYTHONPATH=client_dir, XROLE_URL=stack.base,
                   XROLE_API_KEY=key)
        if run([os.path.join(VENV_BIN, "python"), EXAMPLE], env=env).returncode:
            raise SystemExit("openapi-check: the generated-client example failed")

        if key in stack.logs():
            raise SystemExit("openapi-check: the API key appears in the server log")
    print("openapi-check: 4 passed, 0 failed")


if __name__ == "__main__":
    main()
