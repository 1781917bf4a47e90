"""Fairness under a hostile tenant: one organization queues 1,000 VPC jobs and
keeps asking to verify a role that cannot be assumed, then 100 honest
organizations queue one VPC job each; every AWS call takes 50 ms more (the
testkit gate). Prints each honest job's queue wait (started_at - created_at)
as p50 / p99 / max, and how the hostile organization's own jobs progressed.

python scripts/bench-fairness.py --xrole BIN --gate BIN [--hostile-jobs N] [--honest N]

Everything listens on 127.0.0.1 only; every process started is stopped.
"""

import argparse
import concurrent.futures
import datetime
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import boto3

OPERATOR = "fairness-operator-token-0123456789"
BOOT = dict(aws_access_key_id="AKIAXROLEBENCHBOOT00", aws_secret_access_key="bootstrap",
            region_name="us-east-1")
VPC = {"name": "prod", "cidr_block": "10.0.0.0/16", "availability_zones": ["us-east-1a"]}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port, path, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            c.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing answered on 127.0.0.1:{port}{path}")


class Api:
    """A keep-alive JSON client (one per thread)."""

    def __init__(self, port, token):
        self.port, self.token = port, token
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(self, method, path, body=None, idempotent=False):
        h = {"content-type": "application/json", "authorization": f"Bearer {self.token}"}
        if idempotent:
            h["idempotency-key"] = str(uuid.uuid4())
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(5):
            try:
                self.conn.request(method, path, body=data, headers=h)
                r = self.conn.getresponse()
                raw = r.read()
                break
            except (OSError, http.client.HTTPException):
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt == 4:
                    raise
        if r.status >= 300:
            raise RuntimeError(f"{method} {path} -> {r.status}: {raw[:300]!r}")
        return json.loads(raw) if raw else None


def ts(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


class Aws:
    """moto with the testkit gate in front of it, and accounts inside."""

    def __init__(self, gate_bin, delay_ms, work):
        self.procs = []
        self.moto_port = free_port()
        log = open(os.path.join(work, "moto.log"), "w")
        self.procs.append(subprocess.Popen(
            [sys.executable, "-c",
             f"from moto.server import main; main(['-H','127.0.0.1','-p','{self.moto_port}'])"],
            stdout=log, stderr=log, env=dict(os.environ, MOTO_ALLOW_NONEXISTENT_REGION="true")))
        wait_http(self.moto_port, "/moto-api/")
        self.moto = f"http://127.0.0.1:{self.moto_port}"
        gate = subprocess.Popen([gate_bin, "gate", "--upstream", self.moto, "--listen", "127.0.0.1:0",
                                 "--delay-ms", str(delay_ms)], stdout=subprocess.PIPE, text=True)
        self.procs.append(gate)
        line = gate.stdout.readline()
        self.gate = line.split(" on ")[1].split()[0]
        threading.Thread(target=gate.stdout.read, daemon=True).start()
        # The SaaS: an IAM user in moto's default account.
        iam = boto3.client("iam", endpoint_url=self.moto, **BOOT)
        iam.create_user(UserName="xrole-saas")
        key = iam.create_access_key(UserName="xrole-saas")["AccessKey"]
        self.saas_key = (key["AccessKeyId"], key["SecretAccessKey"])
        self.saas_arn = iam.get_user(UserName="xrole-saas")["User"]["Arn"]
        self.next_account = 300000000000

    def customer(self):
        """A fresh account and an IAM client acting as its admin (moto puts an
        assumed-role session in the account its role ARN names)."""
        self.next_account += 1
        account = str(self.next_account)
        sts = boto3.client("sts", endpoint_url=self.moto, **BOOT)
        c = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/admin",
                            RoleSessionName="admin")["Credentials"]
        iam = boto3.client("iam", endpoint_url=self.moto, region_name="us-east-1",
                           aws_access_key_id=c["AccessKeyId"],
                           aws_secret_access_key=c["SecretAccessKey"],
                           aws_session_token=c["SessionToken"])
        return account, iam

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def xrole_role(iam, saas_arn, external_id):
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": saas_arn},
        "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"],
        "Condition": {"StringEquals": {"sts:ExternalId": external_id}}}]}
    arn = iam.create_role(RoleName="xrole", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["ec2:*", "ssm:GetParameter*"], "Resource": "*"},
        {"Effect": "Allow", "Action": "iam:GetRole", "Resource": arn}]}
    iam.put_role_policy(RoleName="xrole", PolicyName="xrole", PolicyDocument=json.dumps(policy))
    return arn


