/* posix_mq.c: a POSIX message queue keeps its name, attributes and the
 * messages in flight (with their priorities and order) across restarts.
 * The program keeps 5 messages of mixed priorities in the queue at all
 * times and checks every message it receives against its own model of the
 * queue (highest priority first, FIFO within a priority). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "zdtm.h"

/* Unique per process: run bare, two instances share one namespace. */
static char NAME[64];
#define IN_FLIGHT 5

struct msg { unsigned prio; long seq; };
static struct msg model[IN_FLIGHT + 1];
static int n;

static void put(mqd_t w, long seq) {
    unsigned prio = (unsigned)((seq * 7) % 4);
    char buf[64];
    int len = snprintf(buf, sizeof buf, "msg %ld prio %u", seq, prio);
    if (mq_send(w, buf, len + 1, prio) != 0)
        zdtm_fail("mq_send %ld: %s", seq, strerror(errno));
    model[n++] = (struct msg){prio, seq};
}

static void get(mqd_t r) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (model[i].prio > model[best].prio ||
            (model[i].prio == model[best].prio && model[i].seq < model[best].seq))
            best = i;
    char buf[64], want[64];
    unsigned prio;
    ssize_t got = mq_receive(r, buf, sizeof buf, &prio);
    if (got < 0)
        zdtm_fail("mq_receive (expecting seq %ld): %s", model[best].seq, strerror(errno));
    snprintf(want, sizeof want, "msg %ld prio %u", model[best].seq, model[best].prio);
    if (strcmp(buf, want) != 0 || prio != model[best].prio)
        zdtm_fail("received '%s' prio %u, expected '%s'", buf, prio, want);
    model[best] = model[--n];
}

static void check_attrs(mqd_t r, mqd_t w) {
    struct mq_attr a;
    if (mq_getattr(r, &a) != 0)
        zdtm_fail("mq_getattr: %s", strerror(errno));
    if (a.mq_maxmsg != 8 || a.mq_msgsize != 64 || !(a.mq_flags & O_NONBLOCK) || a.mq_curmsgs != n)
        zdtm_fail("reader attrs: maxmsg %ld msgsize %ld flags %#lx curmsgs %ld (want %d)",
                  a.mq_maxmsg, a.mq_msgsize, a.mq_flags, a.mq_curmsgs, n);
    if (mq_getattr(w, &a) != 0 || (a.mq_flags & O_NONBLOCK))
        zdtm_fail("writer flags %#lx", a.mq_flags);
    if (fcntl(r, F_GETFL) & O_ACCMODE) /* O_RDONLY */
        zdtm_fail("reader access mode %#x", fcntl(r, F_GETFL));
    if ((fcntl(w, F_GETFL) & O_ACCMODE) != O_WRONLY)
        zdtm_fail("writer access mode %#x", fcntl(w, F_GETFL));
    struct stat st;
    if (fstat(r, &st) != 0 || (st.st_mode & 0777) != 0640)
        zdtm_fail("queue mode %o", st.st_mode & 0777);
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    snprintf(NAME, sizeof NAME, "/dmtcp-test-mq-%d", (int)getpid());
    mq_unlink(NAME);
    struct mq_attr attr = {.mq_maxmsg = 8, .mq_msgsize = 64};
    mode_t old = umask(0);
    mqd_t r = mq_open(NAME, O_RDONLY | O_NONBLOCK | O_CREAT | O_EXCL, 0640, &attr);
    umask(old);
    if (r < 0)
        zdtm_fail("mq_open: %s", strerror(errno));
    mqd_t w = mq_open(NAME, O_WRONLY);
    if (w < 0)
        zdtm_fail("mq_open writer: %s", strerror(errno));
    long seq = 0;
    for (; seq < IN_FLIGHT; seq++)
        put(w, seq);
    zdtm_ready();
    while (!zdtm_stop_requested()) {
        check_attrs(r, w);
        get(r);
        put(w, seq++);
        zdtm_msleep(2);
    }
    check_attrs(r, w);
    while (n > 0)
        get(r);
    char buf[64];
    if (mq_receive(r, buf, sizeof buf, NULL) >= 0 || errno != EAGAIN)
        zdtm_fail("queue not empty at the end");
    mq_close(r);
    mq_close(w);
    mq_unlink(NAME);
    printf("%ld messages\n", seq);
    zdtm_pass();
}
