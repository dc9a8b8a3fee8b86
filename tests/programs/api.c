/* api.c: the application API (inject/include/dmtcp.h).
 *
 * argv[1] says what to expect:
 *   bare          no DMTCP: every call returns DMTCP_NOT_PRESENT;
 *   launch        under dmtcp-run: the program's own checkpoint returns
 *                 DMTCP_AFTER_CHECKPOINT;
 *   self-restart  the harness restarts from the program's own checkpoint:
 *                 that same call returns DMTCP_AFTER_RESTART.
 * Throughout, a thread holds dmtcp_disable_ckpt() for 300 ms at a time and
 * checks that no checkpoint happens inside (the generation does not move).
 * At the stop the program checkpoints itself once more (must return
 * DMTCP_AFTER_CHECKPOINT, generation +1: the coordinator is found after
 * restarts too). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include "dmtcp.h"
#include "zdtm.h"

static volatile int stop_critical, bad;
static int ok_ret = 1; /* what disable/enable return: 1, or DMTCP_NOT_PRESENT without DMTCP */
static volatile long sections;
static char why[256];

static void *critical(void *arg) {
    (void)arg;
    while (!stop_critical) {
        if (dmtcp_disable_ckpt() != ok_ret) {
            snprintf(why, sizeof why, "dmtcp_disable_ckpt failed");
            bad = 1;
        }
        dmtcp_disable_ckpt(); /* nested */
        int g1 = dmtcp_get_generation();
        zdtm_msleep(150);
        dmtcp_enable_ckpt();
        zdtm_msleep(150);
        int g2 = dmtcp_get_generation();
        if (dmtcp_enable_ckpt() != ok_ret) {
            snprintf(why, sizeof why, "dmtcp_enable_ckpt failed");
            bad = 1;
        }
        if (g1 != g2) {
            snprintf(why, sizeof why, "checkpoint inside a critical section: generation %d -> %d", g1, g2);
            bad = 1;
        }
        sections++;
        zdtm_msleep(30);
    }
    return NULL;
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    const char *mode = argc > 1 ? argv[1] : "launch";
    int bare = strcmp(mode, "bare") == 0;
    int self_restart = strcmp(mode, "self-restart") == 0;
    ok_ret = bare ? DMTCP_NOT_PRESENT : 1;
    if (dmtcp_is_enabled() != !bare || dmtcp_present() != !bare)
        zdtm_fail("dmtcp_is_enabled() = %d in mode %s", dmtcp_is_enabled(), mode);
    if (!bare && dmtcp_enable_ckpt() != -1)
        zdtm_fail("unmatched dmtcp_enable_ckpt() accepted");

    pthread_t t;
    if (pthread_create(&t, NULL, critical, NULL))
        zdtm_fail("pthread_create");

    int gen0 = dmtcp_get_generation();
    int first = dmtcp_checkpoint();
    int gen1 = dmtcp_get_generation();
    int restarts = dmtcp_get_restart_count();
    printf("first dmtcp_checkpoint() = %d, generation %d -> %d, restarts %d\n", first, gen0,
           gen1, restarts);
    fflush(stdout);
    zdtm_ready();
    while (!zdtm_stop_requested())
        zdtm_msleep(50);

    int g = dmtcp_get_generation();
    int last = dmtcp_checkpoint();
    int g_last = dmtcp_get_generation();
    stop_critical = 1;
    pthread_join(t, NULL);
    printf("last dmtcp_checkpoint() = %d, generation %d -> %d, restarts %d, sections %ld\n",
           last, g, g_last, dmtcp_get_restart_count(), sections);
    if (bad)
        zdtm_fail("%s", why);
    if (sections < 3)
        zdtm_fail("only %ld critical sections", sections);
    int want = bare ? DMTCP_NOT_PRESENT : self_restart ? DMTCP_AFTER_RESTART : DMTCP_AFTER_CHECKPOINT;
    if (first != want)
        zdtm_fail("first dmtcp_checkpoint() = %d (errno %s), want %d", first, strerror(errno), want);
    if (!bare && gen1 != gen0 + 1)
        zdtm_fail("generation %d -> %d across the first checkpoint", gen0, gen1);
    if (self_restart && restarts < 1)
        zdtm_fail("restart count %d after a restart", restarts);
    if (last != (bare ? DMTCP_NOT_PRESENT : DMTCP_AFTER_CHECKPOINT))
        zdtm_fail("last dmtcp_checkpoint() = %d (errno %s)", last, strerror(errno));
    if (!bare && g_last != g + 1)
        zdtm_fail("generation %d -> %d across the last checkpoint", g, g_last);
    int lc = -7, lr = -7;
    int ls = dmtcp_get_local_status(&lc, &lr);
    if (bare ? (ls != DMTCP_NOT_PRESENT || lc != -7 || lr != -7)
             : (ls != DMTCP_IS_PRESENT || lc != g_last || lr != dmtcp_get_restart_count()))
        zdtm_fail("dmtcp_get_local_status() = %d (%d checkpoints, %d restarts)", ls, lc, lr);
    zdtm_pass();
}
