#!/usr/bin/env python3
"""A webhook receiver for admin/tests/webhooks.rs: checks each delivery's signature with the
Standard Webhooks reference library (PyPI `standardwebhooks`), answers 503 to the first
`fail_first` deliveries of a hook (and 503 to any before the hook is set), and logs every
request as a JSON line.

    webhook_receiver.py CONFIG LOG [PORT]

CONFIG (re-read at each request) maps a hook name, the last path segment of /hook/NAME, to
{"secret": "whsec_...", "fail_first": N}. Prints the port it listens on (127.0.0.1).
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook

CONFIG, LOG = sys.argv[1], sys.argv[2]
PORT = int(sys.argv[3]) if len(sys.argv) > 3 else 0
seen = {}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
        name = self.path.rsplit("/", 1)[-1]
        try:
            with open(CONFIG) as f:
                hook = json.load(f).get(name, {})
        except (OSError, ValueError):
            hook = {}
        entry = {"hook": name, "id": self.headers.get("webhook-id"), "verified": False}
        if "secret" not in hook:
            # Not set up yet (the test writes the secret once the subscription exists).
            entry["error"] = "unconfigured"
            status = 503
        else:
            try:
                Webhook(hook["secret"]).verify(body, dict(self.headers))
                entry["verified"] = True
                entry["payload"] = json.loads(body)
            except Exception as e:  # the library raises its own WebhookVerificationError
                entry["error"] = str(e)
            seen[name] = seen.get(name, 0) + 1
            status = 503 if seen[name] <= hook.get("fail_first", 0) else 204
        entry["answered"] = status
        with open(LOG, "a") as f:
            f.write(json.dumps(entry) + "\n")
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
