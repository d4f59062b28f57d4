# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""A fake IBM Cloud Object Storage endpoint and resource controller on
loopback, plain HTTP, for the IBM VPC image upload.

* ``GET /v2/resource_instances?name=&type=``: the resource controller's
  service instances; one Cloud Object Storage instance, ``np-cos``.
* S3 (path style, as botocore addresses an IP endpoint): ``GET
  /<bucket>?location``, ``PUT /<bucket>/<key>``, ``GET /<bucket>``
  (ListObjects v1 and v2 with ``prefix``), ``DELETE /<bucket>/<key>``.
  Requests must carry an IAM bearer token of the :class:`FakeIbmVpc`
  they belong to (``signature_version="oauth"``).  (The
  ``ibm-service-instance-id`` header, needed only to create or list
  buckets, is not checked.)

Not modelled: multipart uploads (files under the SDK's 8 MiB threshold
only), HMAC signatures, bucket creation, versions, ACLs.
"""

import http.server
import json
import socketserver
import threading
import urllib.parse
from xml.sax.saxutils import escape

from tests.fakes.faults import Faults

COS_CRN = ("crn:v1:bluemix:public:cloud-object-storage:global:a/fake-account:"
           "2f5b7c1e-0000-4000-8000-000000000001::")
BUCKET = "np-images"
LOCATION = "us-south-standard"
_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, ctype, data = self.server.fake.handle(
            self.command, self.path, self.headers, body)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        if self.command == "PUT" and status == 200:
            self.send_header("ETag", '"fake-etag"')
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_DELETE = do_HEAD = do_POST = _handle


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


class FakeCos:
    """The object storage of ``vpc_fake`` (a started
    :class:`tests.fakes.ibmvpc.FakeIbmVpc`, whose tokens it accepts).
    :attr:`objects` maps ``(bucket, key)`` to bytes."""

    def __init__(self, vpc_fake):
        self.vpc_fake = vpc_fake
        self.lock = threading.Lock()
        self.objects = {}
        self.faults = Faults()
        self._server = None
        self.url = None

    def start(self):
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        threading.Thread(target=self._server.serve_forever,
                         name="fake-ibmcos", daemon=True).start()
        self.url = "http://127.0.0.1:%d" % self._server.server_address[1]
        self.vpc_fake.cos = self
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def keys(self, bucket=BUCKET):
        with self.lock:
            return sorted(k for b, k in self.objects if b == bucket)

    def has(self, bucket, key):
        with self.lock:
            return (bucket, key) in self.objects

    def handle(self, method, raw_path, headers, body):
        parsed = urllib.parse.urlsplit(raw_path)
        query = dict(urllib.parse.parse_qsl(parsed.query,
                                            keep_blank_values=True))
        path = urllib.parse.unquote(parsed.path)
        fault = self.faults.before("%s %s" % (method, path.split("/")[1]))
        if fault is not None:
            return fault[0], "application/xml", _error("InternalError",
                                                       "injected")
        if not self.vpc_fake.token_valid(headers.get("Authorization")):
            return 403, "application/xml", _error("AccessDenied",
                                                  "Access Denied")
        if path == "/v2/resource_instances":
            resources = []
            if query.get("name") == "np-cos" and \
                    query.get("type") in (None, "service_instance"):
                resources.append({"id": COS_CRN, "guid": COS_CRN.split(
                    ":")[7], "crn": COS_CRN, "name": "np-cos"})
            return 200, "application/json", json.dumps(
                {"resources": resources, "rows_count": len(resources)}
            ).encode()
        bucket, _, key = path.lstrip("/").partition("/")
        if bucket != BUCKET:
            return 404, "application/xml", _error(
                "NoSuchBucket", "The specified bucket does not exist.")
        with self.lock:
            return self._bucket(method, bucket, key, query, body)

    def _bucket(self, method, bucket, key, query, body):
        if not key and method == "GET" and "location" in query:
            return 200, "application/xml", (
                '<?xml version="1.0" encoding="UTF-8"?><LocationConstraint '
                'xmlns="%s">%s</LocationConstraint>' % (
                    _XMLNS, LOCATION)).encode()
        if not key and method == "GET":
            prefix = query.get("prefix", "")
            keys = sorted(k for b, k in self.objects
                          if b == bucket and k.startswith(prefix))
            items = "".join(
                "<Contents><Key>%s</Key><Size>%d</Size>"
                "<LastModified>2024-01-01T00:00:00.000Z</LastModified>"
                "<ETag>\"fake-etag\"</ETag><StorageClass>STANDARD"
                "</StorageClass></Contents>" % (
                    escape(k), len(self.objects[(bucket, k)])) for k in keys)
            return 200, "application/xml", (
                '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult '
                'xmlns="%s"><Name>%s</Name><Prefix>%s</Prefix>'
                '<KeyCount>%d</KeyCount><MaxKeys>1000</MaxKeys>'
                '<IsTruncated>false</IsTruncated>%s</ListBucketResult>' % (
                    _XMLNS, bucket, escape(prefix), len(keys), items)
            ).encode()
        if key and method == "PUT":
            self.objects[(bucket, key)] = body
            return 200, "application/xml", b""
        if key and method == "DELETE":
            self.objects.pop((bucket, key), None)
            return 204, "application/xml", b""
        return 405, "application/xml", _error("MethodNotAllowed",
                                              "Not modelled")


def _error(code, message):
    return ('<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code>'
            '<Message>%s</Message></Error>' % (code, escape(message))
            ).encode()
