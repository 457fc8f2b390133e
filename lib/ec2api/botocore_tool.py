#!/usr/bin/python3
"""lib/ec2api against the real EC2 client, botocore (Debian's python3-botocore, the one
/usr/bin/aws uses). Run with /usr/bin/python3.

  botocore_tool.py requests
      Serializes a set of realistic requests with botocore's own EC2 serializer and prints
      one JSON object a line: {"case", "operation", "input", "body", "query"}. "input" is
      what was given to botocore, "body" the form body botocore sends (AWSRequest's
      encoding, '+' for spaces), "query" the same parameters as a query string (%20).

  botocore_tool.py parse MANIFEST
      MANIFEST holds JSON lines {"name", "operation", "file", "status"}. Each file is a
      response document; each is parsed twice and one JSON line printed per entry:
        "parsed":  botocore's EC2 parser on the operation's output shape (for status >= 300,
                   its error parsing: Error.Code, Error.Message, ResponseMetadata.RequestId);
        "client":  a botocore client calling the operation, the HTTP exchange answered with
                   the file (so handlers run: GetConsoleOutput's Output comes back decoded;
                   errors come back as ClientError's response);
        "problems": every element botocore would silently ignore: a name the model does not
                   have at that place, a list item not named as the model says, a scalar
                   that does not parse as its type. botocore itself skips unknown elements,
                   so this is what makes a misspelled element name fail a test.

  botocore_tool.py cli MANIFEST
      The real CLI, /usr/bin/aws, against the documents: MANIFEST holds JSON lines
      {"name", "file", "status", "argv"}; for each, a loopback HTTP server answers the
      file and `aws ec2 ARGV --endpoint-url ... --output json` runs. Prints one JSON line
      each: {"name", "rc", "stdout" (parsed when JSON), "stderr", "body" (the form body the
      CLI sent)}.

  botocore_tool.py seeds DIR
      Writes each request body to DIR/<case>.bin (fuzz seeds).
"""

import base64
import datetime
import json
import os
import re
import sys

import botocore.session
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.parsers import create_parser
from botocore.serialize import create_serializer
from botocore.utils import percent_encode_sequence

XMLNS = 'http://ec2.amazonaws.com/doc/2016-11-15/'


def model():
    return botocore.session.get_session().get_service_model('ec2')


# ---- requests ----

USER_DATA = base64.b64encode(b'#!/bin/sh\necho "hello & welcome" > /tmp/x?y=1+2\n').decode()

