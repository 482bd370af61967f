"""The DNS peers of tests/tests/dns.rs, with Python's standard library only.

client PORT:NAME:COUNT ...
    Prints "ready PID", waits for a line on stdin, then sends each NAME
    COUNT times as an A query over UDP to 127.0.0.1:PORT, one after the
    other, each with its own socket and a random id (as a stub resolver
    does), waiting at most 1 s for the answer. Prints one line per query
    ("NAME RCODE" or "NAME TIMEOUT"), then "done".

responder PORT DELAY_MS
    Answers A queries on 127.0.0.1:PORT (UDP) with 192.0.2.7 after
    DELAY_MS; names starting with "drop." are never answered. Prints
    "ready PID" once bound.
"""

import os
import random
import socket
import struct
import sys
import time


def encode_name(name):
    out = b""
    for label in name.split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def query(port, name):
    qid = random.randrange(65536)
    msg = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + encode_name(name) + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    try:
        s.sendto(msg, ("127.0.0.1", port))
        while True:
            data, _ = s.recvfrom(4096)
            if len(data) >= 4 and struct.unpack(">H", data[:2])[0] == qid:
                return str(data[3] & 0x0F)
    except socket.timeout:
        return "TIMEOUT"
    finally:
        s.close()


def client(specs):
    print(f"ready {os.getpid()}", flush=True)
    sys.stdin.readline()
    for spec in specs:
        port, name, count = spec.split(":")
        for _ in range(int(count)):
            print(f"{name} {query(int(port), name)}", flush=True)
    print("done", flush=True)


def question_end(msg):
    at = 12
    while msg[at] != 0:
        at += 1 + msg[at]
    return at + 5


def name_of(msg):
    labels, at = [], 12
    while msg[at] != 0:
        labels.append(msg[at + 1 : at + 1 + msg[at]].decode())
        at += 1 + msg[at]
    return ".".join(labels).lower()


def responder(port, delay_ms):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    print(f"ready {os.getpid()}", flush=True)
    while True:
        msg, peer = s.recvfrom(4096)
        if len(msg) < 12 or name_of(msg).startswith("drop."):
            continue
        time.sleep(delay_ms / 1000)
        end = question_end(msg)
        head = msg[:2] + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0)
        answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + bytes([192, 0, 2, 7])
        s.sendto(head + msg[12:end] + answer, peer)


if __name__ == "__main__":
    if sys.argv[1] == "client":
        client(sys.argv[2:])
    elif sys.argv[1] == "responder":
        responder(int(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")
