"""WebSocket peers for the end-to-end tests (PyPI `websockets`).

usage:
  ws_peer.py serve PORT                      echo server on 127.0.0.1:PORT (plain ws), until stdin closes
  ws_peer.py client URL CA CERT KEY COUNT [SIZE] [PAUSE]
                                             COUNT messages of SIZE bytes through URL (wss, client
                                             certificate), PAUSE seconds apart; prints one JSON
                                             line: {"sent", "echoed", "closed", "code", "error"}
"""
import asyncio
import json
import ssl
import sys
import threading


def serve(port):
    from websockets.sync.server import serve as ws_serve

    def echo(conn):
        try:
            for message in conn:
                conn.send(message)
        except Exception:
            pass

    with ws_serve(echo, "127.0.0.1", port, max_size=2**22) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        print("ready", flush=True)
        sys.stdin.read()  # until the test closes our stdin
        server.shutdown()


def client(url, ca, cert, key, count, size, pause):
    import time
    from websockets.sync.client import connect
    from websockets.exceptions import ConnectionClosed

    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)
    result = {"sent": 0, "echoed": 0, "closed": False, "code": None, "error": None}
    try:
        with connect(url, ssl=ctx, server_hostname="localhost", open_timeout=10,
                     max_size=2**22) as ws:
            for i in range(count):
                payload = (f"{i}:" + "x" * size)[: max(size, len(str(i)) + 1)]
                ws.send(payload)
                result["sent"] += 1
                if ws.recv(timeout=10) == payload:
                    result["echoed"] += 1
                if pause:
                    time.sleep(pause)
    except ConnectionClosed as e:
        result["closed"] = True
        result["code"] = e.rcvd.code if e.rcvd else None
    except Exception as e:  # noqa: BLE001 - reported to the test
        result["error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        size = int(sys.argv[7]) if len(sys.argv) > 7 else 16
        pause = float(sys.argv[8]) if len(sys.argv) > 8 else 0.0
        client(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]), size, pause)
