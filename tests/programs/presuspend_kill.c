/* presuspend_kill.c: a process may end during PRESUSPEND (as in DMTCP's
 * presuspend test). The program's own plugin kills its child and reaps it
 * in PRESUSPEND; the checkpoint goes on without the child, and once RESUME
 * or RESTART has run the parent forks a new one. PASS when, at the stop,
 * PRESUSPEND killed at least one child, a new child was forked after each
 * kill, and the current child runs. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>
#include "dmtcp.h"
#include "zdtm.h"

/* > 0: the child; 0: fork one; -1: killed, wait for RESUME/RESTART. */
static volatile pid_t child;
static volatile int killed, forks;

static void hook(DmtcpEvent_t event, DmtcpEventData_t *data) {
    (void)data;
    switch (event) {
    case DMTCP_EVENT_PRESUSPEND:
        if (child > 0) {
            kill(child, SIGKILL);
            waitpid(child, NULL, 0);
            child = -1;
            killed++;
        }
        break;
    case DMTCP_EVENT_RESUME:
    case DMTCP_EVENT_RESTART:
        if (child == -1)
            child = 0;
        break;
    default:
        break;
    }
}

static DmtcpPluginDescriptor_t plugin = {
    DMTCP_PLUGIN_API_VERSION, DMTCP_PACKAGE_VERSION, "presuspend_kill", "tests",
    "tests", "kills its child in PRESUSPEND", hook};

static pid_t start_child(void) {
    pid_t p = fork();
    if (p < 0)
        zdtm_fail("fork");
    if (p == 0) {
        child = 0;
        for (;;)
            zdtm_msleep(100);
    }
    forks++;
    return p;
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    if (dmtcp_is_enabled()) /* a weak symbol, null without DMTCP */
        dmtcp_register_plugin(plugin);
    child = start_child();
    zdtm_ready();
    while (!zdtm_stop_requested()) {
        if (child == 0)
            child = start_child();
        zdtm_msleep(50);
    }
    printf("killed %d, forked %d\n", killed, forks);
    if (!dmtcp_is_enabled()) { /* run bare: no checkpoint, no PRESUSPEND */
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        zdtm_pass();
    }
    if (killed < 1)
        zdtm_fail("no child was killed in PRESUSPEND");
    if (child <= 0 || forks != killed + 1)
        zdtm_fail("%d kill(s) but %d fork(s); child %d", killed, forks, (int)child);
    if (kill(child, 0) != 0)
        zdtm_fail("the current child %d does not run", (int)child);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    zdtm_pass();
}
