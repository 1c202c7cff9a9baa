"""Raw HTTP/2 misbehaviour for the connection tests (PyPI `h2`/`hyperframe`).

usage: h2_client.py PORT CA CERT KEY MODE
MODE: normal | few_resets | rapid_reset | continuation_flood | stalled_window | stalled_body
Prints one JSON line: what the server did (GOAWAY code, resets, whether it closed) and when.
"""
import json
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
from hyperframe.frame import ContinuationFrame, HeadersFrame

port, ca, cert, key, mode = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]

ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)
ctx.set_alpn_protocols(["h2"])
sock = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
tls = ctx.wrap_socket(sock, server_hostname="localhost")
assert tls.selected_alpn_protocol() == "h2", tls.selected_alpn_protocol()

conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
settings = {}
if mode == "stalled_window":
    # The client grants the server no window: no response byte can be sent.
    settings[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] = 0
conn.initiate_connection()
if settings:
    conn.update_settings(settings)
tls.sendall(conn.data_to_send())

headers = [
    (":method", "GET"),
    (":scheme", "https"),
    (":authority", "localhost"),
    (":path", "/public/h2"),
]
started = time.monotonic()
result = {"goaway": None, "resets": 0, "closed": False, "responses": 0}

try:
    if mode == "rapid_reset":
        for i in range(1000):
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, headers, end_stream=True)
            conn.reset_stream(sid)
            if i % 50 == 49:
                tls.sendall(conn.data_to_send())
        tls.sendall(conn.data_to_send())
    elif mode == "continuation_flood":
        block = conn.encoder.encode(headers)
        first = HeadersFrame(1)
        first.flags.add("END_STREAM")
        first.data = block
        out = first.serialize()
        for _ in range(10000):
            frame = ContinuationFrame(1)
            frame.data = b"\x40\x01a\x01b"  # a literal header `a: b`, again and again
            out += frame.serialize()
        tls.sendall(out)
    elif mode == "stalled_window":
        conn.send_headers(1, headers, end_stream=True)
        tls.sendall(conn.data_to_send())
    elif mode == "few_resets":
        # Under the bound: the connection stays and answers the next request.
        for _ in range(5):
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, headers, end_stream=True)
            conn.reset_stream(sid)
        conn.send_headers(conn.get_next_available_stream_id(), headers, end_stream=True)
        tls.sendall(conn.data_to_send())
    elif mode == "normal":
        conn.send_headers(1, headers, end_stream=True)
        tls.sendall(conn.data_to_send())
    elif mode == "stalled_body":
        # An upload that starts and then stops sending: its stream stays open with no data.
        post = [(":method", "POST")] + headers[1:] + [("content-type", "text/plain")]
        conn.send_headers(1, post, end_stream=False)
        conn.send_data(1, b"the first part of the body", end_stream=False)
        tls.sendall(conn.data_to_send())
except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
    # The server stopped us mid-flood; what it said (GOAWAY) may still be readable.
    result["send_failed"] = True

deadline = started + 8
while not result["closed"] and time.monotonic() < deadline:
    try:
        data = tls.recv(65536)
    except (socket.timeout, ConnectionResetError, ssl.SSLError, OSError):
        result["closed"] = True
        break
    if not data:
        result["closed"] = True
        break
    try:
        events = conn.receive_data(data)
    except Exception as e:  # a protocol error on our side ends the test too
        result["error"] = type(e).__name__
        break
    for event in events:
        if isinstance(event, h2.events.ConnectionTerminated):
            result["goaway"] = int(event.error_code)
        elif isinstance(event, h2.events.StreamReset):
            result["resets"] += 1
        elif isinstance(event, h2.events.ResponseReceived):
            result["responses"] += 1
    try:
        tls.sendall(conn.data_to_send())
    except OSError:
        pass
    if result["goaway"] is not None:
        break
    if mode == "stalled_window" and result["resets"]:
        break
    if mode in ("normal", "few_resets") and result["responses"]:
        break

result["seconds"] = round(time.monotonic() - started, 2)
print(json.dumps(result))
