/* zombie.c: zombies stay zombies across checkpoint/restart and are reaped
 * afterwards with their original status; SIGCHLD and waitpid still work.
 *   child A exits with status 7 before READY (zombie during checkpoints)
 *   child B is killed by SIGTERM before READY (zombie too)
 *   child C runs until the stop file, then exits 3: its SIGCHLD and status
 *   arrive after the last restart. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include "zdtm.h"

static volatile sig_atomic_t sigchld;
static void on_chld(int s) { (void)s; sigchld++; }

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    signal(SIGCHLD, on_chld);
    pid_t a = fork();
    if (a == 0) {
        prctl(PR_SET_NAME, "zombie-a");
        _exit(7);
    }
    pid_t b = fork();
    if (b == 0) {
        prctl(PR_SET_NAME, "zombie-b");
        for (;;)
            pause();
    }
    pid_t c = fork();
    if (c == 0) {
        prctl(PR_SET_NAME, "zombie-c");
        while (!zdtm_stop_requested())
            zdtm_msleep(20);
        _exit(3);
    }
    kill(b, SIGTERM);
    /* Wait until A and B are zombies, without reaping them. */
    siginfo_t si;
    for (int i = 0; i < 2; i++)
        if (waitid(P_ALL, 0, &si, WEXITED | WNOWAIT) || (si.si_pid != a && si.si_pid != b))
            zdtm_fail("waitid");
    zdtm_msleep(100);
    zdtm_ready();
    while (!zdtm_stop_requested())
        zdtm_msleep(50);
    int st;
    if (waitpid(a, &st, 0) != a || !WIFEXITED(st) || WEXITSTATUS(st) != 7)
        zdtm_fail("A: status %#x", st);
    if (waitpid(b, &st, 0) != b || !WIFSIGNALED(st) || WTERMSIG(st) != SIGTERM)
        zdtm_fail("B: status %#x", st);
    if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st) != 3)
        zdtm_fail("C: status %#x", st);
    if (!sigchld)
        zdtm_fail("no SIGCHLD seen");
    zdtm_pass();
}
