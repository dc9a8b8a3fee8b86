/* ckpt_self.c: a program that checkpoints itself with the application API.
 *
 *   gcc -O1 -I../../inject/include -o ckpt_self ckpt_self.c
 *   ./ckpt_self                      # without DMTCP: runs, no checkpoint
 *   dmtcp-run -- ./ckpt_self         # checkpoints itself after step 3
 *   dmtcp-restart ckpt_ckpt_self_*.dmtcp   # resumes after the checkpoint
 *
 * The work between dmtcp_disable_ckpt() and dmtcp_enable_ckpt() is never
 * split by a checkpoint (a `dmtcp-command -c` arriving then waits for it).
 */
#include <stdio.h>
#include <unistd.h>
#include "dmtcp.h"

int main(void) {
    printf("DMTCP %s\n", dmtcp_present() ? "present" : "not present");
    for (int step = 1; step <= 6; step++) {
        dmtcp_disable_ckpt(); /* e.g. updating two files that must agree */
        printf("step %d (generation %d)\n", step, dmtcp_get_generation());
        fflush(stdout);
        dmtcp_enable_ckpt();
        sleep(1);
        if (step == 3) {
            int r = dmtcp_checkpoint();
            switch (r) {
            case DMTCP_AFTER_CHECKPOINT:
                printf("checkpoint written; the original run goes on\n");
                break;
            case DMTCP_AFTER_RESTART:
                printf("restarted from the checkpoint (restart %d)\n",
                       dmtcp_get_restart_count());
                break;
            case DMTCP_NOT_PRESENT:
                printf("not under DMTCP: no checkpoint\n");
                break;
            default:
                perror("dmtcp_checkpoint");
            }
        }
    }
    return 0;
}
