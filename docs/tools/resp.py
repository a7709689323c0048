"""A minimal RESP2 client and redis-cli style formatter for the documentation generator.

redis-py folds simple strings and bulk strings into the same Python value, so the reference
pages could not show `OK` and `"OK"` apart; this reads the wire types itself.
"""

import socket


class Error(str):
    pass


class Simple(str):
    pass


class Conn:
    def __init__(self, port, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=30)
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return Simple(rest.decode())
        if kind == b"-":
            return Error(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ValueError(f"unexpected reply type {line!r}")

    def call(self, args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return self.read()


def quote(data):
    """Quotes bytes the way redis-cli does."""
    out = '"'
    for b in data:
        c = chr(b)
        if c in '"\\':
            out += "\\" + c
        elif c == "\n":
            out += "\\n"
        elif c == "\r":
            out += "\\r"
        elif c == "\t":
            out += "\\t"
        elif 32 <= b < 127:
            out += c
        else:
            out += "\\x%02x" % b
    return out + '"'


def fmt(reply):
    """Formats a reply as redis-cli prints it to a terminal (RESP2)."""
    if isinstance(reply, Error):
        return f"(error) {reply}"
    if isinstance(reply, Simple):
        return str(reply)
    if isinstance(reply, int):
        return f"(integer) {reply}"
    if reply is None:
        return "(nil)"
    if isinstance(reply, bytes):
        return quote(reply)
    if not reply:
        return "(empty array)"
    width = len(str(len(reply)))
    lines = []
    for i, item in enumerate(reply, 1):
        prefix = f"{i:>{width}}) "
        first, *more = fmt(item).split("\n")
        lines.append(prefix + first)
        lines.extend(" " * len(prefix) + line for line in more)
    return "\n".join(lines)
