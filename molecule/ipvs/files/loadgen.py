"""A paced UDP stream from a handful of source ports, per-datagram bookkeeping.

Runs in the client namespace of the ipvs scenario:
  python3 loadgen.py VIP PORT BASE_PORT NPORTS RATE SECONDS [PIDFILE]
Sends at most RATE*SECONDS datagrams, paced at RATE/s. The stream's length
is meant to follow the test's events, not the clock: a datagram "STOP_PAYLOAD"
to any of its source ports (probe.sh's probe_stop_stream, sent by the script
on the director once it has what it waits for) or SIGTERM (PIDFILE holds the
PID) ends it early; RATE*SECONDS and SECONDS+10 s only bound it. Round robin over
the source ports BASE_PORT..BASE_PORT+NPORTS-1 (unconnected sockets, so a
reply from any source is seen and counted), and prints one JSON object:
per real server, per source port (with the longest run of consecutive
replies from one real server: a pinned port shows one long run), reply
sources, per-second timeline, and per real server the last answered
datagram (for removals), runs of replies from one real server on one port
that last >= LONG_RUN_SECONDS (pinned by a connection entry), runs of >= LOSS_RUN lost
datagrams on one port, and per second the datagrams without reply ("lost"),
the send time of each lost datagram, and per real server the gaps of more
than GAP_SECONDS between its answered datagrams (the health drill), and
"trace": one character per datagram sent, by sequence number (the
director's nft counter counts the same datagrams in the same order, so a
test slices the trace at the counter values of its events): the real
server's character of "trace_keys", or "." for no reply.
Replies are "<name> <payload>". After the last datagram, replies are
collected until QUIET_SECONDS pass without one (a stalled guest answers late,
not never), at most DRAIN_SECONDS.
"""
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time

# A run of this many consecutive replies from one real server on one source
# port means the port was pinned by a connection entry: per packet, 5 ports
# over N>1 real servers give runs of 1-2, and even while only some ports are
# scheduled (the others pinned) and a real server is out for about a second,
# runs stay around one second of one port's datagrams.  So: 5 s of one
# port's datagrams (1000 at 1000/s over 5 ports).
LONG_RUN_SECONDS = 5
# Runs of this many consecutive lost datagrams on one port are listed.
LOSS_RUN = 10
# A real server that answers nothing for this long is reported in gaps_by_rs.
GAP_SECONDS = 0.5
# The payload that ends the stream (see probe.sh: probe_stop_stream).
STOP_PAYLOAD = b"ddipvs-stop"
QUIET_SECONDS = 1.0
DRAIN_SECONDS = 10.0