CASES = [
    ('run_instances', 'RunInstances', {
        'ImageId': 'ami-0123456789abcdef0',
        'InstanceType': 't3.micro',
        'MinCount': 1,
        'MaxCount': 3,
        'KeyName': 'my key+pair',
        'SecurityGroupIds': ['sg-0aaa', 'sg-0bbb'],
        'SubnetId': 'subnet-0123',
        'UserData': USER_DATA,
        'ClientToken': 'token/with=special&chars',
        'DryRun': False,
        'EbsOptimized': True,
        'Placement': {'AvailabilityZone': 'az1-a', 'Tenancy': 'default'},
        'MetadataOptions': {'HttpTokens': 'required', 'HttpPutResponseHopLimit': 2, 'HttpEndpoint': 'enabled'},
        'EnclaveOptions': {'Enabled': True},
        'BlockDeviceMappings': [
            {'DeviceName': '/dev/xvda',
             'Ebs': {'VolumeSize': 20, 'VolumeType': 'gp3', 'DeleteOnTermination': True, 'Encrypted': True}},
            {'DeviceName': '/dev/sdb',
             'Ebs': {'VolumeSize': 100, 'VolumeType': 'io2', 'Iops': 3000, 'DeleteOnTermination': False,
                     'SnapshotId': 'snap-0abc', 'KmsKeyId': 'arn:aws:kms:az1:123456789012:key/abcd-ef'}},
            {'DeviceName': '/dev/sdc', 'NoDevice': ''},
        ],
        'TagSpecifications': [
            {'ResourceType': 'instance', 'Tags': [{'Key': 'Name', 'Value': 'web server 1'},
                                                  {'Key': 'env', 'Value': 'prod'},
                                                  {'Key': 'empty', 'Value': ''}]},
            {'ResourceType': 'volume', 'Tags': [{'Key': 'backup', 'Value': 'daily'}]},
        ],
    }),
    ('describe_instances_filters', 'DescribeInstances', {
        'Filters': [
            {'Name': 'instance-state-name', 'Values': ['running', 'stopped']},
            {'Name': 'tag:Name', 'Values': ['web & db = 100%+', 'caf\u00e9 \u2713']},
            {'Name': 'vpc-id', 'Values': ['vpc-0123']},
        ],
        'MaxResults': 50,
        'NextToken': 'eyJvZmZzZXQiOjUwfQ==/+x',
    }),
    ('describe_instances_ids', 'DescribeInstances', {
        'InstanceIds': ['i-%017x' % n for n in range(1, 13)],  # 12: index 10 sorts after 9
        'DryRun': True,
    }),
    ('authorize_ingress', 'AuthorizeSecurityGroupIngress', {
        'GroupId': 'sg-0123',
        'IpPermissions': [
            {'IpProtocol': 'tcp', 'FromPort': 22, 'ToPort': 22,
             'IpRanges': [{'CidrIp': '10.0.0.0/16', 'Description': 'ssh from the VPC'},
                          {'CidrIp': '192.168.1.0/24'}]},
            {'IpProtocol': 'icmp', 'FromPort': -1, 'ToPort': -1,
             'UserIdGroupPairs': [{'GroupId': 'sg-0456', 'Description': 'pings from peers'},
                                  {'GroupId': 'sg-0789', 'UserId': '123456789012'}]},
            {'IpProtocol': '-1',
             'Ipv6Ranges': [{'CidrIpv6': '::/0', 'Description': 'all v6'}],
             'PrefixListIds': [{'PrefixListId': 'pl-0123'}]},
        ],
    }),
    ('revoke_egress', 'RevokeSecurityGroupEgress', {
        'GroupId': 'sg-0123',
        'IpPermissions': [{'IpProtocol': '-1', 'IpRanges': [{'CidrIp': '0.0.0.0/0'}]}],
    }),
    ('create_tags', 'CreateTags', {
        'Resources': ['i-0123', 'vol-0456'],
        'Tags': [{'Key': 'Name', 'Value': 'caf\u00e9 \u2713 \U0001f600'}, {'Key': 'a=b&c', 'Value': ''}],
    }),
    ('delete_tags', 'DeleteTags', {
        'Resources': ['i-0123'],
        'Tags': [{'Key': 'Name'}, {'Key': 'env', 'Value': 'prod'}],
    }),
    ('stop_instances', 'StopInstances', {'InstanceIds': ['i-0123', 'i-0456'], 'Force': True, 'Hibernate': False}),
    ('get_console_output', 'GetConsoleOutput', {'InstanceId': 'i-0123', 'Latest': True}),
    ('create_volume', 'CreateVolume', {
        'AvailabilityZone': 'az1-a', 'Size': 100, 'VolumeType': 'gp3', 'Iops': 4000, 'Throughput': 250,
        'Encrypted': True,
        'TagSpecifications': [{'ResourceType': 'volume', 'Tags': [{'Key': 'Name', 'Value': 'data'}]}],
    }),
    ('attach_volume', 'AttachVolume', {'Device': '/dev/sdf', 'InstanceId': 'i-0123', 'VolumeId': 'vol-0456'}),
    ('describe_volumes', 'DescribeVolumes', {
        'VolumeIds': ['vol-1', 'vol-2'],
        'Filters': [{'Name': 'attachment.instance-id', 'Values': ['i-0123']}],
    }),
    ('register_image', 'RegisterImage', {
        'Name': 'my image (v2)', 'Description': 'built by azote', 'Architecture': 'x86_64',
        'RootDeviceName': '/dev/xvda', 'VirtualizationType': 'hvm', 'EnaSupport': True, 'BootMode': 'uefi',
        'TpmSupport': 'v2.0', 'ImdsSupport': 'v2.0',
        'BlockDeviceMappings': [{'DeviceName': '/dev/xvda',
                                 'Ebs': {'SnapshotId': 'snap-0123', 'VolumeSize': 8, 'VolumeType': 'gp3',
                                         'DeleteOnTermination': True}}],
    }),
    ('describe_images', 'DescribeImages', {
        'Owners': ['self', 'amazon'], 'ImageIds': ['ami-1'],
        'Filters': [{'Name': 'name', 'Values': ['debian-12-*']}],
    }),
    ('create_vpc', 'CreateVpc', {
        'CidrBlock': '10.1.0.0/16',
        'TagSpecifications': [{'ResourceType': 'vpc', 'Tags': [{'Key': 'Name', 'Value': 'main'}]}],
    }),
    ('create_subnet', 'CreateSubnet', {'VpcId': 'vpc-0123', 'CidrBlock': '10.1.1.0/24', 'AvailabilityZone': 'az1-a'}),
    ('create_security_group', 'CreateSecurityGroup', {
        'GroupName': 'web', 'Description': 'web servers: HTTP(S) & SSH', 'VpcId': 'vpc-0123',
        'TagSpecifications': [{'ResourceType': 'security-group', 'Tags': [{'Key': 'team', 'Value': 'ops'}]}],
    }),
    ('describe_instance_status', 'DescribeInstanceStatus', {
        'InstanceIds': ['i-0123'], 'IncludeAllInstances': True, 'MaxResults': 5,
    }),
    ('describe_instance_types', 'DescribeInstanceTypes', {
        'InstanceTypes': ['t3.micro', 'm5.large'],
        'Filters': [{'Name': 'processor-info.supported-architecture', 'Values': ['x86_64']}],
    }),
    ('describe_availability_zones', 'DescribeAvailabilityZones',
     {'ZoneNames': ['az1-a'], 'AllAvailabilityZones': True}),
    ('describe_regions', 'DescribeRegions', {'RegionNames': ['az1'], 'AllRegions': False}),
    ('describe_tags', 'DescribeTags', {
        'Filters': [{'Name': 'resource-type', 'Values': ['instance']}, {'Name': 'key', 'Values': ['Name', 'env']}],
        'MaxResults': 100,
    }),
    ('terminate_instances', 'TerminateInstances', {'InstanceIds': ['i-0123']}),
    ('describe_security_groups', 'DescribeSecurityGroups', {
        'GroupIds': ['sg-1'], 'GroupNames': ['default'],
        'Filters': [{'Name': 'ip-permission.from-port', 'Values': ['22']}],
    }),
]


