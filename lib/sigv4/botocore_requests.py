#!/usr/bin/python3
"""Requests signed by botocore itself, for lib/sigv4's cross-check (botocore_test.cpp).

Signs a spread of EC2-like requests with botocore.auth.SigV4Auth / SigV4QueryAuth, and
sends two through a real botocore EC2 client (stopped at 'before-send', so nothing leaves
the machine), then prints each as it would reach the server, one JSON object per line:

  {"name", "method", "path", "query", "headers": [[name, value], ...], "body_hex",
   "access_key_id", "secret_access_key", "session_token", "region", "service",
   "signed_at", "presigned", "expires"}

path and query are the raw (percent-encoded) wire forms, headers are in order with
repeats, body_hex is the body's bytes in hex. Prints "SKIP: <why>" and exits 0 when
botocore cannot be imported. Run with Debian's /usr/bin/python3 (python3-botocore).
"""
import datetime
import json
import sys
import time
from urllib.parse import urlsplit

try:
    import botocore
    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials
    import botocore.session
except ImportError as e:  # pragma: no cover
    print(f"SKIP: botocore is not importable by {sys.executable}: {e}")
    sys.exit(0)

AKID = "AKIDSIGV4TEST0000001"
SECRET = "sigv4/Test+Secret0000000000000000000000Key"
TEMP_AKID = "ASIASIGV4TEST0000002"
TEMP_SECRET = "temporary/secret+key=="
TOKEN = "FwoGZXIvYXdzEXAMPLE//////////wEaDP+sigv4/token==" + "x" * 300
ENDPOINT = "https://ec2.us-east-1.amazonaws.com"


def host_of(url):
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    if parts.port is None or parts.port == default:
        return parts.hostname
    return f"{parts.hostname}:{parts.port}"


def record(name, method, url, headers, body, creds, region, service, signed_at, presigned=False, expires=None):
    """headers: (name, value) pairs as sent; Host is added the way HTTP clients do."""
    parts = urlsplit(url)
    def text(x):  # prepared requests hold bytes; http.client sends them as ISO-8859-1
        return x.decode("iso-8859-1") if isinstance(x, bytes) else str(x)

    pairs = [(text(k), text(v)) for k, v in headers]
    if not any(k.lower() == "host" for k, _ in pairs):
        pairs.insert(0, ("Host", host_of(url)))
    if body is None:
        body = b""
    if isinstance(body, str):
        body = body.encode("utf-8")
    return {
        "name": name,
        "method": method,
        "path": parts.path,
        "query": parts.query,
        "headers": pairs,
        "body_hex": body.hex(),
        "access_key_id": creds.access_key,
        "secret_access_key": creds.secret_key,
        "session_token": creds.token or "",
        "region": region,
        "service": service,
        "signed_at": signed_at,
        "presigned": presigned,
        "expires": expires,
    }


def signed(name, method, url, creds, region="us-east-1", service="ec2", data=None, params=None, headers=(),
           date_header=False, content_sha256=False):
    """SigV4Auth over an AWSRequest; the wire form comes from AWSRequest.prepare()."""
    req = botocore.awsrequest.AWSRequest(method=method, url=url, data=data, params=params)
    for k, v in headers:
        req.headers[k] = v  # HTTPHeaders: a second assignment adds a repeated header
    if date_header:
        req.headers["Date"] = "placeholder"  # botocore replaces it with the signing time
    if content_sha256:
        body = req.body or b""
        req.headers["X-Amz-Content-SHA256"] = botocore.auth.sha256(body).hexdigest()
    signed_at = int(time.time())
    botocore.auth.SigV4Auth(creds, service, region).add_auth(req)
    prepared = req.prepare()
    # AWSRequest.headers keeps repeats (what an HTTP client would send); the prepared
    # request's dict would fold them.
    return record(name, method, prepared.url, list(req.headers.items()), prepared.body, creds, region, service,
                  signed_at)


def presigned(name, method, url, creds, expires, region="us-east-1", service="ec2", data=None, params=None,
              headers=()):
    req = botocore.awsrequest.AWSRequest(method=method, url=url, data=data, params=params)
    for k, v in headers:
        req.headers[k] = v
    signed_at = int(time.time())
    botocore.auth.SigV4QueryAuth(creds, service, region, expires=expires).add_auth(req)
    prepared = req.prepare()
    return record(name, method, prepared.url, list(req.headers.items()), prepared.body, creds, region, service,
                  signed_at, presigned=True, expires=expires)


class Captured(Exception):
    pass


