/* kill_in_section.c: a parent that kills and reaps children inside
 * dmtcp_disable_ckpt() sections, as ssh's relay does with its ssh.
 *
 * A checkpoint that finds the section open thaws, waits and freezes again,
 * many times a second. Each round of the loop forks a child, kills it with
 * SIGKILL and reaps it with waitpid(); when the parent is thawed first and
 * kills its child while the child is still stopped for the checkpoint, the
 * child dies traced by the supervisor, and its death must be collected so
 * that the parent's waitpid() sees it. A watchdog thread fails the program
 * when one waitpid() has not returned for 10 s (it blocked for good: the
 * section never closes and the checkpoint fails after its timeout). PASS
 * when rounds were done and every child ended by SIGKILL. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>
#include "dmtcp.h"
#include "zdtm.h"

static volatile uint64_t waiting_since; /* 0: not inside waitpid() */
static volatile long kills;

static void *watchdog(void *arg) {
    (void)arg;
    for (;;) {
        zdtm_msleep(500);
        uint64_t since = waiting_since;
        if (since && zdtm_now_ns() - since > 10ull * 1000000000ull)
            zdtm_fail("waitpid() of a child killed with SIGKILL blocked for over 10 s "
                      "(after %ld kills)", kills);
    }
    return NULL;
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    pthread_t w;
    if (pthread_create(&w, NULL, watchdog, NULL) != 0)
        zdtm_fail("pthread_create");
    zdtm_ready();
    while (!zdtm_stop_requested()) {
        dmtcp_disable_ckpt();
        uint64_t t0 = zdtm_now_ns();
        while (zdtm_now_ns() - t0 < 1500ull * 1000000ull) {
            pid_t p = fork();
            if (p < 0)
                zdtm_fail("fork");
            if (p == 0) {
                for (;;)
                    pause();
            }
            if (kill(p, SIGKILL) != 0)
                zdtm_fail("kill(%d)", (int)p);
            int st = 0;
            waiting_since = zdtm_now_ns();
            pid_t r = waitpid(p, &st, 0);
            waiting_since = 0;
            if (r != p)
                zdtm_fail("waitpid(%d) returned %d", (int)p, (int)r);
            if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL)
                zdtm_fail("child %d ended with status %#x, not by SIGKILL", (int)p, st);
            kills++;
        }
        dmtcp_enable_ckpt();
        zdtm_msleep(100);
    }
    if (kills == 0)
        zdtm_fail("no child was killed");
    zdtm_pass();
}