def serialize(operation, params):
    m = model()
    op = m.operation_model(operation)
    req = create_serializer('ec2', include_validation=True).serialize_to_request(params, op)
    body = AWSRequest(method='POST', url='https://ec2.example/', data=req['body']).prepare().body
    if isinstance(body, bytes):
        body = body.decode('utf-8')
    return body, percent_encode_sequence(req['body'])


def cmd_requests():
    for case, operation, params in CASES:
        body, query = serialize(operation, params)
        print(json.dumps({'case': case, 'operation': operation, 'input': params, 'body': body, 'query': query},
                         ensure_ascii=False))


def cmd_seeds(directory):
    os.makedirs(directory, exist_ok=True)
    for case, operation, params in CASES:
        body, _ = serialize(operation, params)
        with open(os.path.join(directory, case + '.bin'), 'wb') as f:
            f.write(body.encode('utf-8'))


# ---- responses ----

TIMESTAMP_RE = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$')


def local(tag):
    return tag.split('}', 1)[1] if tag.startswith('{') else tag


def namespace(tag):
    return tag[1:].split('}', 1)[0] if tag.startswith('{') else ''


def xml_name(shape, member_name):
    return shape.serialization.get('name', member_name)


def walk(node, shape, path, problems):
    """Every element under node must be what shape says botocore reads there."""
    if namespace(node.tag) != XMLNS:
        problems.append('%s: namespace %r, not EC2\'s' % (path, namespace(node.tag)))
    kind = shape.type_name
    if kind == 'structure':
        names = {xml_name(s, n): s for n, s in shape.members.items()}
        if (node.text or '').strip():
            problems.append('%s: text in structure %s' % (path, shape.name))
        seen = set()
        for child in node:
            tag = local(child.tag)
            if tag not in names:
                problems.append('%s/%s: %s has no member of that name' % (path, tag, shape.name))
                continue
            if tag in seen:
                problems.append('%s/%s: repeated' % (path, tag))
            seen.add(tag)
            walk(child, names[tag], path + '/' + tag, problems)
    elif kind == 'list':
        if shape.serialization.get('flattened'):
            problems.append('%s: flattened list (not EC2)' % path)
        want = shape.member.serialization.get('name', 'member')
        for child in node:
            tag = local(child.tag)
            if tag != want:
                problems.append('%s/%s: list item should be <%s>' % (path, tag, want))
            walk(child, shape.member, path + '/' + tag, problems)
    else:
        if len(node):
            problems.append('%s: elements inside scalar %s' % (path, kind))
        text = node.text or ''
        ok = True
        if kind in ('integer', 'long'):
            ok = re.fullmatch(r'-?\d+', text) is not None
        elif kind == 'boolean':
            ok = text in ('true', 'false')
        elif kind == 'timestamp':
            ok = TIMESTAMP_RE.match(text) is not None
        elif kind in ('double', 'float'):
            try:
                float(text)
            except ValueError:
                ok = False
        if not ok:
            problems.append('%s: %r is not a valid %s' % (path, text, kind))


