#!/usr/bin/env python3
"""Regenerates the independent known-answer vectors of pay/wechat's tests.

AES-256-GCM ciphertexts come from Python's `cryptography` (AESGCM), not from
Go, and the fuzz seed's signature from `openssl dgst -sha256 -sign`. Both are
deterministic for fixed inputs, so a rerun reproduces the committed files
byte for byte (TestVectorsReproducible checks that when the tools exist).

Usage: python3 make_vectors.py [output-dir]   (default: this directory)
"""
import base64
import json
import os
import subprocess
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else HERE

APIV3_KEY = "fgTestAPIv3Key__0123456789abcdef"  # 32 ASCII bytes
MCHID = "1900000109"
APPID = "wxd678efh567hg6787"
NONCE = "fGn0nce12chr"  # 12 characters, used raw as the GCM nonce
AAD = "transaction"
TIMESTAMP = "1704081606"  # 2024-01-01T12:00:06+08:00
HEADER_NONCE = "3b0b7dc6c0a2e0f2a1b4c6d8e0f2a4b6"
CERT_SERIAL = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"


def transaction(mchid=MCHID, appid=APPID):
    return json.dumps({
        "mchid": mchid, "appid": appid, "out_trade_no": "FG20240101000001",
        "transaction_id": "4200000000202401010000000001", "trade_type": "NATIVE",
        "trade_state": "SUCCESS", "trade_state_desc": "支付成功", "bank_type": "OTHERS",
        "attach": "", "success_time": "2024-01-01T12:00:05+08:00",
        "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
        "amount": {"total": 100, "payer_total": 90, "currency": "CNY", "payer_currency": "CNY"},
    }, ensure_ascii=False, separators=(",", ":"))


def seal(plaintext, nonce=NONCE, aad=AAD):
    ct = AESGCM(APIV3_KEY.encode()).encrypt(nonce.encode(), plaintext.encode(), aad.encode() if aad else None)
    return base64.b64encode(ct).decode()


def main():
    cases = [
        ("paid", transaction(), AAD),
        ("paid_empty_aad", transaction(), ""),
        ("wrong_mchid", transaction(mchid="1900000999"), AAD),
        ("wrong_appid", transaction(appid="wx0000000000000000"), AAD),
        ("bad_json", "{\"mchid\":\"" + MCHID + "\",", AAD),
    ]
    gcm = [{"name": n, "nonce": NONCE, "aad": a, "plaintext": p, "ciphertext": seal(p, aad=a)} for n, p, a in cases]
    vectors = {"apiv3_key": APIV3_KEY, "mchid": MCHID, "appid": APPID, "gcm": gcm}
    with open(os.path.join(OUT, "gcm_vectors.json"), "w") as f:
        json.dump(vectors, f, ensure_ascii=False, indent=1)
        f.write("\n")

    # Fuzz seed: a complete valid notify signed by the platform certificate's key.
    body = json.dumps({
        "id": "EV-2018022511223320873", "create_time": "2024-01-01T12:00:06+08:00",
        "resource_type": "encrypt-resource", "event_type": "TRANSACTION.SUCCESS", "summary": "支付成功",
        "resource": {"original_type": "transaction", "algorithm": "AEAD_AES_256_GCM",
                     "ciphertext": gcm[0]["ciphertext"], "associated_data": AAD, "nonce": NONCE},
    }, ensure_ascii=False, separators=(",", ":"))
    msg = (TIMESTAMP + "\n" + HEADER_NONCE + "\n" + body + "\n").encode()
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", os.path.join(HERE, "platform_key.pem")],
                         input=msg, capture_output=True, check=True).stdout
    sig_b64 = base64.b64encode(sig).decode()

    def gostr(s):  # Go's strconv.Quote is compatible with JSON strings for this content
        return json.dumps(s, ensure_ascii=True)

    corpus = os.path.join(OUT, "fuzz", "FuzzParseNotify")
    os.makedirs(corpus, exist_ok=True)
    seeds = {
        "valid_notify": (TIMESTAMP, HEADER_NONCE, sig_b64, CERT_SERIAL, body),
        "signtest_probe": (TIMESTAMP, HEADER_NONCE, "WECHATPAY/SIGNTEST/" + sig_b64, CERT_SERIAL, body),
        "empty": ("", "", "", "", ""),
    }
    for name, (ts, nonce, s, serial, b) in seeds.items():
        with open(os.path.join(corpus, name), "w") as f:
            f.write("go test fuzz v1\n")
            for v in (ts, nonce, s, serial):
                f.write("string(" + gostr(v) + ")\n")
            f.write("[]byte(" + gostr(b) + ")\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