def main(vip, port, base, nports, rate, seconds, pidfile=None):
    count = int(rate * seconds)
    stop = []
    stopped_by = []

    def on_stop(by):
        if not stop:
            stop.append(time.monotonic())
            stopped_by.append(by)
    signal.signal(signal.SIGTERM, lambda *_: on_stop("SIGTERM"))
    if pidfile:
        with open(pidfile, "w", encoding="ascii") as fh:
            fh.write("%d\n" % os.getpid())
    long_run = max(20, int(LONG_RUN_SECONDS * rate / nports))
    sel = selectors.DefaultSelector()
    socks = []
    for i in range(nports):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind(("0.0.0.0", base + i))
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, i)
        socks.append(sock)
    sent_at = [0.0] * count
    got = {}
    sources = {}
    errors = 0
    start = time.monotonic()
    start_epoch = time.time()
    hard_stop = start + seconds + 10

    def drain(wait):
        nonlocal errors
        for key, _ev in sel.select(timeout=wait):
            while True:
                try:
                    data, peer = key.fileobj.recvfrom(2048)
                except BlockingIOError:
                    break
                except OSError:
                    errors += 1
                    continue
                if data == STOP_PAYLOAD:  # the director's "done", not a reply
                    on_stop("datagram from %s" % peer[0])
                    continue
                src = "%s:%d" % peer[:2]
                sources[src] = sources.get(src, 0) + 1
                name, _sep, rest = data.partition(b" ")
                if len(rest) >= 8:
                    seq = struct.unpack("!Q", rest[:8])[0]
                    if seq < count and seq not in got:
                        got[seq] = name.decode()

    for seq in range(count):
        due = start + seq / rate
        while True:
            now = time.monotonic()
            if now >= due or now > hard_stop:
                break
            drain(min(due - now, 0.002))
        if time.monotonic() > hard_stop or stop:
            count = seq
            break
        try:
            socks[seq % nports].sendto(struct.pack("!Q", seq) + b"datagram.director", (vip, port))
        except OSError:
            errors += 1
        sent_at[seq] = time.monotonic() - start
        drain(0)
    ended = last_reply = time.monotonic()
    while len(got) < count and time.monotonic() - last_reply < QUIET_SECONDS \
            and time.monotonic() - ended < DRAIN_SECONDS:
        before = len(got)
        drain(0.05)
        if len(got) > before:
            last_reply = time.monotonic()

    per_rs = {}
    per_port = {}
    timeline = {}
    last = {}
    first = None
    runs = {}
    long_runs = []
    loss = {}
    loss_runs = []
    lost_at = []
    prev_answer = {}
    gaps = {}
    keys = dict((n, chr(65 + i)) for i, n in enumerate(sorted(set(got.values()))))
    trace = "".join(keys[got[seq]] if seq in got else "." for seq in range(count))
    for seq in range(count):
        name = got.get(seq)
        p = str(base + seq % nports)
        if name is None:
            bucket = timeline.setdefault(str(int(sent_at[seq])), {})
            bucket["lost"] = bucket.get("lost", 0) + 1
            lost_at.append(round(sent_at[seq], 3))
            loss.setdefault(p, [seq, 0])[1] += 1
            continue
        if p in loss:
            first_lost, n = loss.pop(p)
            if n >= LOSS_RUN:
                loss_runs.append({"port": int(p), "first_seq": first_lost, "at_s": round(sent_at[first_lost], 2), "datagrams": n})
        if first is None:
            first = seq
        per_rs[name] = per_rs.get(name, 0) + 1
        item = per_port.setdefault(p, {"per_rs": {}, "longest_run": 0, "tail_run": None})
        item["per_rs"][name] = item["per_rs"].get(name, 0) + 1
        run = runs.get(p)
        if run and run[0] == name:
            run = [name, run[1] + 1, run[2]]
        else:
            if run and run[1] >= long_run:
                long_runs.append({"port": int(p), "real_server": run[0], "first_seq": run[2], "datagrams": run[1]})
            run = [name, 1, seq]
        runs[p] = run
        item["longest_run"] = max(item["longest_run"], run[1])
        sec = str(int(sent_at[seq]))
        timeline.setdefault(sec, {})
        timeline[sec][name] = timeline[sec].get(name, 0) + 1
        last[name] = seq
        # A real server out of the pool for a while (health drill): the send
        # times of its last answered datagram before and first after the gap.
        if name in prev_answer and sent_at[seq] - sent_at[prev_answer[name]] > GAP_SECONDS:
            gaps.setdefault(name, []).append({"last_before_s": round(sent_at[prev_answer[name]], 3),
                                              "first_after_s": round(sent_at[seq], 3)})
        prev_answer[name] = seq
    for p, run in runs.items():
        per_port[p]["tail_run"] = {"real_server": run[0], "datagrams": run[1]}
        if run[1] >= long_run:
            long_runs.append({"port": int(p), "real_server": run[0], "first_seq": run[2], "datagrams": run[1]})
    print(json.dumps({
        "vip": vip, "port": port, "source_ports": [base + i for i in range(nports)],
        "rate": rate, "seconds": seconds, "sent": count, "received": len(got),
        "lost": count - len(got), "send_errors": errors,
        "first_answered_seq": first,
        "first_answered_at_s": round(sent_at[first], 3) if first is not None else None,
        "per_rs": dict(sorted(per_rs.items())),
        "per_port": per_port,
        "reply_sources": sources,
        "timeline": timeline,
        "last_seq_by_rs": last,
        "answered_after_last_by_rs": dict((n, sum(1 for s in got if s > q)) for n, q in last.items()),
        "long_run_threshold": long_run,
        "long_runs": sorted(long_runs, key=lambda r: (r["port"], r["first_seq"])),
        "pinned_datagrams": sum(r["datagrams"] for r in long_runs),
        "loss_runs": loss_runs[:100],
        "lost_at_s": lost_at[:2000],
        "gaps_by_rs": gaps,
        "start_epoch": round(start_epoch, 3),
        "wall_s": round(time.monotonic() - start, 3),
        "stopped_at_s": round(stop[0] - start, 3) if stop else None,
        "stopped_by": stopped_by[0] if stopped_by else None,
        "trace": trace,
        "trace_keys": keys,
    }, sort_keys=True))
    if pidfile:
        os.unlink(pidfile)


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], int(a[1]), int(a[2]), int(a[3]), float(a[4]), float(a[5]), a[6] if len(a) > 6 else None)
