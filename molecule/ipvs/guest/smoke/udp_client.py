"""Send N datagrams from ONE source port on a connected UDP socket.

udp_client.py TAG VIP PORT SPORT N IFACE
Prints JSON: datagrams received on the connected socket (by reply name and
source) and all UDP replies seen on IFACE by an AF_PACKET capture (by source
address), which also shows replies the connected socket rejects."""
import collections
import json
import select
import socket
import struct
import sys
import time

tag, vip, port, sport, n, iface = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
cap = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
cap.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
cap.bind((iface, 0x0800))
cap.setblocking(False)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("0.0.0.0", sport))
s.connect((vip, port))
s.setblocking(False)

got_sock = collections.Counter()      # "name from ip:port" on the socket
got_wire = collections.Counter()      # source ip:port on the wire
sock_errors = collections.Counter()


def drain():
    while True:
        try:
            pkt, addr = cap.recvfrom(65535)
        except BlockingIOError:
            break
        if addr[2] == socket.PACKET_OUTGOING or len(pkt) < 28 or pkt[9] != 17:
            continue
        ihl = (pkt[0] & 15) * 4
        sp, dp = struct.unpack("!HH", pkt[ihl:ihl + 4])
        if dp == sport:
            got_wire["%s:%d" % (socket.inet_ntoa(pkt[12:16]), sp)] += 1
    while True:
        try:
            data = s.recv(2048)
        except BlockingIOError:
            break
        except OSError as e:
            sock_errors[e.strerror] += 1
            continue
        got_sock["%s from %s:%d" % (data.split()[0].decode(), vip, port)] += 1


t0 = time.time()
for i in range(n):
    s.send(("%s-%04d" % (tag, i)).encode())
    select.select([cap, s], [], [], 0.002)
    drain()
idle = time.time()
while time.time() - idle < 1.5:
    r = select.select([cap, s], [], [], 0.2)[0]
    if r:
        drain()
        idle = time.time()
print(json.dumps({"tag": tag, "sent": n, "client_port": sport, "vip": "%s:%d" % (vip, port),
                  "connected_socket_received": dict(sorted(got_sock.items())),
                  "connected_socket_errors": dict(sock_errors),
                  "replies_on_wire_by_source": dict(sorted(got_wire.items())),
                  "seconds": round(time.time() - t0, 2)}, sort_keys=False))
