"""Shares one owner's documents with N new addresses as fast as one connection allows, and
prints what it did as JSON. Usage: burst.py PORT N [DOCS]."""
import http.client
import json
import sys
import time

port, n = int(sys.argv[1]), int(sys.argv[2])
docs = int(sys.argv[3]) if len(sys.argv) > 3 else 10
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)


def call(method, path, body=None, token=None):
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = "Bearer " + token
    conn.request(method, path, json.dumps(body) if body is not None else None, headers)
    r = conn.getresponse()
    data = r.read()
    return r.status, (json.loads(data) if data else None)


status, me = call("POST", "/api/auth/signup", {"email": "owner@example.com", "password": "pw-long-enough", "name": "Owner"})
assert status == 201, (status, me)
token = me["access_token"]
ids = []
for d in range(docs):
    status, doc = call("POST", "/api/documents", {"title": f"Burst {d}"}, token)
    assert status == 201, (status, doc)
    ids.append(doc["id"])
started = time.time()
for i in range(n):
    status, body = call("POST", f"/api/documents/{ids[i % docs]}/share", {"email": f"person{i}@example.com", "role": "viewer"}, token)
    assert status == 200, (status, body)
print(json.dumps({"shares": n, "documents": docs, "started": started, "share_s": time.time() - started}))
