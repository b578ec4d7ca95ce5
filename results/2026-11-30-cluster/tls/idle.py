# Opens N idle WebSocket connections (plain or TLS), each says hello, then reports the
# server's RSS before and after. Usage: idle.py PID HOST:PORT N [CAFILE]
import os, socket, ssl, sys, time, base64, json, struct

pid, hostport, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
cafile = sys.argv[4] if len(sys.argv) > 4 else None
host, port = hostport.split(":")
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
ctx = None
if cafile:
    ctx = ssl.create_default_context(cafile=cafile)
def frame(text):
    data = text.encode(); mask = os.urandom(4)
    hdr = bytes([0x81]) + (bytes([0x80 | len(data)]) if len(data) < 126 else bytes([0x80 | 126]) + struct.pack(">H", len(data)))
    return hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))
time.sleep(1)
before = rss()
socks = []
for i in range(n):
    s = socket.create_connection((host, int(port)))
    if ctx: s = ctx.wrap_socket(s, server_hostname="localhost")
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(f"GET /ws HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: tandem.v1.json\r\n\r\n".encode())
    resp = b""
    while b"\r\n\r\n" not in resp: resp += s.recv(4096)
    assert b" 101 " in resp, resp
    s.sendall(frame(json.dumps({"type": "hello", "protocol": 1, "client": f"{i+1:016x}", "token": "x", "name": "idle"})))
    s.recv(4096)
    socks.append(s)
time.sleep(3)
after = rss()
print(f"{'tls' if ctx else 'plain'} n={n} rss_before_kib={before} rss_after_kib={after} per_conn_bytes={(after-before)*1024/n:.0f}")
