# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""What the loopback fakes of JSON REST APIs (Azure, Kubernetes, GCE, IBM
VPC) share: a request handler that answers JSON and a threading server.

A fake's handler subclasses :class:`JsonHandler` and implements
``_serve(method)``; its server subclasses :class:`ThreadingServer`.
"""

import http.server
import json
import socketserver


class JsonHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as separate writes: without this, Nagle
    # holds the body until the client's delayed ACK (40 ms a call).
    disable_nagle_algorithm = True
    content_type = "application/json"

    def log_message(self, fmt, *args):
        pass

    def _serve(self, method):
        raise NotImplementedError

    def _send(self, status, body=None, headers=None):
        """Answer ``status`` with ``body`` as JSON (None: no body)."""
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if data:
            self.wfile.write(data)

    def do_GET(self):
        self._serve("GET")

    def do_PUT(self):
        self._serve("PUT")

    def do_POST(self):
        self._serve("POST")

    def do_DELETE(self):
        self._serve("DELETE")

    def do_PATCH(self):
        self._serve("PATCH")


class ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
