#!/usr/bin/env python3
"""Turns `strace -xx` traces of ipvsadm into the hex of the netlink datagrams.

strace decodes the netlink header of every message; this puts the header
bytes back (little-endian, as on x86_64) so the output is byte for byte what
crossed the socket. Only IPVS messages (type IPVS_FAMILY_ID) and the
NLMSG_DONE / NLMSG_ERROR that end their answers are kept. Usage:
    strace2hex.py IPVS_FAMILY_ID TRACE...
"""
import re
import struct
import sys

FLAGS = {"NLM_F_REQUEST": 1, "NLM_F_MULTI": 2, "NLM_F_ACK": 4, "NLM_F_ECHO": 8,
         "NLM_F_CAPPED": 0x100, "NLM_F_ACK_TLVS": 0x200}
HDR = re.compile(r"\{nlmsg_len=(\d+), nlmsg_type=(\w+), nlmsg_flags=([^,]+), "
                 r"nlmsg_seq=(\d+), nlmsg_pid=(-?\d+)\}, ")
INNER = re.compile(r"\{nlmsg_len=(\d+), nlmsg_type=(\w+), nlmsg_flags=([^,]+), "
                   r"nlmsg_seq=(\d+), nlmsg_pid=(-?\d+)\}")
STR = re.compile(r'"((?:[^"\\]|\\.)*)"')


def flags(text):
    v = 0
    for part in text.split("|"):
        v |= FLAGS[part] if part in FLAGS else int(part, 0)
    return v


def unescape(s):
    return bytes(int(h, 16) for h in re.findall(r"\\x([0-9a-f]{2})", s))


def header(length, ty, fl, seq, pid):
    return struct.pack("<IHHIi", length, ty, fl, seq, pid)


def messages(line, family):
    types = {"IPVS": family, "NLMSG_DONE": 3, "NLMSG_ERROR": 2, "nlctrl": 0x10}
    out = b""
    pos = 0
    while True:
        m = HDR.search(line, pos)
        if not m:
            return out
        length, ty, fl, seq, pid = (int(m[1]), types.get(m[2], 0), flags(m[3]),
                                    int(m[4]), int(m[5]))
        rest = line[m.end():]
        if ty == 2:  # {error=E, msg={header}}: the error, then the echoed header
            e = re.match(r"\{error=(-?\w+), msg=", rest)
            err = int(e[1]) if e[1].lstrip("-").isdigit() else -int(
                {"ENOENT": 2, "ESRCH": 3, "EEXIST": 17, "EINVAL": 22}[e[1].lstrip("-")])
            inner = INNER.search(rest)
            echoed = header(int(inner[1]), types.get(inner[2], 0), flags(inner[3]),
                            int(inner[4]), int(inner[5]))
            payload = struct.pack("<i", err) + echoed
            pos = m.end() + inner.end()
        elif rest.startswith("0]") or rest.startswith("0}"):
            payload = b"\0\0\0\0"
            pos = m.end() + 1
        else:
            s = STR.match(rest)
            payload = unescape(s[1])
            pos = m.end() + s.end()
        msg = header(length, ty, fl, seq, pid) + payload
        assert len(msg) == length, (len(msg), length, line[:200])
        out += msg + b"\0" * ((4 - length % 4) % 4)


def main():
    family = int(sys.argv[1], 0)
    for path in sys.argv[2:]:
        print(f"== {path}")
        for line in open(path):
            if "MSG_PEEK" in line or "nlmsg_type=IPVS" not in line and (
                    "NLMSG_DONE" not in line and "NLMSG_ERROR" not in line):
                continue
            if "nlmsg_type=nlctrl" in line and "msg={nlmsg_len" in line and "IPVS" not in line:
                continue
            call = "send" if "sendmsg(" in line else "recv"
            data = messages(line, family)
            if data:
                print(call, data.hex())


main()
