/* tcp_hosts.c: a TCP connection between two hosts of the computation.
 *   tcp_hosts server PORTFILE       listens on every address (port picked
 *                                   at start, written to PORTFILE), accepts
 *                                   one client, answers each number n with
 *                                   n+1 until END;
 *   tcp_hosts client ADDR PORTFILE  connects to ADDR and keeps WINDOW
 *                                   numbers in flight until the stop file
 *                                   appears, then sends END;
 *   tcp_hosts DATAFILE              both on this host (the server forked,
 *                                   silent, port in DATAFILE.port).
 * Both check the sequence, so bytes in flight both ways at checkpoint time
 * must come back exactly once; both check that getsockname/getpeername did
 * not change (the connection is restarted in place), unless the file
 * PORTFILE.moved exists at the end (an end was migrated to another host). Each prints READY once
 * connected and PASS at the end. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include "zdtm.h"

#define WINDOW 4096
#define END UINT64_MAX

struct names {
	struct sockaddr_storage self, peer;
};

static void names_of(int fd, struct names *n)
{
	socklen_t l1 = sizeof n->self, l2 = sizeof n->peer;
	memset(n, 0, sizeof *n);
	if (getsockname(fd, (struct sockaddr *)&n->self, &l1) || getpeername(fd, (struct sockaddr *)&n->peer, &l2))
		zdtm_fail("getsockname/getpeername: %s", strerror(errno));
}

static const char *moved_flag;

static void same_names(int fd, const struct names *before)
{
	struct names now;
	if (moved_flag && access(moved_flag, F_OK) == 0)
		return;
	names_of(fd, &now);
	if (memcmp(&now, before, sizeof now))
		zdtm_fail("ADDRESSES CHANGED");
}

static void read_full(int fd, void *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(fd, (char *)buf + got, n - got);
		if (r == 0)
			zdtm_fail("read: end of file after %zu of %zu bytes", got, n);
		if (r < 0)
			zdtm_fail("read: %s", strerror(errno));
		got += (size_t)r;
	}
}

static void write_full(int fd, const void *buf, size_t n)
{
	size_t put = 0;
	while (put < n) {
		ssize_t w = write(fd, (const char *)buf + put, n - put);
		if (w < 0)
			zdtm_fail("write: %s", strerror(errno));
		put += (size_t)w;
	}
}

static int server(const char *portfile, int quiet)
{
	int l = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY) };
	socklen_t al = sizeof a;
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1) ||
	    getsockname(l, (struct sockaddr *)&a, &al))
		zdtm_fail("listen: %s", strerror(errno));
	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s.tmp", portfile);
	FILE *f = fopen(tmp, "w");
	if (!f || fprintf(f, "%u\n", ntohs(a.sin_port)) < 0 || fclose(f) || rename(tmp, portfile))
		zdtm_fail("port file %s: %s", portfile, strerror(errno));
	int c = accept(l, NULL, NULL);
	if (c < 0)
		zdtm_fail("accept: %s", strerror(errno));
	struct names n;
	names_of(c, &n);
	if (!quiet)
		zdtm_ready();
	uint64_t expect = 0;
	for (;;) {
		uint64_t v;
		read_full(c, &v, sizeof v);
		if (v == END)
			break;
		if (v != expect)
			zdtm_fail("server: got %llu, expected %llu", (unsigned long long)v, (unsigned long long)expect);
		expect++;
		v++;
		write_full(c, &v, sizeof v);
	}
	same_names(c, &n);
	uint64_t e = END;
	write_full(c, &e, sizeof e);
	if (quiet)
		exit(0);
	printf("server: %llu numbers\n", (unsigned long long)expect);
	zdtm_pass();
}

static int client(const char *addr, const char *portfile, pid_t server_pid)
{
	unsigned port = 0;
	for (int i = 0; i < 3000 && !port; i++) {
		FILE *f = fopen(portfile, "r");
		if (f) {
			if (fscanf(f, "%u", &port) != 1)
				port = 0;
			fclose(f);
		}
		if (!port)
			zdtm_msleep(10);
	}
	if (!port)
		zdtm_fail("no port in %s", portfile);
	int c = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	if (c < 0 || inet_pton(AF_INET, addr, &a.sin_addr) != 1 || connect(c, (struct sockaddr *)&a, sizeof a))
		zdtm_fail("connect to %s:%u: %s", addr, port, strerror(errno));
	struct names n;
	names_of(c, &n);
	zdtm_ready();
	uint64_t sent = 0, answered = 0;
	int stopping = 0;
	while (!stopping || answered < sent) {
		if (!stopping && zdtm_stop_requested())
			stopping = 1;
		struct pollfd p = { .fd = c, .events = POLLIN };
		if (!stopping && sent - answered < WINDOW)
			p.events |= POLLOUT;
		if (poll(&p, 1, 100) < 0) {
			if (errno == EINTR)
				continue;
			zdtm_fail("poll: %s", strerror(errno));
		}
		if (p.revents & POLLOUT) {
			write_full(c, &sent, sizeof sent);
			sent++;
		}
		if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
			uint64_t v;
			read_full(c, &v, sizeof v);
			if (v != answered + 1)
				zdtm_fail("client: got %llu, expected %llu", (unsigned long long)v,
					  (unsigned long long)answered + 1);
			answered++;
		}
	}
	uint64_t e = END;
	write_full(c, &e, sizeof e);
	uint64_t v;
	read_full(c, &v, sizeof v);
	if (v != END)
		zdtm_fail("client: no END from the server");
	same_names(c, &n);
	if (server_pid > 0) {
		int st = 0;
		if (waitpid(server_pid, &st, 0) != server_pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			zdtm_fail("the forked server failed (status %d)", st);
	}
	printf("client: %llu numbers\n", (unsigned long long)sent);
	zdtm_pass();
}

int main(int argc, char **argv)
{
	zdtm_init(argc, argv);
	setvbuf(stdout, NULL, _IOLBF, 0);
	static char flag[4200];
	if (argc >= 3) {
		snprintf(flag, sizeof flag, "%s.moved", argv[argc - 1]);
		moved_flag = flag;
	}
	if (argc == 3 && !strcmp(argv[1], "server"))
		return server(argv[2], 0);
	if (argc == 4 && !strcmp(argv[1], "client"))
		return client(argv[2], argv[3], 0);
	if (argc == 2) {
		char portfile[4096];
		snprintf(portfile, sizeof portfile, "%s.port", argv[1]);
		unlink(portfile);
		pid_t pid = fork();
		if (pid < 0)
			zdtm_fail("fork: %s", strerror(errno));
		if (pid == 0)
			return server(portfile, 1);
		return client("127.0.0.1", portfile, pid);
	}
	fprintf(stderr, "usage: tcp_hosts server PORTFILE | client ADDR PORTFILE | tcp_hosts DATAFILE\n");
	return 2;
}
