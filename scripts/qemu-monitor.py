#!/usr/bin/env python3
"""Sends human-monitor commands to a QEMU started with
`-monitor unix:PATH,server,nowait` and prints the answers.

Usage: qemu-monitor.py PATH COMMAND...
"""
import socket
import sys
import time


def main() -> int:
    path, commands = sys.argv[1], sys.argv[2:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.settimeout(5)

    def drain() -> str:
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
            if out.endswith(b"(qemu) "):
                break
        return out.decode(errors="replace")

    drain()  # the banner and first prompt
    for c in commands:
        print(f"### {c}")
        s.sendall(c.encode() + b"\n")
        time.sleep(0.2)
        print(drain())
    return 0


if __name__ == "__main__":
    sys.exit(main())
