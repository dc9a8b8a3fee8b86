/* tcp_full.c: a TCP connection whose receiver's buffer is full.
 *   tcp_full (producer) --127.0.0.1--> tcp_full-cons (forked consumer)
 * The producer writes a numbered stream of u64 as fast as it can; the
 * consumer reads 64 KiB, then sleeps 5 ms, so the receive window is almost
 * always closed and the producer blocked in write() with bytes held in its
 * own send queue. Those bytes are in neither process and in no receive
 * queue: a checkpoint must read them from the sender's queue (TCP repair
 * mode, CAP_NET_ADMIN). At the stop file the producer shuts down writing;
 * the consumer reads to EOF and checks every number came exactly once, in
 * order.
 *   tcp_full producer PORTFILE / tcp_full consumer PORTFILE: the same two
 * ends as separate programs (separate launches): the producer listens on
 * 127.0.0.1 (port written to PORTFILE) and accepts the consumer. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include "zdtm.h"

#define CHUNK 8192 /* numbers per write: 64 KiB */

static int consumer(int s) {
    prctl(PR_SET_NAME, "tcp_full-cons");
    static uint64_t buf[CHUNK];
    uint64_t expect = 0;
    size_t have = 0; /* bytes of a partial number kept at the front */
    for (;;) {
        ssize_t n = read(s, (char *)buf + have, sizeof buf - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            zdtm_fail("consumer: read: %s", strerror(errno));
        if (n == 0)
            break;
        have += n;
        size_t whole = have / 8;
        for (size_t i = 0; i < whole; i++, expect++)
            if (buf[i] != expect)
                zdtm_fail("consumer: got %llu, expected %llu", (unsigned long long)buf[i],
                          (unsigned long long)expect);
        memmove(buf, (char *)buf + whole * 8, have - whole * 8);
        have -= whole * 8;
        zdtm_msleep(5);
    }
    if (have)
        zdtm_fail("consumer: %zu stray bytes at EOF", have);
    printf("consumer: %llu numbers\n", (unsigned long long)expect);
    fflush(stdout);
    /* Report the count to the producer. */
    if (write(s, &expect, sizeof expect) != sizeof expect)
        zdtm_fail("consumer: write count: %s", strerror(errno));
    exit(expect > 0 ? 0 : 3);
}

static void produce(int c, pid_t child);

static int port_of(const char *portfile) {
    int port = 0;
    for (int i = 0; i < 3000 && !port; i++) {
        FILE *f = fopen(portfile, "r");
        if (f) {
            if (fscanf(f, "%d", &port) != 1)
                port = 0;
            fclose(f);
        }
        if (!port)
            zdtm_msleep(10);
    }
    if (!port)
        zdtm_fail("no port in %s", portfile);
    return port;
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    if (argc == 3 && !strcmp(argv[1], "consumer")) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        a.sin_port = htons(port_of(argv[2]));
        if (connect(s, (struct sockaddr *)&a, sizeof a))
            zdtm_fail("connect: %s", strerror(errno));
        consumer(s);
    }
    if (argc == 3 && !strcmp(argv[1], "producer")) {
        int l = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof a;
        if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1) ||
            getsockname(l, (struct sockaddr *)&a, &len))
            zdtm_fail("listener: %s", strerror(errno));
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "%s.tmp", argv[2]);
        FILE *f = fopen(tmp, "w");
        if (!f || fprintf(f, "%d\n", ntohs(a.sin_port)) < 0 || fclose(f) || rename(tmp, argv[2]))
            zdtm_fail("port file %s: %s", argv[2], strerror(errno));
        int c = accept(l, NULL, NULL);
        if (c < 0)
            zdtm_fail("accept: %s", strerror(errno));
        close(l);
        produce(c, 0);
    }
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1) ||
        getsockname(l, (struct sockaddr *)&a, &len))
        zdtm_fail("listener: %s", strerror(errno));
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (struct sockaddr *)&a, sizeof a))
        zdtm_fail("connect: %s", strerror(errno));
    int s = accept(l, NULL, NULL);
    if (s < 0)
        zdtm_fail("accept: %s", strerror(errno));
    close(l);
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        close(c);
        consumer(s);
    }
    close(s);
    produce(c, child);
}

static void produce(int c, pid_t child) {
    static uint64_t buf[CHUNK];
    uint64_t next = 0;
    zdtm_ready();
    while (!zdtm_stop_requested()) {
        for (int i = 0; i < CHUNK; i++)
            buf[i] = next++;
        size_t done = 0;
        while (done < sizeof buf) {
            ssize_t n = write(c, (char *)buf + done, sizeof buf - done);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                zdtm_fail("producer: write: %s", strerror(errno));
            done += n;
        }
    }
    shutdown(c, SHUT_WR);
    uint64_t got = 0;
    if (read(c, &got, sizeof got) != sizeof got)
        zdtm_fail("producer: no count from the consumer");
    if (got != next)
        zdtm_fail("producer: sent %llu numbers, consumer got %llu", (unsigned long long)next,
                  (unsigned long long)got);
    int st;
    if (child > 0 && (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st)))
        zdtm_fail("consumer failed (%#x)", st);
    printf("producer: %llu numbers\n", (unsigned long long)next);
    zdtm_pass();
}
