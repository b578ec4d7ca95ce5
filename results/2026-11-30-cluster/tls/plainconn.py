import socket, sys, time
end = time.time() + 10; n = 0
while time.time() < end:
    s = socket.create_connection(("127.0.0.1", 8555)); s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    while s.recv(4096): pass
    s.close(); n += 1
print(n)
