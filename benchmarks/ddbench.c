/*
 * ddbench: the measuring tool of `make bench` (compiled at bench time).
 *
 *   ddbench send CONFIG   one thread, pinned by the caller, rotates batches of
 *                         datagrams over every path's client sockets (in an
 *                         order shuffled every cycle) and adds
 *                         its own CPU clock around each sendmmsg to that path
 *   ddbench recv CONFIG   counts datagrams per real-server socket; echoes the
 *                         ones marked 'E'; prints the counts on SIGUSR1
 *
 * Sockets are opened inside each path's network namespace (setns), so one
 * thread serves every replica and every path is measured in the same seconds.
 * With veth the receive path (the director's forwarding included) runs as
 * softirq inside sendmmsg, so CLOCK_THREAD_CPUTIME_ID covers it.
 *
 * send CONFIG lines:
 *   size BYTES | batch N | count N (per path) | rate N (datagrams/s, all paths)
 *   | seconds N (upper bound) | echo 0|1
 *   path NAME NETNS PORTS MODE ADDR:PORT...   MODE spread: every datagram to
 *        the next destination; flow: client port k always to destination k mod n
 * recv CONFIG lines:
 *   sock ID NETNS ADDR PORT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXPATHS 64
#define MAXPORTS 64
#define MAXDST 8
#define MAXBATCH 64
#define MAXSOCKS 1024

struct path {
	char name[64];
	int nports, ndst, flow;
	int fd[MAXPORTS];
	struct sockaddr_in dst[MAXDST];
	uint64_t sent, cpu_ns, next;
	uint64_t replies_dst, replies_other;
};

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static uint64_t clock_ns(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* A UDP socket created inside network namespace NETNS ("-" = current). */
static int socket_in(const char *netns)
{
	int self, ns, fd;

	if (strcmp(netns, "-") == 0)
		return socket(AF_INET, SOCK_DGRAM, 0);
	self = open("/proc/self/ns/net", O_RDONLY);
	ns = open(netns, O_RDONLY);
	if (self < 0 || ns < 0)
		die(netns);
	if (setns(ns, CLONE_NEWNET) < 0)
		die("setns");
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (setns(self, CLONE_NEWNET) < 0)
		die("setns back");
	close(self);
	close(ns);
	return fd;
}

static void parse_addr(const char *s, struct sockaddr_in *sa)
{
	char host[64];
	const char *colon = strrchr(s, ':');

	if (!colon || colon - s >= (long)sizeof(host)) {
		fprintf(stderr, "bad address %s\n", s);
		exit(2);
	}
	memcpy(host, s, colon - s);
	host[colon - s] = 0;
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons(atoi(colon + 1));
	if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) {
		fprintf(stderr, "bad address %s\n", s);
		exit(2);
	}
}

static void big_buffers(int fd)
{
	int sz = 8 << 20;

	setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof(sz));
	setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof(sz));
}

/* ---- sender ---------------------------------------------------------- */

static struct path paths[MAXPATHS];
static int npaths;

static void add_path(char *line)
{
	struct path *p = &paths[npaths];
	char *tok, *save;
	char netns[256];
	int i;

	if (npaths == MAXPATHS) {
		fprintf(stderr, "too many paths\n");
		exit(2);
	}
	memset(p, 0, sizeof(*p));
	strtok_r(line, " \n", &save);
	snprintf(p->name, sizeof(p->name), "%s", strtok_r(NULL, " \n", &save));
	snprintf(netns, sizeof(netns), "%s", strtok_r(NULL, " \n", &save));
	p->nports = atoi(strtok_r(NULL, " \n", &save));
	p->flow = strcmp(strtok_r(NULL, " \n", &save), "flow") == 0;
	while ((tok = strtok_r(NULL, " \n", &save)) && p->ndst < MAXDST)
		parse_addr(tok, &p->dst[p->ndst++]);
	if (p->nports < 1 || p->nports > MAXPORTS || p->ndst < 1) {
		fprintf(stderr, "bad path %s\n", p->name);
		exit(2);
	}
	for (i = 0; i < p->nports; i++) {
		p->fd[i] = socket_in(netns);
		if (p->fd[i] < 0)
			die("socket");
		big_buffers(p->fd[i]);
	}
	npaths++;
}

