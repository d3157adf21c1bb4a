#!/usr/bin/env python3
"""The straightforward chat server the benchmark compares chatd with.

One thread per client, one lock, a list of members; every line is copied to
every other member with sendall while holding the lock, so the room keeps one
order (and a member that stops reading stops everyone: the obvious design).
It speaks minichat's protocol as far as the benchmark and chat-send need:
HELLO, JOIN, MSG, PING, EXIT. Usage: chat_server.py [PORT]; it prints
`listening on 127.0.0.1:PORT` like chatd.
"""
import socket
import sys
import threading

lock = threading.Lock()
members = []  # (socket, name), in join order


def send_others(me, data):
    for sock, _ in members:
        if sock is not me:
            try:
                sock.sendall(data)
            except OSError:
                pass


def serve(sock):
    name, reason = None, "lost"
    reader = sock.makefile("rb")
    sock.sendall(b"HELLO pychat/0 type JOIN <name> to enter\n")
    try:
        for raw in reader:
            verb, _, arg = raw.decode("utf-8", "replace").rstrip("\r\n").partition(" ")
            verb = verb.upper()
            with lock:
                if verb == "JOIN" and name is None:
                    if any(other == arg for _, other in members):
                        sock.sendall(b"ERR NAME_TAKEN " + arg.encode() + b" is taken\n")
                        continue
                    name = arg
                    members.append((sock, name))
                    sock.sendall(("OK JOIN %s\n" % name).encode())
                    send_others(sock, ("JOINED %s\n" % name).encode())
                elif verb == "MSG" and name is not None:
                    send_others(sock, ("MSG %s %s\n" % (name, arg)).encode())
                elif verb == "PING":
                    sock.sendall(("PONG %s\n" % arg if arg else "PONG\n").encode())
                elif verb == "EXIT":
                    sock.sendall(b"BYE exit\n")
                    reason = "exit"
                    break
    except OSError:
        pass
    finally:
        with lock:
            members[:] = [m for m in members if m[0] is not sock]
            if name is not None:
                send_others(sock, ("LEFT %s %s\n" % (name, reason)).encode())
        sock.close()


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = socket.create_server(("127.0.0.1", port), backlog=1024)
    print("listening on 127.0.0.1:%d" % server.getsockname()[1], flush=True)
    while True:
        client, _ = server.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve, args=(client,), daemon=True).start()


if __name__ == "__main__":
    main()
