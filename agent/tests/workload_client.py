"""A workload using the PyPI `spiffe` client (py-spiffe) against the agent's Workload API at
SPIFFE_ENDPOINT_SOCKET. Prints one JSON object on stdout.

  workload_client.py fetch EXPECTED_ID ROTATE_WITHIN_S
      fetch the X.509-SVID and bundles, check the SPIFFE ID and that the chain verifies up to
      the bundle, then watch the stream until a rotated SVID (another serial) arrives.
  workload_client.py refused
      expect the fetch to be refused.
"""

import datetime
import json
import sys
import threading
import time

from cryptography.hazmat.primitives.asymmetric import ec
from spiffe import WorkloadApiClient


def chains_to(chain, authorities):
    """Each certificate is signed by the next, the last by one of the authorities."""
    issuers = list(chain[1:])
    for cert, issuer in zip(chain, issuers):
        cert.verify_directly_issued_by(issuer)
    last = chain[-1]
    for root in authorities:
        try:
            last.verify_directly_issued_by(root)
            return True
        except Exception:
            continue
    return False


def fetch(expected, rotate_within):
    client = WorkloadApiClient(default_timeout=30)
    started = time.monotonic()
    svid = client.fetch_x509_svid()
    fetched_s = time.monotonic() - started
    bundles = client.fetch_x509_bundles()
    bundle = bundles.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
    out = {
        "spiffe_id": str(svid.spiffe_id),
        "first_fetch_s": round(fetched_s, 3),
        "chain_length": len(svid.cert_chain),
        "key_is_p256": isinstance(svid.private_key, ec.EllipticCurvePrivateKey)
        and svid.private_key.curve.name == "secp256r1",
        "chains_to_bundle": bundle is not None
        and chains_to(svid.cert_chain, bundle.x509_authorities),
        "key_matches_leaf": svid.private_key.public_key().public_numbers()
        == svid.leaf.public_key().public_numbers(),
    }
    # The CA back-dates not_before for clock skew: what matters is how long the SVID is left.
    left = svid.leaf.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)
    out["expires_in_s"] = round(left.total_seconds(), 3)
    first_serial = svid.leaf.serial_number

    serials = []
    rotated = threading.Event()
    errors = []

    def on_success(ctx):
        serial = ctx.default_svid.leaf.serial_number
        serials.append((time.monotonic(), serial, str(ctx.default_svid.spiffe_id)))
        if serial != first_serial:
            rotated.set()

    def on_error(err):
        errors.append(str(err))
        rotated.set()

    watch_started = time.monotonic()
    handle = client.stream_x509_contexts(on_success, on_error, retry_connect=False)
    rotated.wait(rotate_within)
    handle.cancel()
    client.close()
    fresh = [s for s in serials if s[1] != first_serial]
    out["stream_messages"] = len(serials)
    out["stream_errors"] = errors
    out["rotated"] = bool(fresh)
    out["rotated_id"] = fresh[0][2] if fresh else None
    out["rotation_after_s"] = round(fresh[0][0] - watch_started, 3) if fresh else None
    print(json.dumps(out))


def refused():
    client = WorkloadApiClient(default_timeout=10)
    try:
        svid = client.fetch_x509_svid()
        print(json.dumps({"refused": False, "spiffe_id": str(svid.spiffe_id)}))
    except Exception as e:  # the client's FetchX509SvidError
        print(json.dumps({"refused": True, "error": str(e)}))
    finally:
        client.close()


if __name__ == "__main__":
    if sys.argv[1] == "fetch":
        fetch(sys.argv[2], float(sys.argv[3]))
    else:
        refused()