/* One batch of BATCH datagrams of path P, timed by the thread's CPU clock. */
static void send_batch(struct path *p, char *buf, int size, int batch)
{
	struct mmsghdr msgs[MAXBATCH];
	struct iovec iov = { buf, size };
	int port = p->next % p->nports, i, n;
	uint64_t t0, t1;

	memset(msgs, 0, sizeof(msgs));
	for (i = 0; i < batch; i++) {
		int d = p->flow ? port % p->ndst : (int)((p->sent + i) % p->ndst);

		msgs[i].msg_hdr.msg_name = &p->dst[d];
		msgs[i].msg_hdr.msg_namelen = sizeof(p->dst[d]);
		msgs[i].msg_hdr.msg_iov = &iov;
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	t0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
	n = sendmmsg(p->fd[port], msgs, batch, 0);
	t1 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
	if (n < 0)
		die("sendmmsg");
	p->cpu_ns += t1 - t0;
	p->sent += n;
	p->next++;
}

/* Replies on every client socket, counted by source: the destination the
 * client sent to (VIP:port on a director path) or anything else. */
static void collect_replies(int wait_ms)
{
	char buf[2048];
	struct sockaddr_in from;
	socklen_t len;
	uint64_t end = clock_ns(CLOCK_MONOTONIC) + (uint64_t)wait_ms * 1000000ull;
	int i, j, k;

	while (clock_ns(CLOCK_MONOTONIC) < end) {
		int got = 0;

		for (i = 0; i < npaths; i++) {
			struct path *p = &paths[i];

			for (j = 0; j < p->nports; j++) {
				len = sizeof(from);
				while (recvfrom(p->fd[j], buf, sizeof(buf), MSG_DONTWAIT,
						(struct sockaddr *)&from, &len) >= 0) {
					int mine = 0;

					for (k = 0; k < p->ndst; k++)
						mine |= from.sin_addr.s_addr == p->dst[k].sin_addr.s_addr &&
							from.sin_port == p->dst[k].sin_port;
					if (mine)
						p->replies_dst++;
					else
						p->replies_other++;
					got = 1;
					len = sizeof(from);
				}
			}
		}
		if (!got)
			usleep(1000);
	}
}

/* Fisher-Yates with xorshift64: a fixed, reproducible sequence of orders. */
static void shuffle(int *order, int n, uint64_t *state)
{
	int i, j, t;

	for (i = n - 1; i > 0; i--) {
		*state ^= *state << 13;
		*state ^= *state >> 7;
		*state ^= *state << 17;
		j = (int)(*state % (uint64_t)(i + 1));
		t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
}

static int run_send(FILE *cfg)
{
	char line[4096], buf[65536];
	int size = 64, batch = 32, echo = 0, i, order[MAXPATHS];
	uint64_t count = 1000, rate = 0, seconds = 60, t0, due, k, seed = 0x9e3779b97f4a7c15ull;

	while (fgets(line, sizeof(line), cfg)) {
		if (strncmp(line, "path ", 5) == 0)
			add_path(line);
		else if (sscanf(line, "size %d", &size) == 1 || sscanf(line, "batch %d", &batch) == 1 ||
			 sscanf(line, "echo %d", &echo) == 1 || sscanf(line, "count %lu", &count) == 1 ||
			 sscanf(line, "rate %lu", &rate) == 1 || sscanf(line, "seconds %lu", &seconds) == 1)
			continue;
	}
	if (size < 16 || size > (int)sizeof(buf) || batch < 1 || batch > MAXBATCH) {
		fprintf(stderr, "bad size or batch\n");
		return 2;
	}
	memset(buf, 'x', size);
	buf[0] = echo ? 'E' : 'M';
	t0 = clock_ns(CLOCK_MONOTONIC);
	/* Rotate: one batch per path in turn, paced to RATE over all paths,
	 * bounded by COUNT per path and SECONDS overall.  The order is shuffled
	 * every cycle: a path that evicts caches (a long ruleset, a userspace
	 * peer) must not always precede the same path. */
	for (i = 0; i < npaths; i++)
		order[i] = i;
	for (k = 0; k * batch < count; k++) {
		shuffle(order, npaths, &seed);
		for (i = 0; i < npaths; i++)
			send_batch(&paths[order[i]], buf, size, batch);
		if (rate) {
			due = t0 + (k + 1) * batch * npaths * 1000000000ull / rate;
			while (clock_ns(CLOCK_MONOTONIC) < due)
				;
		}
		if (clock_ns(CLOCK_MONOTONIC) - t0 > seconds * 1000000000ull)
			break;
	}
	if (echo)
		collect_replies(1000);
	printf("elapsed_ns %lu\n", clock_ns(CLOCK_MONOTONIC) - t0);
	for (i = 0; i < npaths; i++)
		printf("path %s sent %lu cpu_ns %lu replies_dst %lu replies_other %lu\n", paths[i].name,
		       paths[i].sent, paths[i].cpu_ns, paths[i].replies_dst, paths[i].replies_other);
	return 0;
}

/* ---- receiver -------------------------------------------------------- */

struct sock {
	char id[96];
	int fd;
	uint64_t count, echoed;
};

static struct sock socks[MAXSOCKS];
static int nsocks;
static volatile sig_atomic_t report, stop;

static void on_usr1(int sig)
{
	(void)sig;
	report = 1;
}

static void on_term(int sig)
{
	(void)sig;
	stop = 1;
}

static void add_sock(const char *line, int ep)
{
	struct sock *s = &socks[nsocks];
	char netns[256], addr[64];
	int port;
	struct sockaddr_in sa;
	struct epoll_event ev = { .events = EPOLLIN };

	if (nsocks == MAXSOCKS || sscanf(line, "sock %95s %255s %63s %d", s->id, netns, addr, &port) != 4) {
		fprintf(stderr, "bad sock line %s", line);
		exit(2);
	}
	s->fd = socket_in(netns);
	if (s->fd < 0)
		die("socket");
	big_buffers(s->fd);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons(port);
	inet_pton(AF_INET, addr, &sa.sin_addr);
	if (bind(s->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die(s->id);
	ev.data.u32 = nsocks;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev) < 0)
		die("epoll_ctl");
	nsocks++;
}

/* Drain one socket; echo what the sender marked 'E' to its source. */
static void drain(struct sock *s)
{
	static char bufs[MAXBATCH][2048];
	struct mmsghdr msgs[MAXBATCH];
	struct iovec iov[MAXBATCH];
	struct sockaddr_in from[MAXBATCH];
	int i, n;

	for (;;) {
		memset(msgs, 0, sizeof(msgs));
		for (i = 0; i < MAXBATCH; i++) {
			iov[i].iov_base = bufs[i];
			iov[i].iov_len = sizeof(bufs[i]);
			msgs[i].msg_hdr.msg_iov = &iov[i];
			msgs[i].msg_hdr.msg_iovlen = 1;
			msgs[i].msg_hdr.msg_name = &from[i];
			msgs[i].msg_hdr.msg_namelen = sizeof(from[i]);
		}
		n = recvmmsg(s->fd, msgs, MAXBATCH, MSG_DONTWAIT, NULL);
		if (n <= 0)
			return;
		s->count += n;
		for (i = 0; i < n; i++) {
			if (bufs[i][0] != 'E')
				continue;
			if (sendto(s->fd, bufs[i], msgs[i].msg_len, 0, (struct sockaddr *)&from[i],
				   sizeof(from[i])) >= 0)
				s->echoed++;
		}
	}
}

static int run_recv(FILE *cfg)
{
	char line[1024];
	struct epoll_event evs[64];
	int ep = epoll_create1(0), i, n;

	if (ep < 0)
		die("epoll_create1");
	while (fgets(line, sizeof(line), cfg))
		if (strncmp(line, "sock ", 5) == 0)
			add_sock(line, ep);
	signal(SIGUSR1, on_usr1);
	signal(SIGTERM, on_term);
	signal(SIGINT, on_term);
	printf("ready %d\n", nsocks);
	fflush(stdout);
	while (!stop) {
		n = epoll_wait(ep, evs, 64, 50);
		for (i = 0; i < n; i++)
			drain(&socks[evs[i].data.u32]);
		if (report) {
			report = 0;
			for (i = 0; i < nsocks; i++)
				drain(&socks[i]);
			for (i = 0; i < nsocks; i++)
				printf("sock %s count %lu echoed %lu\n", socks[i].id, socks[i].count, socks[i].echoed);
			printf("end\n");
			fflush(stdout);
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	FILE *cfg;

	if (argc != 3) {
		fprintf(stderr, "usage: ddbench send|recv CONFIG\n");
		return 2;
	}
	cfg = fopen(argv[2], "r");
	if (!cfg)
		die(argv[2]);
	if (strcmp(argv[1], "send") == 0)
		return run_send(cfg);
	if (strcmp(argv[1], "recv") == 0)
		return run_recv(cfg);
	fprintf(stderr, "usage: ddbench send|recv CONFIG\n");
	return 2;
}
