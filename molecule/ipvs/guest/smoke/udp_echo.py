"""UDP echo for a real server: answers every datagram with "<name> <payload>"
and logs "<payload> <src_ip>:<src_port>" per datagram to LOGFILE."""
import socket
import sys

name, port, logfile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind(("0.0.0.0", port))
with open(logfile, "a", buffering=1) as log:
    log.write("ready\n")
    while True:
        data, peer = s.recvfrom(2048)
        log.write("%s %s:%d\n" % (data.decode(errors="replace"), peer[0], peer[1]))
        s.sendto(("%s %s" % (name, data.decode(errors="replace"))).encode(), peer)
