#!/usr/bin/env python3
"""Sends human-monitor commands to a QEMU started with
`-monitor unix:PATH,server,nowait` and prints the answers.

Usage: qemu-monitor.py PATH COMMAND...
       qemu-monitor.py --watch-nested PATH OUT
The second form samples every CPU's RIP every 2 s until one CPU shows the
same address below 4 GiB (not the test kernel's, not the fuzzer's: a nested
guest's) in 3 samples in a row, then writes that CPU's registers, local
APIC and next instructions to OUT, while it is still in the guest.
"""
import re
import socket
import sys
import time


def query(path: str, commands: list) -> str:
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
    out = []
    for c in commands:
        out.append(f"### {c}")
        s.sendall(c.encode() + b"\n")
        time.sleep(0.2)
        out.append(drain())
    s.close()
    return "\n".join(out)


def watch_nested(path: str, out: str) -> int:
    runs = {}
    while True:
        time.sleep(2)
        try:
            regs = query(path, ["info registers -a"])
        except OSError:
            continue
        for cpu, rip in enumerate(re.findall(r"RIP=([0-9a-f]+)", regs)):
            last, n = runs.get(cpu, (None, 0))
            nested = int(rip, 16) < 1 << 32
            runs[cpu] = (rip, n + 1 if nested and rip == last else int(nested))
            if runs[cpu][1] >= 3:
                dump = query(path, ["info registers -a", f"cpu {cpu}", "info lapic",
                                    "x/16i $pc", "info registers"])
                with open(out, "w") as f:
                    f.write(f"CPU {cpu} in a nested guest for 6 s or more\n{dump}")
                return 0


def main() -> int:
    if sys.argv[1] == "--watch-nested":
        return watch_nested(sys.argv[2], sys.argv[3])
    print(query(sys.argv[1], sys.argv[2:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
