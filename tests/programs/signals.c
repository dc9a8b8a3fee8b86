/* signals.c: signal state across checkpoint/restart.
 * - SIGUSR1 is blocked and one is pending (sent before READY): it must still
 *   be pending (and blocked) after every restart, and be delivered once the
 *   program unblocks it at the end, exactly once.
 * - a SIGALRM handler runs from a 50 ms ITIMER_REAL: ticks keep coming.
 * - SIGTERM is ignored, SIGHUP has an SA_RESTART handler with a mask. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>
#include "zdtm.h"

static volatile sig_atomic_t usr1_count, alarms;
static void on_usr1(int s) { (void)s; usr1_count++; }
static void on_alarm(int s) { (void)s; alarms++; }
static void on_hup(int s) { (void)s; }

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    sa.sa_handler = on_hup;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR2);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGTERM, SIG_IGN);

    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, NULL);
    kill(getpid(), SIGUSR1);

    struct itimerval it = {{0, 50000}, {0, 50000}};
    setitimer(ITIMER_REAL, &it, NULL);
    zdtm_ready();
    int last = 0;
    while (!zdtm_stop_requested()) {
        zdtm_msleep(100);
        sigset_t pend;
        sigpending(&pend);
        if (!sigismember(&pend, SIGUSR1))
            zdtm_fail("SIGUSR1 no longer pending");
        if (usr1_count)
            zdtm_fail("blocked SIGUSR1 was delivered");
        last = alarms;
    }
    int before = alarms;
    zdtm_msleep(300);
    if (alarms <= before)
        zdtm_fail("itimer stopped ticking (%d alarms, last %d)", alarms, last);
    struct sigaction cur;
    sigaction(SIGHUP, NULL, &cur);
    if (cur.sa_handler != on_hup || !(cur.sa_flags & SA_RESTART) || !sigismember(&cur.sa_mask, SIGUSR2))
        zdtm_fail("SIGHUP disposition changed");
    sigaction(SIGTERM, NULL, &cur);
    if (cur.sa_handler != SIG_IGN)
        zdtm_fail("SIGTERM no longer ignored");
    sigprocmask(SIG_UNBLOCK, &block, NULL);
    if (usr1_count != 1)
        zdtm_fail("SIGUSR1 delivered %d times", (int)usr1_count);
    zdtm_pass();
}
