"""Cost of authentication per request: Flask app in-process, GET /api/v1/schema.

Prints the median per-request time for: no auth, basic auth (bcrypt cost 10) cached and
uncached, a sha256 static token, an HS256 JWT; and the ratios to no auth. Bounded: a fixed
number of requests per case.
"""

from __future__ import annotations

import base64
import hashlib
import statistics
import tempfile
import time
from pathlib import Path

import bcrypt
import jwt
import yaml

from exporter import config
from exporter.runtime import Runtime
from exporter.web import create_app

N = 300
SECRET = "bench-secret-0123456789abcdef0123456789"


def median_ms(client, headers, n=N, before=None):
    times = []
    for _ in range(n):
        if before:
            before()
        t0 = time.perf_counter()
        response = client.get("/api/v1/schema", headers=headers)
        times.append(time.perf_counter() - t0)
        assert response.status_code == 200, response.status_code
    return statistics.median(times) * 1000


def main() -> None:
    d = Path(tempfile.mkdtemp())
    (d / "web.yml").write_text(yaml.safe_dump({"basic_auth_users": {
        "p": bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=10)).decode()}}))
    (d / "tokens").write_text(f"viewer sha256:{hashlib.sha256(b'tok').hexdigest()} t\n")
    (d / "secret").write_text(SECRET)
    open_rt = Runtime(config.build({}))
    rt = Runtime(config.build({"web": {"security": {
        "web_config_file": str(d / "web.yml"), "tokens_file": str(d / "tokens"),
        "jwt": {"hs256_secret_file": str(d / "secret"), "audience": "a"}}}}))
    open_client, client = create_app(open_rt).test_client(), create_app(rt).test_client()
    basic = {"Authorization": "Basic " + base64.b64encode(b"p:pw").decode()}
    token = jwt.encode({"aud": "a", "exp": int(time.time()) + 3600, "role": "viewer"}, SECRET)
    base = median_ms(open_client, {})
    rows = [("no auth", base),
            ("basic, cached", median_ms(client, basic)),
            ("basic, uncached (bcrypt 10)", median_ms(client, basic, 20,
                                                      rt.security._verified.clear)),
            ("sha256 token", median_ms(client, {"Authorization": "Bearer tok"})),
            ("HS256 JWT", median_ms(client, {"Authorization": f"Bearer {token}"}))]
    for name, ms in rows:
        print(f"{name:30s} median {ms:8.3f} ms  ratio {ms / base:6.2f}x")


if __name__ == "__main__":
    main()
