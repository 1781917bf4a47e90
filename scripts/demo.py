"""The flow of scripts/demo, step by step. Talks to xrole over HTTP as a
client would, and to the emulated AWS accounts with boto3; the customer
deploys the stack with the AWS CLI commands of docs/onboarding.md, run as
written. Then the organization path: one connection, a StackSet deployed
from the management account with the commands of docs/onboarding.md, and
one link per member account."""

import argparse
import http.client
import http.server
import json
import os
import pathlib
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

ROOT = pathlib.Path(__file__).resolve().parent.parent
REGION = "us-east-1"
# Where the SaaS hosts the role template (XROLE_TEMPLATE_URL), as an operator
# would: an S3 bucket of its own account.
TEMPLATE_BUCKET = "xrole-templates"
TEMPLATE_URL = f"https://{TEMPLATE_BUCKET}.s3.amazonaws.com/xrole-role.yaml"
# The customer's commands, in the blocks of this document with this marker.
ONBOARDING_DOC = ROOT / "docs/onboarding.md"
CREATE_STACK_MARKER = "<!-- check-docs: demo-create-stack -->"
CREATE_STACKSET_MARKER = "<!-- check-docs: demo-create-stackset -->"
STACKSET_TEMPLATE_URL = f"https://{TEMPLATE_BUCKET}.s3.amazonaws.com/xrole-stackset.yaml"
OPERATOR_TOKEN = "demo-operator-token-" + uuid.uuid4().hex
STEP = [0]


def step(title, proves=None):
    STEP[0] += 1
    print(f"\n[{STEP[0]:2}] {title}", flush=True)
    if proves:
        print(f"     proves: {proves}", flush=True)