def onboard(port, aws, i, lock):
    """An organization with one active provisioning link; returns (api, link id, account)."""
    admin = Api(port, OPERATOR)
    org = admin.call("POST", "/v1/organizations",
                     {"name": f"org {i}", "admin_email": f"admin{i}@example.com"})
    api = Api(port, org["api_key"]["token"])
    with lock:
        account, iam = aws.customer()
    link = api.call("POST", "/v1/aws-accounts", {"name": f"acct {i}", "access_level": "provisioning",
                                                 "aws_account_id": account, "region": "us-east-1"},
                    idempotent=True)
    role = xrole_role(iam, aws.saas_arn, link["external_id"])
    api.call("PUT", f"/v1/aws-accounts/{link['id']}/role", {"role_arn": role})
    for _ in range(1200):
        state = api.call("GET", f"/v1/aws-accounts/{link['id']}")["state"]
        if state == "active":
            return api, link["id"], account
        if state not in ("pending", "verifying"):
            raise RuntimeError(f"org {i}: link {state}")
        time.sleep(0.1)
    raise RuntimeError(f"org {i}: link never verified")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--xrole", required=True)
    p.add_argument("--gate", required=True)
    p.add_argument("--hostile-jobs", type=int, default=1000)
    p.add_argument("--honest", type=int, default=100)
    p.add_argument("--delay-ms", type=int, default=50)
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="xrole-fairness-")
    aws = Aws(args.gate, args.delay_ms, work)
    server = None
    try:
        port = free_port()
        env = dict(os.environ, AWS_ENDPOINT_URL=aws.gate, AWS_REGION="us-east-1",
                   AWS_ACCESS_KEY_ID=aws.saas_key[0], AWS_SECRET_ACCESS_KEY=aws.saas_key[1],
                   AWS_EC2_METADATA_DISABLED="true", NO_COLOR="1", RUST_LOG="warn",
                   XROLE_OPERATOR_TOKEN=OPERATOR, XROLE_PUBLIC_URL=f"http://127.0.0.1:{port}",
                   XROLE_RATE_LIMIT_PER_SECOND="0", XROLE_ORG_RATE_LIMIT_PER_SECOND="0",
                   XROLE_JOB_POLL_MILLISECONDS="100", XROLE_EXECUTOR_POLL_MILLISECONDS="200",
                   XROLE_ASSUME_PROPAGATION_SECONDS="10")
        log = open(os.path.join(work, "server.log"), "w")
        server = subprocess.Popen([args.xrole, "serve", "--dev", "--listen", f"127.0.0.1:{port}",
                                   "--database-url", f"sqlite://{work}/xrole.db"],
                                  cwd=work, env=env, stdout=log, stderr=log)
        wait_http(port, "/readyz")
        workers = os.environ.get("XROLE_WORKERS", "128")
        per_org = os.environ.get("XROLE_JOBS_PER_ORG", "4")
        print(f"==> onboarding 1 hostile + {args.honest} honest organizations "
              f"(one customer account each, {args.delay_ms} ms added to every AWS call)", flush=True)
        t0 = time.time()
        lock = threading.Lock()
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            orgs = list(ex.map(lambda i: onboard(port, aws, i, lock), range(args.honest + 1)))
        print(f"    {len(orgs)} links active in {time.time() - t0:.0f} s", flush=True)
        (hostile, hostile_link, hostile_account), honest = orgs[0], orgs[1:]

        # The hostile organization points a second link at a role that does
        # not exist and asks for its verification again and again.
        bogus = hostile.call("POST", "/v1/aws-accounts", {"name": "bogus", "access_level": "provisioning",
                                                          "aws_account_id": hostile_account},
                             idempotent=True)
        hostile.call("PUT", f"/v1/aws-accounts/{bogus['id']}/role",
                     {"role_arn": f"arn:aws:iam::{hostile_account}:role/does-not-exist"})
        stop = threading.Event()
        verify_ids, verify_calls = set(), [0]

        def flood_verify():
            api = Api(port, hostile.token)
            while not stop.is_set():
                verify_ids.add(api.call("POST", f"/v1/aws-accounts/{bogus['id']}/verify")["id"])
                verify_calls[0] += 1
                time.sleep(0.02)

        flooder = threading.Thread(target=flood_verify, daemon=True)
        flooder.start()
        print(f"==> the hostile organization queues {args.hostile_jobs} VPC jobs", flush=True)
        t0 = time.time()

        def submit(chunk):
            api = Api(port, hostile.token)
            return [api.call("POST", f"/v1/aws-accounts/{hostile_link}/vpcs", VPC, idempotent=True)["id"]
                    for _ in chunk]

        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            hostile_jobs = [j for c in ex.map(submit, [range(k, args.hostile_jobs, 8) for k in range(8)])
                            for j in c]
        print(f"    queued in {time.time() - t0:.1f} s", flush=True)
        print(f"==> {args.honest} honest organizations queue one VPC job each", flush=True)

        def honest_job(org):
            api, link, _ = org
            return api, api.call("POST", f"/v1/aws-accounts/{link}/vpcs", VPC, idempotent=True)["id"]

        with concurrent.futures.ThreadPoolExecutor(10) as ex:
            jobs = list(ex.map(honest_job, honest))
        waits, pending = [], list(jobs)
        deadline = time.time() + 600
        while pending and time.time() < deadline:
            still = []
            for api, jid in pending:
                j = api.call("GET", f"/v1/jobs/{jid}")
                if j["started_at"]:
                    waits.append(ts(j["started_at"]) - ts(j["created_at"]))
                else:
                    still.append((api, jid))
            pending = still
            time.sleep(0.2)
        honest_window = time.time() - t0
        for api, jid in jobs:
            for _ in range(600):
                if api.call("GET", f"/v1/jobs/{jid}")["state"] in ("succeeded", "failed"):
                    break
                time.sleep(0.2)
        stop.set()
        flooder.join(5)
        states = {}
        for jid in hostile_jobs:
            s = hostile.call("GET", f"/v1/jobs/{jid}")["state"]
            states[s] = states.get(s, 0) + 1
        honest_states = {}
        for api, jid in jobs:
            s = api.call("GET", f"/v1/jobs/{jid}")["state"]
            honest_states[s] = honest_states.get(s, 0) + 1

        print()
        print(f"fairness: {args.hostile_jobs} hostile VPC jobs queued first, then {args.honest} honest ones; "
              f"XROLE_WORKERS={workers}, XROLE_JOBS_PER_ORG={per_org}, {args.delay_ms} ms added to every AWS call")
        print("| honest jobs started | queue wait p50 | p99 | max | target: every one within 5 s |")
        print("|---|---|---|---|---|")
        if waits:
            met = "met" if max(waits) <= 5.0 and len(waits) == len(jobs) else "MISSED"
            print(f"| {len(waits)} of {len(jobs)} | {statistics.median(waits):.2f} s | {pct(waits, 99):.2f} s "
                  f"| {max(waits):.2f} s | {met} |")
        print()
        print("| honest jobs | hostile jobs, by state at the end | verification requests | verification jobs made |")
        print("|---|---|---|---|")
        print(f"| {json.dumps(honest_states)} | {json.dumps(states)} | {verify_calls[0]} | {len(verify_ids)} |")
        print(f"(the hostile jobs kept running for {honest_window:.0f} s beside the honest ones)")
    finally:
        if server:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
        aws.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
