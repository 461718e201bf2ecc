"""Make docs/chat_gui.png: the window during the example run.

    python docs/screenshot_gui.py

It starts its own X server (Xvfb), a chat server on a free port and the
window, plays client A's side of the example run (SPEC section 3) in the
window while two other clients, both named B, play B's side over sockets,
and takes the picture just before A types EXIT.  Needs Xvfb and xwd
(Debian: apt-get install xvfb x11-apps); the PNG is written by this script
itself, with zlib, so nothing else is needed.
"""

import os
import re
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib

DOCS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DOCS)
sys.path.insert(0, ROOT)

import chat_protocol as protocol  # noqa: E402 (after the path is set)

OUTPUT = os.path.join(DOCS, "chat_gui.png")
TIMEOUT = 10.0


def start_xvfb():
    """An Xvfb on a free display; returns (process, ":N")."""
    reader, writer = os.pipe()
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(writer), "-screen", "0", "1024x768x24",
         "-nolisten", "tcp"],
        pass_fds=(writer,), stderr=subprocess.DEVNULL)
    os.close(writer)
    number = b""
    deadline = time.monotonic() + TIMEOUT
    while not number.endswith(b"\n") and time.monotonic() < deadline:
        if select.select([reader], [], [], 0.1)[0]:
            chunk = os.read(reader, 16)
            if not chunk:
                break
            number += chunk
    os.close(reader)
    if not number.strip().isdigit():
        xvfb.kill()
        sys.exit("Xvfb did not start")
    return xvfb, ":" + number.decode().strip()


def start_server(log):
    """chat_server.py on a free port, logging to ``log``; returns
    (process, port)."""
    server = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "chat_server.py"), "--port", "0",
         "--no-history"], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        log.seek(0)
        match = re.search(r"listening on \S+:(\d+)", log.read())
        if match:
            return server, int(match.group(1))
        time.sleep(0.05)
    server.kill()
    sys.exit("the chat server did not start")


def pump(root, until):
    """Run Tk's loop until until() is true."""
    deadline = time.monotonic() + TIMEOUT
    while not until():
        if time.monotonic() > deadline:
            sys.exit("the window did not show what was expected")
        root.update()
        time.sleep(0.01)


class Peer:
    """Another client, on a blocking socket."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), TIMEOUT)

    def request(self, text):
        protocol.send_message(self.sock, text)
        return protocol.receive_message(self.sock)


def play_example_run(window, port):
    """Client A's part in the window, B's on sockets, up to A's EXIT."""
    root = window.root

    def conversation():
        return window.conversation.get("1.0", "end-1c")

    def type_line(line, shown):
        window.entry.insert(0, line)
        window.entry.event_generate("<Return>")
        pump(root, lambda: conversation().endswith(shown + "\n"))

    type_line("NAME A", "Server sent: Hello A")
    first_b = Peer(port)
    first_b.request("NAME B")
    type_line("GET_NAMES", "Server sent: A B")
    first_b.request("EXIT")
    first_b.sock.close()
    type_line("GET_NAMES", "Server sent: A")
    second_b = Peer(port)
    second_b.request("NAME B")
    type_line("GET_NAMES", "Server sent: A B")
    type_line("MSG B HELLO", "MSG B HELLO")
    assert protocol.receive_message(second_b.sock) == "A sent HELLO"
    protocol.send_message(second_b.sock, "MSG A HELLO")
    pump(root, lambda: conversation().endswith("B sent HELLO\n"))
    pump(root, lambda: window.names.get(0, "end") == ("A", "B"))
    window.entry.insert(0, "EXIT")   # about to leave
    root.update()
    second_b.request("EXIT")
    second_b.sock.close()


def capture(window_id, display):
    """The window's pixels, from xwd: (width, height, rows of RGB bytes)."""
    dump = subprocess.run(
        ["xwd", "-silent", "-display", display, "-id", str(window_id)],
        capture_output=True, check=True, timeout=TIMEOUT).stdout
    fields = struct.unpack(">25I", dump[:100])
    header_size, depth = fields[0], fields[3]
    width, height, byte_order = fields[4], fields[5], fields[7]
    bits_per_pixel, bytes_per_line = fields[11], fields[12]
    masks, colours = fields[14:17], fields[19]
    if bits_per_pixel != 32 or masks != (0xFF0000, 0xFF00, 0xFF):
        sys.exit(f"cannot read a {depth}-bit xwd dump of this kind")
    pixels = dump[header_size + 12 * colours:]
    # Each pixel is 4 bytes; where red, green and blue sit depends on the
    # byte order (0: least significant byte first).
    red, green, blue = (2, 1, 0) if byte_order == 0 else (1, 2, 3)
    rows = []
    for y in range(height):
        line = pixels[y * bytes_per_line:y * bytes_per_line + 4 * width]
        row = bytearray(3 * width)
        row[0::3] = line[red::4]
        row[1::3] = line[green::4]
        row[2::3] = line[blue::4]
        rows.append(bytes(row))
    return width, height, rows


def png(width, height, rows):
    """A PNG file (bytes) of 8-bit RGB rows."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    # Filter "Up" (2) on every row: a window is mostly rows like the last.
    raw = bytearray()
    previous = bytes(3 * width)
    for row in rows:
        raw.append(2)
        raw += bytes((a - b) & 0xFF for a, b in zip(row, previous))
        previous = row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(bytes(raw), 9))
            + chunk(b"IEND", b""))


def main():
    xvfb, display = start_xvfb()
    os.environ["DISPLAY"] = display
    import tkinter
    import chat_gui
    log = tempfile.TemporaryFile("w+")
    server, port = start_server(log)
    try:
        root = tkinter.Tk()
        root.geometry("+0+0")
        sock = socket.create_connection(("127.0.0.1", port), TIMEOUT)
        window = chat_gui.ChatWindow(
            root, sock, title=f"Chat on 127.0.0.1:{port}")
        pump(root, lambda: not window.names_requests)
        play_example_run(window, port)
        root.update()
        with open(OUTPUT, "wb") as picture:
            picture.write(png(*capture(root.winfo_id(), display)))
        window.close()
    finally:
        server.terminate()
        server.wait(TIMEOUT)
        log.close()
        xvfb.terminate()
        xvfb.wait(TIMEOUT)
    print(f"wrote {OUTPUT} ({os.path.getsize(OUTPUT)} bytes)")


if __name__ == "__main__":
    main()