def say(msg):
    print(f"     {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port, path, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process exited early with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status < 500:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"nothing answered on 127.0.0.1:{port}{path}")


def aws(service, endpoint, creds):
    return boto3.client(
        service, region_name=REGION, endpoint_url=endpoint,
        config=Config(retries={"total_max_attempts": 1}),
        aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds.get("SessionToken"))


def admin_creds(moto, account):
    """Emulator-only: an admin session in `account` (moto places an AssumeRole
    session in the account the role ARN names)."""
    boot = {"AccessKeyId": "AKIADEMOBOOTSTRAP000", "SecretAccessKey": "boot"}
    return aws("sts", moto, boot).assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/demo-admin", RoleSessionName="admin")["Credentials"]


class Xrole:
    def __init__(self, port):
        self.port = port

    def call(self, method, path, body=None, token=None, idem=False, expect=(200, 201, 202, 204)):
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        if idem:
            headers["idempotency-key"] = str(uuid.uuid4())
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        c.request(method, path, body=json.dumps(body) if body is not None else None,
                  headers=headers)
        r = c.getresponse()
        raw = r.read()
        if r.status not in expect:
            raise SystemExit(f"{method} {path} answered {r.status}: {raw.decode(errors='replace')}")
        return json.loads(raw) if raw and r.getheader("content-type", "").find("json") >= 0 else raw

    def poll(self, path, token, done, timeout=180):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = self.call("GET", path, token=token)
            if done(v):
                return v
            time.sleep(0.3)
        raise SystemExit(f"timed out waiting on {path}: {v}")

    def job(self, job, token, what):
        say(f"job {job['id']} ({job['kind']}) queued")
        j = self.poll(f"/v1/jobs/{job['id']}", token,
                      lambda j: j["state"] in ("succeeded", "failed", "cancelled"))
        if j["state"] != "succeeded":
            raise SystemExit(f"{what} failed: {j}")
        say(f"job {j['state']}: {j['progress']['done']}/{j['progress']['total']} steps, "
            f"{len(j['resources'])} resource(s)")
        return j


class Bucket(http.server.BaseHTTPRequestHandler):
    """Stands in for CloudFormation's response URL."""
    answers = []

    def do_PUT(self):
        Bucket.answers.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def run_lambda(python, kind, link, stack_id, role_arn, function_arn, bucket_url):
    """The template's own Lambda source, run as Lambda would (the emulator
    needs Docker to run it itself). `link["parameters"]` are the stack's
    parameters: a link's (LinkId) or an organization member's (ConnectionId)."""
    p = link["parameters"]
    event = {
        "RequestType": kind, "ServiceToken": function_arn, "ResponseURL": bucket_url,
        "StackId": stack_id, "RequestId": str(uuid.uuid4()), "LogicalResourceId": "Callback",
        "ResourceType": "Custom::XroleCallback",
        "ResourceProperties": {"ServiceToken": function_arn, "LinkId": p.get("LinkId", ""),
                               "ConnectionId": p.get("ConnectionId", ""),
                               "CallbackUrl": p["CallbackUrl"], "CallbackSecret": p["CallbackSecret"],
                               "RoleArn": role_arn, "AccessLevel": p["AccessLevel"]},
    }
    if kind != "Create":
        event["PhysicalResourceId"] = f"xrole-link-{p.get('ConnectionId') or p['LinkId']}"
    subprocess.run([python, str(ROOT / "cloudformation/tests/run_callback.py"),
                    str(ROOT / "cloudformation/xrole-role.yaml")],
                   input=json.dumps(event).encode(), check=True, capture_output=True,
                   env=dict(os.environ, XROLE_CALLBACK_RETRY_SECONDS="5"))
    return Bucket.answers[-1]


def marked_blocks(doc, marker):
    """The text of every fenced block right after a line `marker`, in order."""
    blocks = re.findall(re.escape(marker) + r"\n```[a-z]*\n(.*?)^```", doc.read_text(),
                        re.M | re.S)
    if not blocks:
        raise SystemExit(f"{doc.relative_to(ROOT)} has no block marked {marker}")
    return blocks


def customer_shell(script, cwd, gate_url, creds, extra=None):
    """Runs `script` with bash as the customer would: the AWS CLI of the
    virtualenv on PATH, signed in to their account (the gate in front of the
    emulator standing in for AWS), with `extra` variables they set."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "XROLE_")) and k != "BASH_ENV"}
    env.update(extra or {})
    env.update(PATH=os.path.dirname(os.path.abspath(sys.executable)) + os.pathsep + env.get("PATH", ""),
               AWS_ENDPOINT_URL=gate_url, AWS_DEFAULT_REGION=REGION,
               AWS_ACCESS_KEY_ID=creds["AccessKeyId"],
               AWS_SECRET_ACCESS_KEY=creds["SecretAccessKey"],
               AWS_SESSION_TOKEN=creds["SessionToken"],
               AWS_CONFIG_FILE=os.path.join(cwd, "no-aws-config"),
               AWS_SHARED_CREDENTIALS_FILE=os.path.join(cwd, "no-aws-credentials"))
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"the customer's commands failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r.stdout


def stackset_parameters(onboarding):
    """What the StackSet hands every account's stack: its `Parameters`
    (`- { ParameterKey: K, ParameterValue: !Ref P }`), read from
    xrole-stackset.yaml itself, filled with the connection's values."""
    out = {}
    for line in (ROOT / "cloudformation/xrole-stackset.yaml").read_text().splitlines():
        m = re.match(r"\s*- \{ ParameterKey: (\w+), ParameterValue: !Ref (\w+) \}", line)
        if m:
            out[m.group(1)] = onboarding["parameters"][m.group(2)]
    if "ConnectionId" not in out:
        raise SystemExit("xrole-stackset.yaml passes no ConnectionId")
    return out


def deploy_member_stack(python, gate_url, creds, account, params, kind, bucket_url):
    """Emulator-only: moto does not fan a StackSet out, so the demo creates
    each account's stack instance itself, from the role template with the
    parameters the StackSet passes, and runs its Lambda."""
    cfn = aws("cloudformation", gate_url, creds)
    name = f"StackSet-xrole-{uuid.uuid4()}"
    stack_id = cfn.create_stack(
        StackName=name, TemplateBody=(ROOT / "cloudformation/xrole-role.yaml").read_text(),
        Capabilities=["CAPABILITY_NAMED_IAM"],
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()])["StackId"]
    res = {r["LogicalResourceId"]: r["PhysicalResourceId"]
           for r in cfn.describe_stack_resources(StackName=stack_id)["StackResources"]
           # moto lists a resource whose Condition is false as an empty entry
           if "LogicalResourceId" in r}
    role_arn = aws("iam", gate_url, creds).get_role(RoleName=res["Role"])["Role"]["Arn"]
    function_arn = f"arn:aws:lambda:{REGION}:{account}:function:{res['CallbackFunction']}"
    stack = (stack_id, role_arn, function_arn)
    answer = run_lambda(python, kind, {"parameters": params}, *stack, bucket_url)
    if answer["Status"] != "SUCCESS":
        raise SystemExit(f"the Lambda told CloudFormation {answer}")
    return stack


