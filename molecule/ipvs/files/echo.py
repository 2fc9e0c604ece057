"""UDP echo for the ipvs scenario's real servers (one per network namespace).

Usage: python3 echo.py NAME PORT.  Reply = b"<NAME> " + request, the format of
roles/lab_realserver/files/datagram-echo (its name comes from the argument
because namespaces share the guest's host name). Once its port is bound it
prints "listening EPOCH" (the health drill times the recovery from there: a
Python start takes seconds under TCG).
"""
import socket
import sys
import time


def main(name, port):
    prefix = name.encode() + b" "
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("0.0.0.0", port))
    print("listening %.6f" % time.time(), flush=True)
    while True:
        try:
            data, peer = sock.recvfrom(65535)
            sock.sendto(prefix + data, peer)
        except OSError:
            continue


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
