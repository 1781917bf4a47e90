"""Plain sequential boto3: the same AWS calls xrole-provision makes for the full
environment (VPC, 2 public + 2 private subnets, IGW, route table, security group,
1 EC2, 1 RDS), created then torn down, with the same tags and waits.

python scripts/bench-provision.py --endpoint http://127.0.0.1:PORT [--iterations N]
prints one JSON line: median wall times and AWS calls per environment.
"""

import argparse
import json
import statistics
import time
import uuid

import boto3

AMI_PARAM = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"


class Aws:
    def __init__(self, endpoint):
        kw = dict(
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
            aws_secret_access_key="bench-secret",
        )
        self.calls = 0
        self.ec2 = boto3.client("ec2", **kw)
        self.rds = boto3.client("rds", **kw)
        self.ssm = boto3.client("ssm", **kw)
        for c in (self.ec2, self.rds, self.ssm):
            c.meta.events.register("before-send", self._count)

    def _count(self, **_):
        self.calls += 1


def tags(job, step, rtype=None):
    t = [
        {"Key": "xrole:managed-by", "Value": "xrole"},
        {"Key": "xrole:org", "Value": "org_bench"},
        {"Key": "xrole:link", "Value": "link_bench"},
        {"Key": "xrole:job", "Value": job},
        {"Key": "xrole:step", "Value": step},
        {"Key": "Name", "Value": "bench-" + step.replace("/", "-")},
    ]
    return [{"ResourceType": rtype, "Tags": t}] if rtype else t


def wait_instance(ec2, iid, state):
    while True:
        try:
            r = ec2.describe_instances(InstanceIds=[iid])
            s = r["Reservations"][0]["Instances"][0]["State"]["Name"]
        except ec2.exceptions.ClientError:
            s = None
        if s == state or (state == "terminated" and s is None):
            return
        time.sleep(0.1)


def wait_db(rds, ident, gone):
    while True:
        try:
            s = rds.describe_db_instances(DBInstanceIdentifier=ident)["DBInstances"][0]["DBInstanceStatus"]
        except rds.exceptions.DBInstanceNotFoundFault:
            s = None
        if (gone and s is None) or (not gone and s == "available"):
            return
        time.sleep(0.1)


