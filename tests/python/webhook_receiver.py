"""A webhook receiver written the way the README tells receivers to: it
verifies each delivery's raw body with the `standardwebhooks` library from
PyPI before parsing it, answers 204, and prints one JSON line per verified
delivery. It prints its port first, and exits after a `job.completed`.

Usage: webhook_receiver.py SECRET
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

webhook = Webhook(sys.argv[1])


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        try:
            payload = webhook.verify(body, dict(self.headers))
        except WebhookVerificationError as e:
            print(json.dumps({"rejected": str(e)}), flush=True)
            self.send_response(401)
            self.end_headers()
            return
        self.send_response(204)
        self.end_headers()
        print(
            json.dumps(
                {
                    "id": self.headers["webhook-id"],
                    "type": payload["type"],
                    "seq": payload["data"]["seq"],
                    "job_status": payload["data"]["job"]["status"],
                }
            ),
            flush=True,
        )
        if payload["type"] == "job.completed":
            self.server.done = True

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Receiver)
server.done = False
print(server.server_address[1], flush=True)
while not server.done:
    server.handle_request()