def organization_walkthrough(python, moto_url, gate_url, api, token, work, bucket_url):
    """One connection for a whole AWS Organization."""
    step("The customer's AWS Organization: a management account, an OU, three member accounts",
         "emulated with AWS Organizations in moto; members are made with CreateAccount")
    management = str(random.randrange(10**11, 10**12))
    mgmt = admin_creds(moto_url, management)
    orgs = aws("organizations", moto_url, mgmt)
    organization = orgs.create_organization(FeatureSet="ALL")["Organization"]
    root = orgs.list_roots()["Roots"][0]["Id"]
    ou = orgs.create_organizational_unit(ParentId=root, Name="Workloads")["OrganizationalUnit"]["Id"]

    def new_member(name):
        account = orgs.create_account(Email=f"{name}@acme.example",
                                      AccountName=name)["CreateAccountStatus"]["AccountId"]
        orgs.move_account(AccountId=account, SourceParentId=root, DestinationParentId=ou)
        return account
    members = [new_member(n) for n in ("prod", "staging", "data")]
    say(f"organization {organization['Id']}, management account {management}, OU {ou}, "
        f"members {', '.join(members)}")

    step("The SaaS creates an organization connection (POST /v1/aws-organizations)",
         "one External ID and one callback secret for every account, sealed; the "
         "management account is named so membership is checked from inside each account")
    conn = api.call("POST", "/v1/aws-organizations",
                    {"name": "Acme organization", "access_level": "read_only",
                     "region": REGION, "management_account_id": management},
                    token=token, idem=True)
    onboarding = conn["onboarding"]
    say(f"connection {conn['id']} is {conn['state']}; StackSet template {onboarding['template_url']}")
    assert onboarding["template_url"] == STACKSET_TEMPLATE_URL
    assert onboarding["parameters"]["ConnectionId"] == conn["id"]

    step("The customer deploys the StackSet from the management account with the AWS CLI, "
         "as docs/onboarding.md says",
         "the documented commands run as written; only the OU ids are the customer's own")
    mgmt_dir = os.path.join(work, "management")
    os.mkdir(mgmt_dir)
    with open(os.path.join(mgmt_dir, "organization.json"), "w") as f:
        json.dump(onboarding, f)
    say("organization.json: the connection's onboarding object; OU_IDS: the OU above")
    script = "\n".join(marked_blocks(ONBOARDING_DOC, CREATE_STACKSET_MARKER))
    for line in script.splitlines():
        if line:
            say(f"$ {line}")
    out = customer_shell(script, mgmt_dir, gate_url, mgmt, {"OU_IDS": ou})
    say(f"aws: {' '.join(out.split())}")
    cfn = aws("cloudformation", gate_url, mgmt)
    stack = cfn.describe_stacks(StackName=onboarding["stack_name"])["Stacks"][0]
    sent = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    # (moto shows a CommaDelimitedList as a Python list's text.)
    if ou not in sent["OrganizationalUnitIds"] or sent["ConnectionId"] != conn["id"]:
        raise SystemExit("the StackSet stack has other OUs or another connection: "
                         f"{sent['OrganizationalUnitIds']} {sent['ConnectionId']}")
    say(f"stack {onboarding['stack_name']}: {stack['StackStatus']}")

    step("Each member account's stack instance reports on its own, signed with the "
         "connection's secret",
         "emulator-only: moto does not fan StackSets out, so the demo creates each "
         "account's stack with the parameters the StackSet passes and runs its Lambda")
    params = stackset_parameters(onboarding)
    stacks = {}
    for account in members:
        creds = admin_creds(moto_url, account)
        stacks[account] = deploy_member_stack(python, gate_url, creds, account, params,
                                              "Create", bucket_url)
        say(f"account {account}: role {stacks[account][1]}")
    path = f"/v1/aws-organizations/{conn['id']}"
    summary = api.poll(path, token, lambda v: v["accounts"]["active"] == len(members))
    say(f"connection is {summary['state']}; accounts: {summary['accounts']}")
    links = api.call("GET", f"/v1/aws-accounts?organization_id={conn['id']}", token=token)["data"]
    by_account = {l["aws_account_id"]: l for l in links}
    if sorted(by_account) != sorted(members):
        raise SystemExit(f"links do not match the members: {links}")
    for account in members:
        say(f"link {by_account[account]['id']} for {account}: {by_account[account]['state']}")

    step("A fourth account joins the OU later (automatic deployment)",
         "its stack reports like the others and becomes a fourth link")
    late = new_member("analytics")
    deploy_member_stack(python, gate_url, admin_creds(moto_url, late), late, params,
                        "Create", bucket_url)
    summary = api.poll(path, token, lambda v: v["accounts"]["active"] == len(members) + 1)
    say(f"accounts: {summary['accounts']}")

    step("Someone holding the StackSet's parameters deploys the role in an account outside "
         "the organization",
         "verification asks AWS Organizations from inside that account: it is refused")
    outsider = str(random.randrange(10**11, 10**12))
    deploy_member_stack(python, gate_url, admin_creds(moto_url, outsider), outsider, params,
                        "Create", bucket_url)
    links = api.call("GET", f"/v1/aws-accounts?organization_id={conn['id']}", token=token)["data"]
    bad = next(l for l in links if l["aws_account_id"] == outsider)
    bad = api.poll(f"/v1/aws-accounts/{bad['id']}", token,
                   lambda v: v["state"] not in ("pending", "verifying"))
    say(f"account {outsider}: {bad['state']} ({bad['last_verification_result']})")
    if bad["state"] != "failed" or bad["last_verification_result"] != "outside_organization":
        raise SystemExit(f"an account outside the organization was accepted: {bad}")

    step("The staging account leaves the OU: its stack is deleted",
         "its Delete callback disconnects that account's link only")
    stack_id, role_arn, function_arn = stacks[members[1]]
    run_lambda(python, "Delete", {"parameters": params}, stack_id, role_arn, function_arn,
               bucket_url)
    links = api.call("GET", f"/v1/aws-accounts?organization_id={conn['id']}", token=token)["data"]
    states = {l["aws_account_id"]: l["state"] for l in links}
    say(", ".join(f"{a}: {s}" for a, s in sorted(states.items())))
    expected = {members[0]: "active", members[1]: "disconnected", members[2]: "active",
                late: "active", outsider: "failed"}
    if states != expected:
        raise SystemExit(f"expected {expected}")

    step("The SaaS deletes the connection (no xrole resources remain in its accounts)",
         "its links go with it; the customer then deletes the StackSet stack")
    api.call("DELETE", path, token=token)
    gone = api.call("GET", path, token=token, expect=(404,))
    say(f"GET {path}: 404 {gone['title'] if isinstance(gone, dict) else ''}".rstrip())
    return onboarding["parameters"]["CallbackSecret"]