def create(aws, job):
    ec2, rds, ssm = aws.ec2, aws.rds, aws.ssm
    ids = {}
    ami = ssm.get_parameter(Name=AMI_PARAM)["Parameter"]["Value"]
    image = ec2.describe_images(ImageIds=[ami])["Images"][0]
    root = image["RootDeviceName"]
    size = next(m["Ebs"]["VolumeSize"] for m in image["BlockDeviceMappings"] if m["DeviceName"] == root)
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16", TagSpecifications=tags(job, "vpc", "vpc"))["Vpc"]["VpcId"]
    ids["vpc"] = vpc
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsSupport={"Value": True})
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    blocks = {"public": ["10.42.0.0/18", "10.42.64.0/18"], "private": ["10.42.128.0/18", "10.42.192.0/18"]}
    for tier, cidrs in blocks.items():
        for z, (cidr, az) in enumerate(zip(cidrs, ["us-east-1a", "us-east-1b"])):
            step = f"subnet/{tier}/{z}"
            ids[step] = ec2.create_subnet(
                VpcId=vpc, CidrBlock=cidr, AvailabilityZone=az, TagSpecifications=tags(job, step, "subnet")
            )["Subnet"]["SubnetId"]
    igw = ec2.create_internet_gateway(TagSpecifications=tags(job, "igw", "internet-gateway"))
    igw = ids["igw"] = igw["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    rtb = ec2.create_route_table(
        VpcId=vpc, ClientToken=f"{job}-rtb", TagSpecifications=tags(job, "rtb/public", "route-table")
    )["RouteTable"]["RouteTableId"]
    ids["rtb"] = rtb
    ec2.create_route(RouteTableId=rtb, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    ids["assoc"] = [
        ec2.associate_route_table(RouteTableId=rtb, SubnetId=ids[f"subnet/public/{z}"])["AssociationId"]
        for z in range(2)
    ]
    sg = ec2.create_security_group(
        GroupName="bench-app", Description="web and database traffic", VpcId=vpc,
        TagSpecifications=tags(job, "sg/app", "security-group"),
    )["GroupId"]
    ids["sg"] = sg
    ec2.authorize_security_group_ingress(
        GroupId=sg,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
            {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "UserIdGroupPairs": [{"GroupId": sg}]},
        ],
        TagSpecifications=tags(job, "sg/app/ingress", "security-group-rule"),
    )
    inst = ec2.run_instances(
        ImageId=ami, InstanceType="t3.micro", MinCount=1, MaxCount=1,
        SubnetId=ids["subnet/public/0"], SecurityGroupIds=[sg], ClientToken=f"{job}-web-0",
        MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"},
        BlockDeviceMappings=[{"DeviceName": root, "Ebs": {
            "Encrypted": True, "DeleteOnTermination": True, "VolumeType": "gp3", "VolumeSize": size}}],
        TagSpecifications=tags(job, "instance/web/0", "instance") + tags(job, "instance/web/0", "volume"),
    )["Instances"][0]["InstanceId"]
    ids["instance"] = inst
    wait_instance(ec2, inst, "running")
    name = "bench-main-" + job[:8]
    rds.create_db_subnet_group(
        DBSubnetGroupName=name, DBSubnetGroupDescription="bench main",
        SubnetIds=[ids["subnet/private/0"], ids["subnet/private/1"]], Tags=tags(job, "db-subnet-group/main"),
    )
    rds.create_db_instance(
        DBInstanceIdentifier=name, Engine="postgres", EngineVersion="16.4", DBInstanceClass="db.t3.micro",
        AllocatedStorage=20, MasterUsername="xrole", ManageMasterUserPassword=True, StorageEncrypted=True,
        PubliclyAccessible=False, MultiAZ=False, DeletionProtection=False, CopyTagsToSnapshot=True,
        DBSubnetGroupName=name, VpcSecurityGroupIds=[sg], Tags=tags(job, "db/main"),
    )
    wait_db(rds, name, gone=False)
    ids["db"] = name
    return ids


def teardown(aws, ids):
    ec2, rds = aws.ec2, aws.rds
    ec2.terminate_instances(InstanceIds=[ids["instance"]])
    wait_instance(ec2, ids["instance"], "terminated")
    rds.delete_db_instance(DBInstanceIdentifier=ids["db"], SkipFinalSnapshot=True, DeleteAutomatedBackups=True)
    wait_db(rds, ids["db"], gone=True)
    rds.delete_db_subnet_group(DBSubnetGroupName=ids["db"])
    for a in ids["assoc"]:
        ec2.disassociate_route_table(AssociationId=a)
    ec2.delete_route_table(RouteTableId=ids["rtb"])
    ec2.detach_internet_gateway(InternetGatewayId=ids["igw"], VpcId=ids["vpc"])
    ec2.delete_internet_gateway(InternetGatewayId=ids["igw"])
    ec2.delete_security_group(GroupId=ids["sg"])
    for tier in ("public", "private"):
        for z in range(2):
            ec2.delete_subnet(SubnetId=ids[f"subnet/{tier}/{z}"])
    ec2.delete_vpc(VpcId=ids["vpc"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--iterations", type=int, default=5)
    args = ap.parse_args()
    aws = Aws(args.endpoint)
    c_times, t_times = [], []
    c_calls = t_calls = 0
    for i in range(args.iterations + 1):  # one warm-up round
        job = str(uuid.uuid4())
        before = aws.calls
        t0 = time.perf_counter()
        ids = create(aws, job)
        t1 = time.perf_counter()
        mid = aws.calls
        teardown(aws, ids)
        t2 = time.perf_counter()
        if i > 0:
            c_times.append(t1 - t0)
            t_times.append(t2 - t1)
            c_calls, t_calls = mid - before, aws.calls - mid
    print(json.dumps({
        "tool": "boto3",
        "create_s": statistics.median(c_times),
        "teardown_s": statistics.median(t_times),
        "create_calls": c_calls,
        "teardown_calls": t_calls,
    }))


if __name__ == "__main__":
    main()
