"""A local xrole for the checks that drive it from outside (scripts/openapi-check,
scripts/status-page-check): moto as AWS, an IAM user of it as the server's own
identity, `xrole serve --dev` on a scratch SQLite database, and organizations
created with the operator token. Standard library only.

    with DevStack(bin_dir, out_dir) as stack:
        key = stack.org("acme")
        stack.call("GET", "/v1/whoami", key)
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, proc, log, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (OSError, urllib.error.URLError):
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    sys.stderr.write(open(log).read())
    raise SystemExit(f"{url} did not come up")


class ApiError(Exception):
    def __init__(self, status, body):
        super().__init__(f"HTTP {status}: {body[:300]!r}")
        self.status, self.body = status, body


class DevStack:
    def __init__(self, bin_dir, out_dir, server_env=None):
        self.bin_dir, self.out = bin_dir, out_dir
        self.server_env = server_env or {}
        self.procs = []
        self.work = tempfile.mkdtemp(prefix="xrole-devstack-")
        self.operator = "operator-" + secrets.token_hex(16)

    def __enter__(self):
        os.makedirs(self.out, exist_ok=True)
        moto_port = free_port()
        moto_log = os.path.join(self.out, "moto.log")
        moto = self._spawn([os.path.join(VENV_BIN, "moto_server"), "-H", "127.0.0.1",
                            "-p", str(moto_port)], moto_log)
        self.moto = f"http://127.0.0.1:{moto_port}"
        wait_http(self.moto + "/moto-api/", moto, moto_log)
        key, secret = self._saas_user()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("XROLE_", "AWS_"))}
        env.update(AWS_ENDPOINT_URL=self.moto, AWS_REGION="us-east-1",
                   AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret, NO_COLOR="1",
                   XROLE_OPERATOR_TOKEN=self.operator, XROLE_PUBLIC_URL=self.base,
                   XROLE_RATE_LIMIT_PER_SECOND="0", RUST_LOG="info")
        env.update(self.server_env)
        self.server_log = os.path.join(self.out, "server.log")
        server = self._spawn([os.path.join(self.bin_dir, "xrole"), "serve", "--dev",
                              "--listen", f"127.0.0.1:{self.port}",
                              "--database-url", f"sqlite://{self.work}/xrole.db"],
                             self.server_log, env=env, cwd=self.work)
        wait_http(self.base + "/readyz", server, self.server_log)
        return self

    def __exit__(self, *exc):
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.work, ignore_errors=True)

    def _spawn(self, argv, log, **kw):
        p = subprocess.Popen(argv, stdout=open(log, "w"), stderr=subprocess.STDOUT, **kw)
        self.procs.append(p)
        return p

    def _saas_user(self):
        """moto's root cannot be trusted by customers' roles: an IAM user can."""
        code = (
            "import boto3\n"
            "iam = boto3.client('iam', region_name='us-east-1', aws_access_key_id='testing',"
            " aws_secret_access_key='testing')\n"
            "iam.create_user(UserName='xrole-saas')\n"
            "k = iam.create_access_key(UserName='xrole-saas')['AccessKey']\n"
            "print(k['AccessKeyId'], k['SecretAccessKey'])\n")
        out = subprocess.run([os.path.join(VENV_BIN, "python"), "-c", code], check=True,
                             capture_output=True, text=True,
                             env=dict(os.environ, AWS_ENDPOINT_URL=self.moto))
        return out.stdout.split()

    def call(self, method, path, token=None, body=None, headers=None):
        h = {"content-type": "application/json", **(headers or {})}
        if token:
            h["authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            raise ApiError(e.code, e.read().decode(errors="replace")) from None
        return json.loads(raw) if raw else None

    def org(self, name):
        """A new organization; its admin's API key."""
        created = self.call("POST", "/v1/organizations", self.operator,
                            {"name": name, "admin_email": f"admin@{name}.example.com"})
        return created["api_key"]["token"]

    def logs(self):
        return open(self.server_log).read()
