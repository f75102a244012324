"""A small HTTP(S) client run as its own process, from the host or inside a network
namespace (``ip netns exec``), so that the exporter sees the address it really came from.

Standard library only. Reads one JSON job on stdin::

    {"base": "https://10.0.0.1:1234", "ca": "ca.crt" | null,
     "cert": ["client.crt", "client.key"] | null,
     "requests": [{"id": "...", "method": "POST", "path": "/api/v1/events",
                   "headers": {...}, "json": ... | null}]}

and prints one JSON list of ``{"id", "status", "body"}`` (the body parsed as JSON when it
is JSON, else null).
"""

from __future__ import annotations

import http.client
import json
import ssl
import sys
import urllib.parse
from typing import Any


def run(job: dict[str, Any]) -> list[dict[str, Any]]:
    base = urllib.parse.urlsplit(job["base"])
    context: ssl.SSLContext | None = None
    if base.scheme == "https":
        context = ssl.create_default_context(cafile=job.get("ca"))
        if job.get("cert"):
            context.load_cert_chain(*job["cert"])
    results: list[dict[str, Any]] = []
    for req in job["requests"]:
        conn: http.client.HTTPConnection
        if context is not None:
            conn = http.client.HTTPSConnection(base.hostname or "", base.port, timeout=10,
                                               context=context)
        else:
            conn = http.client.HTTPConnection(base.hostname or "", base.port, timeout=10)
        headers = dict(req.get("headers") or {})
        body = None
        if req.get("json") is not None:
            body = json.dumps(req["json"]).encode()
            headers["Content-Type"] = "application/json"
        conn.request(req["method"], req["path"], body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = None
        results.append({"id": req["id"], "status": response.status, "body": parsed})
    return results


if __name__ == "__main__":
    print(json.dumps(run(json.load(sys.stdin))))
