/* fdkinds.c: eventfd, timerfd and signalfd keep their state.
 *   eventfd counter (5, plus 1 per loop, read back at the end),
 *   semaphore eventfd (3 units, each read returns 1),
 *   periodic timerfd (ticks keep coming, watched by an epoll instance),
 *   signalfd for a blocked SIGUSR1 sent before READY (still readable). */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>
#include "zdtm.h"

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    int ev = eventfd(5, 0), sem = eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct itimerspec its = {{0, 20000000}, {0, 20000000}};
    timerfd_settime(tfd, 0, &its, NULL);
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR1);
    sigprocmask(SIG_BLOCK, &m, NULL);
    int sfd = signalfd(-1, &m, SFD_NONBLOCK);
    int ep = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN, .data.u64 = 0xfeedULL};
    if (ev < 0 || sem < 0 || tfd < 0 || sfd < 0 || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &e))
        zdtm_fail("setup");
    kill(getpid(), SIGUSR1);
    zdtm_ready();
    uint64_t added = 0, ticks = 0, v;
    while (!zdtm_stop_requested()) {
        v = 1;
        if (write(ev, &v, 8) != 8)
            zdtm_fail("eventfd write");
        added++;
        struct epoll_event out;
        int n = epoll_wait(ep, &out, 1, 100);
        if (n == 1) {
            if (out.data.u64 != 0xfeedULL)
                zdtm_fail("epoll data %#llx", (unsigned long long)out.data.u64);
            if (read(tfd, &v, 8) == 8)
                ticks += v;
        }
    }
    uint64_t t0 = ticks;
    for (int i = 0; i < 10; i++) {
        struct epoll_event out;
        if (epoll_wait(ep, &out, 1, 200) == 1 && read(tfd, &v, 8) == 8)
            ticks += v;
    }
    if (ticks <= t0)
        zdtm_fail("timerfd stopped ticking");
    if (read(ev, &v, 8) != 8 || v != 5 + added)
        zdtm_fail("eventfd count %llu, expected %llu", (unsigned long long)v, (unsigned long long)(5 + added));
    for (int i = 0; i < 3; i++)
        if (read(sem, &v, 8) != 8 || v != 1)
            zdtm_fail("semaphore eventfd read %d", i);
    if (read(sem, &v, 8) != -1)
        zdtm_fail("semaphore eventfd had more than 3 units");
    struct signalfd_siginfo si;
    if (read(sfd, &si, sizeof si) != sizeof si || si.ssi_signo != SIGUSR1)
        zdtm_fail("signalfd lost the pending SIGUSR1");
    zdtm_pass();
}