def tagged(ec2, rds, link_id):
    f = [{"Name": "tag:xrole:link", "Values": [link_id]}]
    out = [v["VpcId"] for v in ec2.describe_vpcs(Filters=f)["Vpcs"]]
    out += [s["SubnetId"] for s in ec2.describe_subnets(Filters=f)["Subnets"]]
    for r in ec2.describe_instances(Filters=f)["Reservations"]:
        out += [i["InstanceId"] for i in r["Instances"]
                if i["State"]["Name"] not in ("terminated", "shutting-down")]
    for d in rds.describe_db_instances()["DBInstances"]:
        tags = {t["Key"]: t["Value"] for t in d.get("TagList", [])}
        if tags.get("xrole:link") == link_id:
            out.append(d["DBInstanceIdentifier"])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    args = ap.parse_args()
    python = sys.executable
    work = tempfile.mkdtemp(prefix="xrole-demo-")
    procs = []
    bucket = None
    try:
        step("Start the AWS emulator (moto) and the STS gate in front of it",
             "the gate decides AssumeRole like AWS: trust policy, principal, sts:ExternalId")
        moto_port = free_port()
        moto = subprocess.Popen([python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(moto)
        wait_http(moto_port, "/moto-api/", moto)
        moto_url = f"http://127.0.0.1:{moto_port}"
        gate = subprocess.Popen([os.path.join(args.bin_dir, "xrole-testkit"), "gate",
                                 "--upstream", moto_url, "--listen", "127.0.0.1:0",
                                 "--stop-on-stdin-eof"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(gate)
        gate_url = gate.stdout.readline().split(" listening on ")[1].split()[0]
        say(f"moto at {moto_url}, gate at {gate_url}")

        saas_account, customer_account = (str(n) for n in random.sample(range(10**11, 10**12), 2))
        step(f"The SaaS identity: IAM user xrole-saas in account {saas_account}",
             "xrole runs with its own credentials only; customers never hand over keys")
        iam = aws("iam", moto_url, admin_creds(moto_url, saas_account))
        saas_arn = iam.create_user(UserName="xrole-saas")["User"]["Arn"]
        key = iam.create_access_key(UserName="xrole-saas")["AccessKey"]
        say(saas_arn)
        customer = admin_creds(moto_url, customer_account)
        say(f"the customer's account: {customer_account}")
        s3 = aws("s3", moto_url, admin_creds(moto_url, saas_account))
        s3.create_bucket(Bucket=TEMPLATE_BUCKET)
        s3.put_object(Bucket=TEMPLATE_BUCKET, Key="xrole-role.yaml",
                      Body=(ROOT / "cloudformation/xrole-role.yaml").read_bytes())
        s3.put_object(Bucket=TEMPLATE_BUCKET, Key="xrole-stackset.yaml",
                      Body=(ROOT / "cloudformation/xrole-stackset.yaml").read_bytes())
        say(f"the role template, hosted in the SaaS's S3 bucket: {TEMPLATE_URL}")

        step("Start `xrole serve --dev` on SQLite",
             "no keyring configured: --dev creates one in a 0600 file and says so")
        port = free_port()
        env = dict(os.environ, AWS_ENDPOINT_URL=gate_url, AWS_REGION=REGION,
                   AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"],
                   XROLE_LISTEN=f"127.0.0.1:{port}", XROLE_PUBLIC_URL=f"http://127.0.0.1:{port}",
                   XROLE_DATABASE_URL=os.path.join(work, "xrole.db"),
                   XROLE_TEMPLATE_URL=TEMPLATE_URL, XROLE_STACKSET_TEMPLATE_URL=STACKSET_TEMPLATE_URL,
                   XROLE_OPERATOR_TOKEN=OPERATOR_TOKEN, XROLE_EXECUTOR_POLL_MILLISECONDS="50",
                   XROLE_JOB_POLL_MILLISECONDS="50", RUST_LOG="warn")
        env.pop("AWS_PROFILE", None)
        log = open(os.path.join(work, "server.log"), "w")
        server = subprocess.Popen([os.path.join(args.bin_dir, "xrole"), "serve", "--dev"],
                                  cwd=work, env=env, stdout=log, stderr=log)
        procs.append(server)
        wait_http(port, "/healthz", server)
        api = Xrole(port)
        say(f"listening on 127.0.0.1:{port}; /readyz: {api.call('GET', '/readyz')}")

        step("Create an organization (operator token) with its first admin and API key")
        org = api.call("POST", "/v1/organizations",
                       {"name": "Acme", "admin_email": "admin@acme.example"}, token=OPERATOR_TOKEN)
        token = org["api_key"]["token"]
        say(f"organization {org['organization']['id']}, key {token[:8]}… (shown once)")

        step("Link an AWS account with examples/onboarding_flow.rs, a client of the API",
             "the server generates the External ID and a callback secret, both stored sealed")
        client = subprocess.Popen(
            [os.path.join(args.bin_dir, "examples", "onboarding_flow")],
            env=dict(os.environ, XROLE_URL=f"http://127.0.0.1:{port}", XROLE_API_KEY=token,
                     XROLE_CUSTOMER_ACCOUNT=customer_account),
            stdout=subprocess.PIPE, text=True)
        procs.append(client)
        while True:
            line = client.stdout.readline()
            if not line:
                raise SystemExit("the onboarding client exited early")
            if line.startswith("{"):
                link = json.loads(line)
                break
            say(f"client: {line.strip()[:110]}")
        link["id"] = link["link_id"]
        link.update(stack_name=link["onboarding"]["stack_name"],
                    parameters=link["onboarding"]["parameters"])
        say(f"link {link['id']}; External ID {link['external_id']}")
        assert link["parameters"]["SaasPrincipalArn"] == saas_arn
        assert link["onboarding"]["template_url"] == TEMPLATE_URL
        v = api.call("GET", f"/v1/aws-accounts/{link['id']}", token=token)
        say(f"the link is {v['state']} until the customer's stack reports")

        step("The customer deploys the stack with the AWS CLI, as docs/onboarding.md says",
             "the documented commands run as written; the role trusts exactly the SaaS "
             "principal, and only with the External ID")
        customer_dir = os.path.join(work, "customer")
        os.mkdir(customer_dir)
        with open(os.path.join(customer_dir, "onboarding.json"), "w") as f:
            json.dump(link["onboarding"], f)
        say("onboarding.json: the link's onboarding object, as the SaaS hands it over")
        script = "\n".join(marked_blocks(ONBOARDING_DOC, CREATE_STACK_MARKER))
        for line in script.splitlines():
            if line:
                say(f"$ {line}")
        out = customer_shell(script, customer_dir, gate_url, customer)
        say(f"aws: {' '.join(out.split())}")
        cfn = aws("cloudformation", gate_url, customer)
        stack = cfn.describe_stacks(StackName=link["stack_name"])["Stacks"][0]
        stack_id = stack["StackId"]
        # CREATE_IN_PROGRESS until the custom resource's Lambda answers (below).
        if json.loads(out)["StackId"] != stack_id or \
                stack["StackStatus"] not in ("CREATE_IN_PROGRESS", "CREATE_COMPLETE"):
            raise SystemExit(f"the stack was not created: {stack}")
        say(f"stack {link['stack_name']}: {stack['StackStatus']} "
            "(until its Callback resource hears from the Lambda, below)")
        res = {r["LogicalResourceId"]: r["PhysicalResourceId"]
               for r in cfn.describe_stack_resources(StackName=stack_id)["StackResources"]
           # moto lists a resource whose Condition is false as an empty entry
           if "LogicalResourceId" in r}
        role_arn = aws("iam", gate_url, customer).get_role(RoleName=res["Role"])["Role"]["Arn"]
        function_arn = f"arn:aws:lambda:{REGION}:{customer_account}:function:{res['CallbackFunction']}"
        say(f"role {role_arn}")

        step("Confused deputy check: the SaaS assumes the role WITHOUT the External ID",
             "the trust policy refuses it (the gate enforces what AWS enforces)")
        sts = aws("sts", gate_url, {"AccessKeyId": key["AccessKeyId"],
                                     "SecretAccessKey": key["SecretAccessKey"]})
        try:
            sts.assume_role(RoleArn=role_arn, RoleSessionName="no-external-id")
            raise SystemExit("the role is open without the External ID")
        except ClientError as e:
            say(f"refused: {e.response['Error']['Code']}")

        step("The stack's Lambda sends the signed callback (Standard Webhooks HMAC)",
             "the server verifies the signature, then verifies the role itself")
        bport = free_port()
        bucket = http.server.ThreadingHTTPServer(("127.0.0.1", bport), Bucket)
        threading.Thread(target=bucket.serve_forever, daemon=True).start()
        answer = run_lambda(python, "Create", link, stack_id, role_arn, function_arn,
                            f"http://127.0.0.1:{bport}/response")
        say(f"CloudFormation was told: {answer['Status']}")
        v = api.poll(f"/v1/aws-accounts/{link['id']}", token,
                     lambda v: v["state"] not in ("pending", "verifying"))
        say(f"link is {v['state']} (verification: {v['last_verification_result']})")
        if v["state"] != "active":
            raise SystemExit(f"link not active: {v}")

        base = f"/v1/aws-accounts/{link['id']}"
        step("The client sees the link active and provisions a VPC (2 zones, subnets, gateway, routes)",
             "202 + a job; a worker runs it on a short-lived customer session")
        out, _ = client.communicate(timeout=300)
        for line in out.splitlines():
            say(f"client: {line}")
        if client.returncode != 0:
            raise SystemExit(f"the onboarding client failed with {client.returncode}")
        vpc = next(r for r in api.call("GET", f"{base}/resources", token=token)["data"]
                   if r["kind"] == "vpc")

        step("Provision 2 EC2 instances and an RDS PostgreSQL database in that VPC",
             "IMDSv2, encrypted volumes; RDS keeps the master password in the customer's Secrets Manager")
        ij = api.call("POST", f"{base}/instances", {"name": "web", "vpc_id": vpc["id"],
                                                    "instance_type": "t3.micro", "count": 2},
                      token=token, idem=True)
        dj = api.call("POST", f"{base}/databases", {"name": "main", "vpc_id": vpc["id"],
                                                    "engine": "postgres", "instance_class": "db.t3.micro",
                                                    "allocated_storage_gb": 20}, token=token, idem=True)
        api.job(ij, token, "the instances")
        api.job(dj, token, "the database")

        step("Inspect the customer's account with their own admin credentials",
             "every resource is there, tagged xrole:managed-by=xrole; none in the SaaS account")
        ec2c, rdsc = aws("ec2", moto_url, customer), aws("rds", moto_url, customer)
        live = tagged(ec2c, rdsc, link["id"])
        say(f"customer account: {len(live)} tagged resources: {', '.join(sorted(live))}")
        saas_creds = {"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}
        ours = tagged(aws("ec2", moto_url, saas_creds), aws("rds", moto_url, saas_creds), link["id"])
        say(f"SaaS account: {len(ours)} tagged resources")
        if not live or ours:
            raise SystemExit("resources are not where they belong")
        audit = api.call("GET", "/v1/audit-events?limit=200", token=token)["data"]
        assumes = [e for e in audit if e["action"] == "aws.assume_role"]
        say(f"audit trail: {len(audit)} events, {len(assumes)} AssumeRole "
            f"(session names like {assumes[0]['details']['session_name']})")

        step("Tear it all down: DELETE /v1/resources/{vpc}?cascade=true",
             "children first (instances, database), then the network; nothing tagged remains")
        api.job(api.call("DELETE", f"/v1/resources/{vpc['id']}?cascade=true", token=token),
                token, "teardown")
        left = tagged(ec2c, rdsc, link["id"])
        say(f"tagged resources left in the customer account: {len(left)}")
        if left:
            raise SystemExit(f"left behind: {left}")

        step("The customer deletes the stack: the Delete callback disconnects the link")
        run_lambda(python, "Delete", link, stack_id, role_arn, function_arn,
                   f"http://127.0.0.1:{bport}/response")
        v = api.call("GET", f"/v1/aws-accounts/{link['id']}", token=token)
        say(f"link is {v['state']}")

        org_secret = organization_walkthrough(python, moto_url, gate_url, api, token, work,
                                              f"http://127.0.0.1:{bport}/response")

        log.flush()
        logs = pathlib.Path(work, "server.log").read_text()
        for secret in (token, link["parameters"]["CallbackSecret"], key["SecretAccessKey"],
                       org_secret):
            if secret in logs:
                raise SystemExit("a secret appeared in the server log")
        say("no API key, callback secret or AWS secret appeared in the server log")
        print("\nDemo complete: every step above held.", flush=True)
    finally:
        if bucket:
            bucket.shutdown()
        for p in reversed(procs):
            if p.poll() is None:
                if p.stdin:
                    p.stdin.close()
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
