#!/usr/bin/python3
"""boto3 (Debian's python3-boto3, unmodified) against azote-region: the client nobody here
wrote. Launches instances, waits with botocore's own waiters, filters, paginates, tags,
stops/starts, reads the console, terminates; then checks EC2's error codes for a wrong
secret, an expired signature and a denied action.

  boto3_story.py URL CA_BUNDLE ADMIN_KEY ADMIN_SECRET READER_KEY READER_SECRET

Prints one line per step; exit 0 when every check held, 1 with the failed check.
"""
import datetime
import sys
import types

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.credentials
import botocore.httpsession
import botocore.config
import botocore.exceptions


def main():
    url, ca, ak, sk, rk, rs = sys.argv[1:7]
    cfg = botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=10, read_timeout=120)

    def client(key, secret):
        return boto3.client("ec2", region_name="us-east-1", endpoint_url=url, verify=ca, aws_access_key_id=key,
                            aws_secret_access_key=secret, config=cfg)

    ec2 = client(ak, sk)
    fails = []

    def check(cond, what):
        print(("ok   " if cond else "FAIL ") + what, flush=True)
        if not cond:
            fails.append(what)

    # Errors EC2's way, as botocore parses them.
    def code_of(fn):
        try:
            fn()
        except botocore.exceptions.ClientError as e:
            return e.response["Error"]["Code"]
        return None

    regions = ec2.describe_regions()["Regions"]
    check([r["RegionName"] for r in regions] == ["us-east-1"], "describe_regions names the region")
    zones = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]]
    check(zones == ["us-east-1a", "us-east-1b", "us-east-1c"], "describe_availability_zones: the hosts' zones (%s)" % zones)
    itypes = ec2.describe_instance_types(InstanceTypes=["t3.micro"])["InstanceTypes"]
    check(itypes and itypes[0]["VCpuInfo"]["DefaultVCpus"] == 2 and itypes[0]["MemoryInfo"]["SizeInMiB"] == 1024,
          "describe_instance_types t3.micro: 2 vCPUs, 1024 MiB")

    r = ec2.run_instances(ImageId="ami-builtin", InstanceType="t3.nano", MinCount=3, MaxCount=3,
                          TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "boto"}]}])
    ids = [i["InstanceId"] for i in r["Instances"]]
    check(len(ids) == 3 and r["ReservationId"].startswith("r-"), "run_instances: 3 instances in one reservation")
    placed = sorted(i["Placement"]["AvailabilityZone"] for i in r["Instances"])
    check(placed == ["us-east-1a", "us-east-1b", "us-east-1c"], "run_instances spreads them over the three hosts (%s)" % placed)
    ec2.get_waiter("instance_running").wait(InstanceIds=ids, WaiterConfig={"Delay": 1, "MaxAttempts": 90})
    print("ok   instance_running waiter", flush=True)

    got = ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": ["boto"]},
                                          {"Name": "instance-state-name", "Values": ["running"]}])
    found = sorted(i["InstanceId"] for res in got["Reservations"] for i in res["Instances"])
    check(found == sorted(ids), "describe_instances filters tag:Name and instance-state-name")

    st = ec2.describe_instance_status(InstanceIds=ids)["InstanceStatuses"]
    check(len(st) == 3 and all(x["InstanceState"]["Name"] == "running" and x["SystemStatus"]["Status"] == "ok"
                               for x in st), "describe_instance_status: running, ok")

    pages = list(ec2.get_paginator("describe_instances").paginate(PaginationConfig={"PageSize": 5}))
    seen = [i["InstanceId"] for p in pages for res in p["Reservations"] for i in res["Instances"]]
    check(sorted(seen) == sorted(set(seen)) and set(ids) <= set(seen), "the paginator sees each instance once")
    few = ec2.describe_instances(MaxResults=5)
    check("NextToken" not in few or few["NextToken"], "MaxResults answers a page")

    ec2.create_tags(Resources=[ids[0]], Tags=[{"Key": "role", "Value": "web"}])
    tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [ids[0]]}])["Tags"]
    check({(t["Key"], t["Value"]) for t in tags} == {("Name", "boto"), ("role", "web")}, "create_tags/describe_tags")
    ec2.delete_tags(Resources=[ids[0]], Tags=[{"Key": "role"}])
    tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [ids[0]]}])["Tags"]
    check([t["Key"] for t in tags] == ["Name"], "delete_tags")
    ec2.delete_tags(Resources=[ids[0]])  # no Tag: every tag, as EC2
    tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [ids[0]]}])["Tags"]
    check(tags == [], "delete_tags without tags deletes them all (%s)" % tags)

    ec2.stop_instances(InstanceIds=[ids[0]])
    ec2.get_waiter("instance_stopped").wait(InstanceIds=[ids[0]], WaiterConfig={"Delay": 1, "MaxAttempts": 90})
    print("ok   instance_stopped waiter", flush=True)
    # Volumes: made in the stopped instance's zone, attached (azote-hv has no hot-plug yet:
    # volumes attach to stopped instances), detached, deleted; waiters volume_available
    # and volume_in_use.
    zone = ec2.describe_instances(InstanceIds=[ids[0]])["Reservations"][0]["Instances"][0]["Placement"]["AvailabilityZone"]
    vol = ec2.create_volume(AvailabilityZone=zone, Size=1, VolumeType="gp3",
                            TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "Name", "Value": "data"}]}])
    vid = vol["VolumeId"]
    check(vid.startswith("vol-") and vol["Size"] == 1 and vol["AvailabilityZone"] == zone, "create_volume")
    ec2.get_waiter("volume_available").wait(VolumeIds=[vid], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    print("ok   volume_available waiter", flush=True)
    att = ec2.attach_volume(VolumeId=vid, InstanceId=ids[0], Device="/dev/sdf")
    check(att["Device"] == "/dev/sdf" and att["InstanceId"] == ids[0], "attach_volume answers EC2's device name")
    ec2.get_waiter("volume_in_use").wait(VolumeIds=[vid], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    print("ok   volume_in_use waiter", flush=True)
    on = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [ids[0]]}])["Volumes"]
    devices = sorted(a["Device"] for v in on for a in v["Attachments"])
    check(devices == ["/dev/sdf", "/dev/xvda"], "describe_volumes: the root volume and the new one on %s (%s)" % (ids[0], devices))
    tagged = ec2.describe_volumes(Filters=[{"Name": "tag:Name", "Values": ["data"]}])["Volumes"]
    check([v["VolumeId"] for v in tagged] == [vid], "describe_volumes tag:Name")
    ec2.detach_volume(VolumeId=vid, InstanceId=ids[0])
    ec2.get_waiter("volume_available").wait(VolumeIds=[vid], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    ec2.delete_volume(VolumeId=vid)
    check(code_of(lambda: ec2.describe_volumes(VolumeIds=[vid])) == "InvalidVolume.NotFound", "delete_volume")

    ec2.start_instances(InstanceIds=[ids[0]])
    ec2.get_waiter("instance_running").wait(InstanceIds=[ids[0]], WaiterConfig={"Delay": 1, "MaxAttempts": 90})
    print("ok   started again", flush=True)

    # EC2 sends the console in base64 and botocore decodes it (its decode_console_output
    # handler): encoded twice, or not at all, this fails.
    out = ec2.get_console_output(InstanceId=ids[1])
    check("azote-guest" in out.get("Output", ""), "get_console_output: the guest's console, base64 as EC2")

    # The network: a VPC, a subnet, a group with a rule; an instance launched into them
    # gets its address from the region; then all of it goes again.
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    sub = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.3.0/24", AvailabilityZone=zone)["Subnet"]
    check(sub["AvailableIpAddressCount"] == 251, "create_subnet: a /24 has 251 usable addresses")
    sg = ec2.create_security_group(GroupName="api", Description="api servers", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "10.20.0.0/16"}]}])
    perms = ec2.describe_security_groups(GroupIds=[sg])["SecurityGroups"][0]["IpPermissions"]
    check([(p["IpProtocol"], p["FromPort"], p["IpRanges"][0]["CidrIp"]) for p in perms] == [("tcp", 443, "10.20.0.0/16")],
          "authorize_security_group_ingress/describe_security_groups (%s)" % perms)
    r = ec2.run_instances(ImageId="ami-builtin", InstanceType="t3.nano", MinCount=1, MaxCount=1,
                          SubnetId=sub["SubnetId"], SecurityGroupIds=[sg])
    net = r["Instances"][0]
    check(net["SubnetId"] == sub["SubnetId"] and net["VpcId"] == vpc and net["PrivateIpAddress"] == "10.20.3.4" and
          [g["GroupId"] for g in net["SecurityGroups"]] == [sg], "run_instances into the subnet with the group")
    check(code_of(lambda: ec2.delete_security_group(GroupId=sg)) == "DependencyViolation",
          "a group in use: DependencyViolation")
    ec2.revoke_security_group_ingress(GroupId=sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "10.20.0.0/16"}]}])
    check(ec2.describe_security_groups(GroupIds=[sg])["SecurityGroups"][0]["IpPermissions"] == [],
          "revoke_security_group_ingress")
    ec2.terminate_instances(InstanceIds=[net["InstanceId"]])
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[net["InstanceId"]], WaiterConfig={"Delay": 1, "MaxAttempts": 90})
    ec2.delete_security_group(GroupId=sg)
    ec2.delete_subnet(SubnetId=sub["SubnetId"])
    ec2.delete_vpc(VpcId=vpc)
    check(code_of(lambda: ec2.describe_vpcs(VpcIds=[vpc])) == "InvalidVpcID.NotFound", "delete_vpc")


    check(code_of(lambda: client(ak, "x" * 40).describe_instances()) == "AuthFailure", "a wrong secret: AuthFailure")
    check(code_of(lambda: client("AKIAAAAAAAAAAAAAAAAA", sk).describe_instances()) == "AuthFailure",
          "an unknown key: AuthFailure")
    reader = client(rk, rs)
    check(len(reader.describe_instances()["Reservations"]) >= 1, "the read-only principal describes")
    check(code_of(lambda: reader.terminate_instances(InstanceIds=[ids[0]])) == "UnauthorizedOperation",
          "the read-only principal may not terminate: UnauthorizedOperation")
    check(code_of(lambda: ec2.describe_instances(InstanceIds=["i-0000000000000000f"])) == "InvalidInstanceID.NotFound",
          "an unknown instance: InvalidInstanceID.NotFound")
    check(code_of(lambda: ec2.stop_instances(InstanceIds=["i-../hosts/h1"])) == "InvalidInstanceID.Malformed",
          "a malformed instance id: InvalidInstanceID.Malformed")
    check(code_of(lambda: ec2.run_instances(ImageId="ami-builtin", MinCount=1, MaxCount=1, DryRun=True)) ==
          "DryRunOperation", "DryRun: DryRunOperation")
    check(code_of(lambda: ec2.run_instances(ImageId="ami-builtin", MinCount=1, MaxCount=1, Ipv6AddressCount=1)) ==
          "UnknownParameter", "a parameter the region does not take is refused, not ignored: UnknownParameter")

    # An expired signature: botocore's own SigV4 signer (boto3 itself signs with awscrt
    # when that is installed) with a clock 20 minutes behind, sent as is.
    class Past(datetime.datetime):
        @classmethod
        def utcnow(cls):
            return datetime.datetime.utcnow() - datetime.timedelta(minutes=20)

    real = botocore.auth.datetime
    botocore.auth.datetime = types.SimpleNamespace(datetime=Past)
    try:
        req = botocore.awsrequest.AWSRequest(method="POST", url=url + "/",
                                             data="Action=DescribeInstances&Version=2016-11-15",
                                             headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
        botocore.auth.SigV4Auth(botocore.credentials.Credentials(ak, sk), "ec2", "us-east-1").add_auth(req)
    finally:
        botocore.auth.datetime = real
    resp = botocore.httpsession.URLLib3Session(verify=ca).send(req.prepare())
    body = resp.content.decode()
    check(resp.status_code == 400 and "<Code>RequestExpired</Code>" in body,
          "a 20-minute-old signature: RequestExpired (%d %s)" % (resp.status_code, body[:200]))
    # The same request signed now passes (the check above can tell the difference).
    req = botocore.awsrequest.AWSRequest(method="POST", url=url + "/", data="Action=DescribeInstances&Version=2016-11-15",
                                         headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(ak, sk), "ec2", "us-east-1").add_auth(req)
    resp = botocore.httpsession.URLLib3Session(verify=ca).send(req.prepare())
    check(resp.status_code == 200, "the same request signed now: 200 (%d)" % resp.status_code)

    ec2.terminate_instances(InstanceIds=ids)
    ec2.get_waiter("instance_terminated").wait(InstanceIds=ids, WaiterConfig={"Delay": 1, "MaxAttempts": 90})
    print("ok   instance_terminated waiter", flush=True)

    if fails:
        print("FAILED: " + "; ".join(fails))
        return 1
    print("boto3 story: all checks held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