def check_document(body, operation, output_shape, status):
    import xml.etree.ElementTree as ET
    problems = []
    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        return ['not XML: %s' % e]
    if not body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>'):
        problems.append('no XML declaration')
    if status >= 300:
        if root.tag != 'Response':
            problems.append('error root is <%s>, not <Response>' % root.tag)
        children = [c.tag for c in root]
        if children != ['Errors', 'RequestID']:
            problems.append('error document children %r' % children)
        errors = root.find('Errors')
        if errors is not None:
            for err in errors:
                if err.tag != 'Error' or [c.tag for c in err] != ['Code', 'Message']:
                    problems.append('error entry <%s> %r' % (err.tag, [c.tag for c in err]))
        return problems
    if root.tag != '{%s}%sResponse' % (XMLNS, operation):
        problems.append('root is %s' % root.tag)
    children = list(root)
    if not children or local(children[0].tag) != 'requestId':
        problems.append('requestId is not the first element')
    # Members of the output shape, plus requestId and EC2's <return> (in its documents for
    # actions botocore models without an output, and for CreateSecurityGroup).
    for child in children:
        tag = local(child.tag)
        if tag in ('requestId', 'return'):
            if tag == 'return' and child.text not in ('true', 'false'):
                problems.append('<return> is %r' % child.text)
            continue
        if output_shape is None:
            problems.append('/%s: %s has no output' % (tag, operation))
            continue
        names = {xml_name(s, n): s for n, s in output_shape.members.items()}
        if tag not in names:
            problems.append('/%s: %s has no member of that name' % (tag, output_shape.name))
            continue
        walk(child, names[tag], '/' + tag, problems)
    return problems


def jsonable(x):
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items() if k != 'HTTPHeaders'}
    if isinstance(x, list):
        return [jsonable(v) for v in x]
    if isinstance(x, datetime.datetime):
        return x.isoformat()
    if isinstance(x, bytes):
        return {'base64': base64.b64encode(x).decode()}
    return x


class _Raw:
    def __init__(self, body):
        self._body = body

    def stream(self, **kwargs):
        yield self._body


