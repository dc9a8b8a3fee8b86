/* tcp_ring DIR INDEX N: one node of a ring of N separately launched
 * processes (one dmtcp-run each, joined to one coordinator) passing
 * messages over TCP on loopback, like DMTCP's frisbee test (written anew).
 *
 * Node INDEX listens on 127.0.0.1 (a free port, written to DIR/port.INDEX),
 * connects to node INDEX+1 and accepts node INDEX-1. Node 0 puts three
 * messages into the ring; every node forwards what it receives. Each link
 * carries messages numbered 0, 1, 2, ... with a payload derived from the
 * number, so a byte lost, doubled or reordered, or a reset, fails the node,
 * as do addresses (getsockname/getpeername) that changed (restarts here
 * are in place).
 * Every 200 messages a node prints "node I: R received". After the stop
 * file appears, a closed link is the end of the test: PASS. */
#define _GNU_SOURCE
#include "zdtm.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXLEN 5000

static unsigned char payload(uint32_t seq, uint32_t k)
{
	return (unsigned char)((seq * 7u + k * 13u) & 0xff);
}

static uint32_t len_of(uint32_t seq)
{
	return 500 + (seq * 911u) % (MAXLEN - 500);
}

/* 1: all read; 0: closed (or reset) after the stop file appeared. */
static int read_all(int fd, void *buf, size_t n)
{
	size_t done = 0;
	while (done < n) {
		ssize_t r = read(fd, (char *)buf + done, n - done);
		if (r > 0) {
			done += (size_t)r;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		int err = errno; /* zdtm_stop_requested() looks for a file */
		if (zdtm_stop_requested())
			return 0;
		zdtm_fail("read: %s", r == 0 ? "end of file" : strerror(err));
	}
	return 1;
}

static int write_all(int fd, const void *buf, size_t n)
{
	size_t done = 0;
	while (done < n) {
		ssize_t r = write(fd, (const char *)buf + done, n - done);
		if (r > 0) {
			done += (size_t)r;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		int err = errno; /* zdtm_stop_requested() looks for a file */
		if (zdtm_stop_requested())
			return 0;
		zdtm_fail("write: %s", strerror(err));
	}
	return 1;
}

static uint32_t out_seq;

/* getsockname and getpeername of a connection, which a restart in place
 * keeps. */
struct names {
	struct sockaddr_in self, peer;
};

static void names_of(int fd, struct names *n)
{
	socklen_t l1 = sizeof n->self, l2 = sizeof n->peer;
	memset(n, 0, sizeof *n);
	if (getsockname(fd, (struct sockaddr *)&n->self, &l1) ||
	    getpeername(fd, (struct sockaddr *)&n->peer, &l2))
		zdtm_fail("getsockname/getpeername: %s", strerror(errno));
}

static void same_names(int fd, const struct names *before, const char *what)
{
	struct names now;
	names_of(fd, &now);
	if (memcmp(&now, before, sizeof now))
		zdtm_fail("the addresses of the connection %s changed", what);
}

static int send_msg(int fd)
{
	static unsigned char buf[8 + MAXLEN];
	uint32_t seq = out_seq++, len = len_of(seq);
	memcpy(buf, &seq, 4);
	memcpy(buf + 4, &len, 4);
	for (uint32_t k = 0; k < len; k++)
		buf[8 + k] = payload(seq, k);
	return write_all(fd, buf, 8 + len);
}

int main(int argc, char **argv)
{
	zdtm_init(argc, argv);
	if (argc < 4)
		zdtm_fail("usage: tcp_ring DIR INDEX N");
	const char *dir = argv[1];
	int me = atoi(argv[2]), n = atoi(argv[3]);
	signal(SIGPIPE, SIG_IGN);

	int l = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 4))
		zdtm_fail("listen: %s", strerror(errno));
	socklen_t al = sizeof a;
	getsockname(l, (struct sockaddr *)&a, &al);
	char path[4096], tmp[4200];
	snprintf(path, sizeof path, "%s/port.%d", dir, me);
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	if (!f)
		zdtm_fail("%s: %s", tmp, strerror(errno));
	fprintf(f, "%d\n", ntohs(a.sin_port));
	fclose(f);
	rename(tmp, path);

	/* Connect to the next node once its port is known. */
	int next = (me + 1) % n, port = 0;
	snprintf(path, sizeof path, "%s/port.%d", dir, next);
	for (int i = 0; i < 6000 && !port; i++) {
		f = fopen(path, "r");
		if (f) {
			if (fscanf(f, "%d", &port) != 1)
				port = 0;
			fclose(f);
		}
		if (!port)
			zdtm_msleep(10);
	}
	if (!port)
		zdtm_fail("no port for node %d", next);
	int out = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in b = { .sin_family = AF_INET, .sin_port = htons(port) };
	b.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(out, (struct sockaddr *)&b, sizeof b))
		zdtm_fail("connect to node %d: %s", next, strerror(errno));
	int in = accept(l, NULL, NULL);
	if (in < 0)
		zdtm_fail("accept: %s", strerror(errno));
	close(l);
	struct names in_names, out_names;
	names_of(in, &in_names);
	names_of(out, &out_names);
	zdtm_ready();

	if (me == 0)
		for (int i = 0; i < 3; i++)
			send_msg(out);
	uint32_t expect = 0;
	static unsigned char buf[MAXLEN];
	for (;;) {
		struct pollfd p = { .fd = in, .events = POLLIN };
		int r = poll(&p, 1, 200);
		if (r < 0 && errno != EINTR)
			zdtm_fail("poll: %s", strerror(errno));
		if (zdtm_stop_requested())
			break;
		if (r <= 0)
			continue;
		uint32_t hdr[2];
		if (!read_all(in, hdr, sizeof hdr))
			break;
		if (hdr[0] != expect || hdr[1] != len_of(expect))
			zdtm_fail("message %u: got number %u length %u", expect, hdr[0], hdr[1]);
		if (!read_all(in, buf, hdr[1]))
			break;
		for (uint32_t k = 0; k < hdr[1]; k++)
			if (buf[k] != payload(expect, k))
				zdtm_fail("message %u: byte %u is %u, not %u", expect, k, buf[k],
					  payload(expect, k));
		expect++;
		if (expect % 200 == 0) {
			same_names(in, &in_names, "from the previous node");
			same_names(out, &out_names, "to the next node");
			printf("node %d: %u received\n", me, expect);
			fflush(stdout);
		}
		zdtm_msleep(2);
		if (!send_msg(out))
			break;
	}
	printf("node %d: %u received in all\n", me, expect);
	zdtm_pass();
}
