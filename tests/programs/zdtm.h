/* zdtm.h: the tiny helper every end-to-end target program shares.
 *
 * Protocol with the harness (tests/src/scenario.rs):
 *   - env ZDTM_STOP = path of the stop file (required);
 *   - env ZDTM_OUT  = optional file the final PASS/FAIL line is appended to;
 *   - the program sets up its state, calls zdtm_ready() ("READY" on stdout),
 *     works until zdtm_stop_requested(), verifies its state and ends with
 *     zdtm_pass() ("PASS", exit 0) or zdtm_fail() ("FAIL: reason", exit 1).
 */
#ifndef ZDTM_H
#define ZDTM_H

#include <stdint.h>

void zdtm_init(int argc, char **argv);
void zdtm_ready(void);
int zdtm_stop_requested(void);
void zdtm_pass(void) __attribute__((noreturn));
void zdtm_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* Sleep for ms milliseconds, resuming after EINTR (for programs that do not
 * test sleeping itself). */
void zdtm_msleep(unsigned ms);
/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t zdtm_now_ns(void);

#endif
