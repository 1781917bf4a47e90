"""AssumeRole through the xrole STS gate with boto3: the same allow/deny
results the Rust tests get with aws-sdk-sts.

Usage: gate_check.py --gate http://127.0.0.1:G --moto http://127.0.0.1:M

Set-up talks to moto directly (it does not check trust policies); every
checked call goes through the gate. Prints one JSON object: case name ->
"allow" or the AWS error code.
"""

import argparse
import json
import random
import urllib.request

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

REGION = "us-east-1"
EXT = "xrole-ext-0123456789abcdef"
# No retries (each answer is seen), and no client-side length checks, so
# that the gate, like STS, is the one refusing a one-character session name.
NO_RETRY = Config(retries={"total_max_attempts": 1, "mode": "standard"}, parameter_validation=False)


def client(service, endpoint, creds):
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=endpoint,
        config=NO_RETRY,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds.get("SessionToken"),
    )


def admin_creds(moto, account):
    """moto places an AssumeRole session in the account the role ARN names."""
    boot = {"AccessKeyId": "AKIAGATECHECKBOOT000", "SecretAccessKey": "boot"}
    out = client("sts", moto, boot).assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/gate-check-admin", RoleSessionName="admin"
    )
    return out["Credentials"]


def trust(principals, external_id=None):
    st = {"Effect": "Allow", "Principal": {"AWS": principals}, "Action": ["sts:AssumeRole"]}
    if external_id is not None:
        st["Condition"] = {"StringEquals": {"sts:ExternalId": external_id}}
    return json.dumps({"Version": "2012-10-17", "Statement": [st]})


def outcome(call):
    try:
        call()
        return "allow"
    except ClientError as e:
        return e.response["Error"]["Code"]


def control(gate, command, **params):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    with urllib.request.urlopen(f"{gate}/_xrole_gate/{command}?{query}", data=b"") as r:
        return r.read().decode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gate", required=True)
    ap.add_argument("--moto", required=True)
    args = ap.parse_args()
    gate, moto = args.gate, args.moto
    saas, customer, other = random.sample(range(100000000000, 999999999999), 3)
    saas, customer, other = str(saas), str(customer), str(other)

    # The SaaS identity: an IAM user with static keys in the SaaS account.
    saas_iam = client("iam", moto, admin_creds(moto, saas))
    saas_arn = saas_iam.create_user(UserName="xrole-saas")["User"]["Arn"]
    key = saas_iam.create_access_key(UserName="xrole-saas")["AccessKey"]
    saas_creds = {"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}

    # The customer's roles.
    cust_iam = client("iam", moto, admin_creds(moto, customer))
    role = cust_iam.create_role(
        RoleName="xrole", AssumeRolePolicyDocument=trust(saas_arn, EXT), MaxSessionDuration=3600
    )["Role"]["Arn"]
    long_role = cust_iam.create_role(
        RoleName="long",
        AssumeRolePolicyDocument=trust([saas_arn, role]),
        MaxSessionDuration=43200,
    )["Role"]["Arn"]

    sts = client("sts", gate, saas_creds)
    stranger = client("sts", gate, admin_creds(moto, other))

    def assume(s, arn, name="gate-check", **kw):
        return s.assume_role(RoleArn=arn, RoleSessionName=name, **kw)

    results = {}
    session = assume(sts, role, ExternalId=EXT)
    who = client("sts", gate, session["Credentials"]).get_caller_identity()
    results["right_external_id"] = "allow" if who["Account"] == customer else "wrong account"
    results["wrong_external_id"] = outcome(lambda: assume(sts, role, ExternalId="xrole-ext-other"))
    results["missing_external_id"] = outcome(lambda: assume(sts, role))
    results["other_account_principal"] = outcome(lambda: assume(stranger, role, ExternalId=EXT))
    results["absent_role"] = outcome(
        lambda: assume(sts, f"arn:aws:iam::{customer}:role/absent", ExternalId=EXT)
    )
    # The session's own role must allow what the session does: nothing yet.
    chained = client("sts", gate, session["Credentials"])
    ec2 = client("ec2", gate, session["Credentials"])
    results["chained_without_permission"] = outcome(lambda: assume(chained, long_role))
    results["describe_without_permission"] = outcome(lambda: ec2.describe_vpcs())
    cust_iam.put_role_policy(
        RoleName="xrole",
        PolicyName="chain-and-describe",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": long_role},
            {"Effect": "Allow", "Action": "ec2:DescribeVpcs", "Resource": "*"}]}),
    )
    results["describe_vpcs"] = outcome(lambda: ec2.describe_vpcs())
    results["describe_vpcs_denied_count"] = int(
        control(gate, "decision_count", action="ec2:DescribeVpcs", decision="denied")
    )
    control(gate, "enforce", on="false")
    results["describe_subnets_enforcement_off"] = outcome(lambda: ec2.describe_subnets())
    control(gate, "enforce", on="true")
    results["describe_subnets"] = outcome(lambda: ec2.describe_subnets())
    results["chained_7200"] = outcome(lambda: assume(chained, long_role, DurationSeconds=7200))
    results["chained_3600"] = outcome(lambda: assume(chained, long_role, DurationSeconds=3600))
    results["direct_7200"] = outcome(lambda: assume(sts, long_role, DurationSeconds=7200))
    results["over_max_session"] = outcome(
        lambda: assume(sts, role, ExternalId=EXT, DurationSeconds=3601)
    )
    results["session_name_too_short"] = outcome(lambda: assume(sts, role, name="a", ExternalId=EXT))
    results["external_id_bad_chars"] = outcome(lambda: assume(sts, role, ExternalId="has space"))
    results["source_identity_not_allowed"] = outcome(
        lambda: assume(sts, long_role, SourceIdentity="alice")
    )

    # Faults over the control API.
    control(gate, "fail_next", action="AssumeRole", n=1, fault="throttling")
    results["throttled"] = outcome(lambda: assume(sts, role, ExternalId=EXT))
    results["after_throttling"] = outcome(lambda: assume(sts, role, ExternalId=EXT))
    control(gate, "skip_external_id_check", on="true")
    results["open_without_external_id"] = outcome(lambda: assume(sts, role))
    control(gate, "skip_external_id_check", on="false")
    results["assume_role_count_for_customer"] = int(
        control(gate, "count", action="AssumeRole", account=customer)
    )
    print(json.dumps(results, sort_keys=True))


if __name__ == "__main__":
    main()
