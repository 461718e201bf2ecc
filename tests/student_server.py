"""A chat server written the way students write it from the course
template, for the checker's tests: one select() loop over a list of
sockets, blocking sends, its own wording ("Welcome, A!"), and no code from
this project.

    python tests/student_server.py [--host H] [--port P] [--fault NAME]

Without a fault it does the exercise right.  ``--fault NAME`` plants one
classic fault of student solutions (see FAULTS); chat_check.py must fail
exactly the checks that the fault breaks.
"""

import argparse
import select
import socket

FAULTS = {
    "none": "no fault",
    "departed": "a client that leaves stays in the GET_NAMES list",
    "spin": "a closed socket is never removed (bytes compared with a str), "
            "so select() returns at once, forever",
    "msg-before-name": "MSG before NAME goes out under the last name set",
    "crash-on-exit": "EXIT crashes the server (a KeyError)",
    "crash-on-reset": "a client's reset crashes the server "
                      "(ConnectionResetError is not caught)",
    "char-count": "4-digit length fields count characters, not bytes",
    "one-recv": "one recv() per message: the rest of a packet is lost",
    "unknown-silent": "no reply to an unknown command",
    "two-digit": "2-digit length fields, as most course templates use: "
                 "counting characters in, bytes out",
}


def end_of_characters(data, count):
    """Where the first ``count`` UTF-8 characters of ``data`` end, or None
    if they are not all there yet."""
    end = 0
    for _ in range(count):
        if end >= len(data):
            return None
        lead = data[end]
        end += 1 if lead < 0xC0 else 2 if lead < 0xE0 else 3 if lead < 0xF0 \
            else 4
    return end if end <= len(data) else None


class StudentServer:
    def __init__(self, host, port, fault):
        self.fault = fault
        self.width = 2 if fault == "two-digit" else 4
        self.server_socket = socket.socket()
        self.server_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR,
                                      1)
        self.server_socket.bind((host, port))
        self.server_socket.listen()
        self.client_sockets = []
        self.buffers = {}
        self.names = {}             # socket -> name
        self.names_in_order = []    # for GET_NAMES
        self.messages_to_send = []  # (socket, bytes)
        self.last_name = None

    def create_msg(self, text):
        data = text.encode()
        length = len(text) if self.fault == "char-count" else len(data)
        return str(length).zfill(self.width).encode() + data

    def take_frames(self, sock):
        """The complete messages in the socket's buffer; ValueError on a
        bad length field."""
        messages = []
        buffer = self.buffers[sock]
        while len(buffer) >= self.width:
            header = buffer[:self.width]
            if not header.isdigit():
                raise ValueError(header)
            body = buffer[self.width:]
            if self.width == 2:  # the templates' clients count characters
                end = end_of_characters(body, int(header))
            else:
                end = int(header) if int(header) <= len(body) else None
            if end is None:
                break
            messages.append(body[:end].decode(errors="replace"))
            buffer = body[end:]
        self.buffers[sock] = buffer
        return messages

    def serve_forever(self):
        host, port = self.server_socket.getsockname()[:2]
        print(f"listening on {host}:{port} ({self.fault})", flush=True)
        while True:
            waiting = [sock for sock, _ in self.messages_to_send]
            rlist, wlist, _ = select.select(
                [self.server_socket] + self.client_sockets, waiting, [])
            for current_socket in rlist:
                if current_socket is self.server_socket:
                    connection, _ = self.server_socket.accept()
                    self.client_sockets.append(connection)
                    self.buffers[connection] = b""
                else:
                    self.read_from(current_socket)
            for message in self.messages_to_send[:]:
                current_socket, data = message
                if current_socket in wlist:
                    self.messages_to_send.remove(message)
                    try:
                        current_socket.sendall(data)
                    except OSError:
                        self.disconnect(current_socket)

    def read_from(self, current_socket):
        if self.fault == "crash-on-reset":
            data = current_socket.recv(1024)
        else:
            try:
                data = current_socket.recv(1024)
            except OSError:
                data = b""
        if self.fault == "spin":
            leaving = data == ""   # the fault: bytes never equal a str
        else:
            leaving = data == b""
        if leaving:
            self.disconnect(current_socket)
            return
        if self.fault == "one-recv":
            header = data[:4]
            messages = ([data[4:4 + int(header)].decode(errors="replace")]
                        if header.isdigit() else None)
        else:
            self.buffers[current_socket] += data
            try:
                messages = self.take_frames(current_socket)
            except ValueError:
                messages = None
        if messages is None:
            current_socket.sendall(self.create_msg("Error - bad length"))
            self.disconnect(current_socket)
            return
        for text in messages:
            self.handle(current_socket, text)
            if current_socket not in self.client_sockets:
                return

    def reply(self, sock, text):
        self.messages_to_send.append((sock, self.create_msg(text)))

    def disconnect(self, sock):
        self.client_sockets.remove(sock)
        name = self.names.pop(sock, None)
        if name is not None and self.fault != "departed":
            self.names_in_order.remove(name)
        self.messages_to_send = [message for message in self.messages_to_send
                                 if message[0] is not sock]
        sock.close()

    def handle(self, current_socket, text):
        command, _, rest = text.partition(" ")
        command = command.upper()
        if command == "NAME":
            name = rest.strip()
            if not name or " " in name:
                self.reply(current_socket, "Error - usage: NAME <name>")
            elif (name in self.names.values()
                  and self.names.get(current_socket) != name):
                self.reply(current_socket, "Error - name taken")
            else:
                old_name = self.names.get(current_socket)
                if old_name is not None:
                    self.names_in_order.remove(old_name)
                self.names[current_socket] = name
                self.names_in_order.append(name)
                self.last_name = name
                self.reply(current_socket, f"Welcome, {name}!")
        elif command == "GET_NAMES":
            self.reply(current_socket,
                       "Connected: " + ", ".join(self.names_in_order))
        elif command == "MSG":
            self.handle_msg(current_socket, rest)
        elif command == "EXIT":
            current_socket.sendall(self.create_msg("Bye"))
            self.disconnect(current_socket)
            if self.fault == "crash-on-exit":
                print(self.names[current_socket], "left")  # removed: crash
        elif self.fault != "unknown-silent":
            self.reply(current_socket, "Error - unknown command")

    def handle_msg(self, current_socket, rest):
        target, _, message = rest.partition(" ")
        sender = self.names.get(current_socket)
        if sender is None and self.fault == "msg-before-name":
            sender = self.last_name
        recipients = [sock for sock, name in self.names.items()
                      if name == target]
        if sender is None:
            self.reply(current_socket, "Error - tell me your NAME first")
        elif not message:
            self.reply(current_socket, "Error - usage: MSG <name> <text>")
        elif not recipients:
            self.reply(current_socket, f"Error - {target} is not here")
        else:
            self.reply(recipients[0], f"Message from {sender}: {message}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8820)
    parser.add_argument("--fault", choices=FAULTS, default="none")
    arguments = parser.parse_args()
    StudentServer(arguments.host, arguments.port,
                  arguments.fault).serve_forever()


if __name__ == "__main__":
    main()