def through_ec2_client(name, creds, call):
    """A real botocore EC2 client (serializer, signer, preparation), stopped before sending."""
    session = botocore.session.get_session()
    client = session.create_client("ec2", region_name="us-east-1", endpoint_url=ENDPOINT,
                                   aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key,
                                   aws_session_token=creds.token)
    box = {}

    def capture(request, **kwargs):
        box["request"] = request
        raise Captured()

    client.meta.events.register("before-send.ec2.*", capture)
    signed_at = int(time.time())
    try:
        call(client)
    except Captured:
        pass
    prepared = box["request"]
    return record(name, prepared.method, prepared.url, list(prepared.headers.items()), prepared.body, creds,
                  "us-east-1", "ec2", signed_at)


def main():
    long_term = botocore.credentials.Credentials(AKID, SECRET)
    temporary = botocore.credentials.Credentials(TEMP_AKID, TEMP_SECRET, TOKEN)
    form = [("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")]
    out = [
        signed("post-form-describe-instances", "POST", ENDPOINT + "/", long_term,
               data="Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=tag%3AName&Filter.1.Value.1=a%20b",
               headers=form),
        signed("post-form-unicode-values", "POST", ENDPOINT + "/", long_term,
               data={"Action": "CreateTags", "Version": "2016-11-15", "ResourceId.1": "i-0123456789abcdef0",
                     "Tag.1.Key": "Name", "Tag.1.Value": "caf\u00e9 \u2615 \u540d\u524d \U0001F680 +&=%/?"},
               headers=form),
        signed("get-odd-query", "GET", ENDPOINT + "/", long_term,
               params=[("Action", "DescribeRegions"), ("Version", "2016-11-15"),
                       ("Filter.1.Value.1", "a b+c/d?e=f&g*h'(i)!~;:@$,[]"), ("Empty", ""),
                       ("\u00fcn\u00efc\u00f8de", "\u00e7\u00f8d\u00e9"), ("Repeat", "2"), ("Repeat", "1")]),
        signed("get-path-normalized", "GET", ENDPOINT + "/a/./b//c/../d%20e/%7Ef%2Fg/", long_term,
               params=[("Action", "DescribeRegions")]),
        signed("post-repeated-and-spaced-headers", "POST", ENDPOINT + "/", long_term,
               data="Action=DescribeVpcs&Version=2016-11-15",
               headers=form + [("X-Azote-Note", "  first   value "), ("X-Azote-Note", "second\tvalue"),
                               ("X-Azote-Quoted", '"a   b   c"')]),
        signed("post-session-token", "POST", ENDPOINT + "/", temporary,
               data="Action=DescribeInstances&Version=2016-11-15", headers=form),
        signed("post-date-header", "POST", ENDPOINT + "/", long_term,
               data="Action=DescribeAvailabilityZones&Version=2016-11-15", headers=form, date_header=True),
        signed("post-content-sha256", "POST", ENDPOINT + "/", long_term,
               data="Action=DescribeKeyPairs&Version=2016-11-15", headers=form, content_sha256=True),
        signed("post-other-region-and-port", "POST", "https://ec2.eu-west-3.example.test:8443/", long_term,
               region="eu-west-3", data="Action=DescribeInstances&Version=2016-11-15", headers=form),
        presigned("presigned-get", "GET", ENDPOINT + "/", long_term, 300,
                  params=[("Action", "DescribeRegions"), ("Version", "2016-11-15"), ("RegionName.1", "a b+c")]),
        presigned("presigned-post-body-moved-to-query", "POST", ENDPOINT + "/", temporary, 600,
                  data={"Action": "CopySnapshot", "Version": "2016-11-15", "SourceRegion": "eu-west-1",
                        "Description": "caf\u00e9 /&= +"}),
        presigned("presigned-with-header", "GET", ENDPOINT + "/", long_term, 60,
                  params={"Action": "DescribeRegions"}, headers=[("X-Azote-Signed", "yes")]),
        through_ec2_client("ec2-client-describe-instances", long_term, lambda c: c.describe_instances(
            Filters=[{"Name": "tag:Name", "Values": ["a b", "\u00fcn\u00ef"]}], MaxResults=5)),
        through_ec2_client("ec2-client-create-tags-temporary", temporary, lambda c: c.create_tags(
            Resources=["i-0123456789abcdef0"], Tags=[{"Key": "Name", "Value": "x&y=z \u2603"}])),
    ]
    for r in out:
        print(json.dumps(r, ensure_ascii=True))


if __name__ == "__main__":
    main()
