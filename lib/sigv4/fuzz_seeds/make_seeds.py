#!/usr/bin/python3
"""Writes fuzz_sigv4's seeds next to this file: a flags byte, then a request in the test
suites' text form. From ../aws_test_suite.inc: a few cases signed with the header and with
the query; plus an EC2 query signed by lib/sigv4's signer shape and malformed ones."""
import ast
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
text = open(os.path.join(HERE, "..", "aws_test_suite.inc"), encoding="ascii").read()


def c_string(lit):
    # Adjacent C literals as one bytes value (the .inc escapes only \\, \", \n and octal).
    out = b""
    for part in re.findall(r'"((?:[^"\\]|\\.)*)"', lit):
        out += ast.literal_eval('b"' + part + '"')
    return out


rows = re.findall(r'^    \{"([^"]+)",(.*?)\},$', text, flags=re.S | re.M)
cases = {}
for name, body in rows:
    # The row's literals: token, then the seven files (request.txt ... query-signed-request.txt).
    strings = re.findall(r'((?:"(?:[^"\\]|\\.)*"\s*)+)', body)
    cases[name] = [c_string(s) for s in strings]

seeds = {}
for name in ["get-vanilla", "get-header-value-trim", "get-vanilla-query-order-encoded", "post-x-www-form-urlencoded",
             "post-sts-header-before", "get-utf8", "get-header-value-multiline"]:
    s = cases[name]  # token, request, hcreq, hsts, hsigned, qcreq, qsts, qsigned
    seeds[f"{name}-header"] = b"\x01" + s[4]
    seeds[f"{name}-query"] = b"\x01" + s[7]
seeds["ec2-post"] = (b"\x00POST / HTTP/1.1\nHost:ec2.us-east-1.amazonaws.com\n"
                     b"Content-Type:application/x-www-form-urlencoded; charset=utf-8\n"
                     b"X-Amz-Date:20150830T123600Z\n"
                     b"Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
                     b"SignedHeaders=content-type;host;x-amz-date, Signature=" + b"0" * 64 + b"\n\n"
                     b"Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=tag%3AName&Filter.1.Value.1=a%20b")
seeds["date-header"] = (b"\x20GET /a/./b//../c?x=1+2&y=%7e HTTP/1.1\nHost:h\nDate:Sun, 30 Aug 2015 12:36:00 GMT\n"
                        b"Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request,"
                        b"SignedHeaders=date;host,Signature=" + b"a" * 64 + b"\n\n")
seeds["bad-authorization"] = b"\x00AWS4-HMAC-SHA256 Credential=A/2/r/s/aws4_request, SignedHeaders=host;;, Signature=zz"
seeds["presigned-unsigned-payload"] = (
    b"\x04PUT /o?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2F"
    b"aws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=" + b"b" * 64 +
    b" HTTP/1.1\nHost:h\nX-Amz-Content-Sha256:UNSIGNED-PAYLOAD\n\nbody")
for name, data in seeds.items():
    with open(os.path.join(HERE, name + ".bin"), "wb") as f:
        f.write(data)
print(f"{len(seeds)} seeds")