def client_call(operation, body, status):
    """A botocore client doing `operation`, the server's answer being (status, body)."""
    session = botocore.session.get_session()
    client = session.create_client(
        'ec2', region_name='az1', endpoint_url='https://ec2.az1.example',
        aws_access_key_id='AKIDEXAMPLE', aws_secret_access_key='secret',
        config=Config(parameter_validation=False, retries={'total_max_attempts': 1}))

    def answer(request, **kwargs):
        headers = {'Content-Type': 'text/xml;charset=UTF-8', 'Content-Length': str(len(body))}
        return AWSResponse(request.url, status, headers, _Raw(body))

    client.meta.events.register('before-send.ec2', answer)
    method = getattr(client, botocore.xform_name(operation))
    try:
        return method()
    except ClientError as e:
        return {'ClientError': e.response}


def cmd_parse(manifest):
    m = model()
    parser = create_parser('ec2')
    with open(manifest) as f:
        entries = [json.loads(line) for line in f if line.strip()]
    for e in entries:
        with open(e['file'], 'rb') as f:
            body = f.read()
        op = m.operation_model(e['operation'])
        status = int(e.get('status', 200))
        out = {'name': e['name']}
        out['problems'] = check_document(body, e['operation'], op.output_shape, status)
        try:
            parsed = parser.parse({'status_code': status, 'headers': {}, 'body': body}, op.output_shape)
            out['parsed'] = jsonable(parsed)
        except Exception as ex:  # a parse failure is a finding, not a crash of the tool
            out['parsed'] = None
            out['problems'].append('botocore parser: %s: %s' % (type(ex).__name__, ex))
        try:
            out['client'] = jsonable(client_call(e['operation'], body, status))
        except Exception as ex:
            out['client'] = None
            out['problems'].append('botocore client: %s: %s' % (type(ex).__name__, ex))
        print(json.dumps(out, ensure_ascii=False))


def cmd_cli(manifest):
    import http.server
    import subprocess
    import tempfile
    import threading

    with open(manifest) as f:
        entries = [json.loads(line) for line in f if line.strip()]
    state = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            state['body'] = self.rfile.read(int(self.headers.get('Content-Length', '0'))).decode('utf-8')
            with open(state['file'], 'rb') as f:
                data = f.read()
            self.send_response(state['status'])
            self.send_header('Content-Type', 'text/xml;charset=UTF-8')
            self.send_header('Content-Length', str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(('127.0.0.1', 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = 'http://127.0.0.1:%d' % server.server_address[1]
    with tempfile.TemporaryDirectory() as home:
        env = {'PATH': '/usr/bin:/bin', 'HOME': home, 'LANG': 'C.UTF-8',
               'AWS_ACCESS_KEY_ID': 'AKIDEXAMPLE', 'AWS_SECRET_ACCESS_KEY': 'secret',
               'AWS_DEFAULT_REGION': 'az1', 'AWS_PAGER': '', 'AWS_CONFIG_FILE': '/dev/null',
               'AWS_SHARED_CREDENTIALS_FILE': '/dev/null', 'AWS_EC2_METADATA_DISABLED': 'true'}
        for e in entries:
            state.update(file=e['file'], status=int(e.get('status', 200)), body=None)
            argv = ['/usr/bin/aws', 'ec2'] + e['argv'] + ['--endpoint-url', url, '--output', 'json']
            p = subprocess.run(argv, env=env, capture_output=True, timeout=120)
            out = p.stdout.decode('utf-8', 'replace')
            try:
                parsed = json.loads(out) if out.strip() else None
            except ValueError:
                parsed = out
            print(json.dumps({'name': e['name'], 'rc': p.returncode, 'stdout': parsed,
                              'stderr': p.stderr.decode('utf-8', 'replace'), 'body': state['body']},
                             ensure_ascii=False), flush=True)
    server.shutdown()


def main(argv):
    if len(argv) == 2 and argv[1] == 'requests':
        cmd_requests()
    elif len(argv) == 3 and argv[1] == 'parse':
        cmd_parse(argv[2])
    elif len(argv) == 3 and argv[1] == 'cli':
        cmd_cli(argv[2])
    elif len(argv) == 3 and argv[1] == 'seeds':
        cmd_seeds(argv[2])
    else:
        sys.stderr.write('usage: botocore_tool.py requests | parse MANIFEST | cli MANIFEST | seeds DIR\n')
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
