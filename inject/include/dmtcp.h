/* dmtcp.h: the application API of libdmtcp_inject.so.
 *
 * Every function is declared weak and wrapped in a macro of the same name,
 * so a program built with this header runs unchanged without DMTCP (the
 * calls then return DMTCP_NOT_PRESENT) and needs no link flag: under
 * dmtcp-run the preloaded library provides the symbols. All functions can be
 * called from any thread; none may be called from a signal handler.
 */
#ifndef DMTCP_H
#define DMTCP_H

#ifdef __cplusplus
extern "C" {
#endif

#define DMTCP_NOT_PRESENT 0      /* no DMTCP library in this process */
#define DMTCP_AFTER_CHECKPOINT 1 /* checkpoint done; the original continues */
#define DMTCP_AFTER_RESTART 2    /* this process was restarted from it */

/* 1 when the process runs under DMTCP (the library is loaded). */
int dmtcp_is_enabled(void) __attribute__((weak));
/* Checkpoints the whole computation and waits for the images to be durable.
 * Returns DMTCP_AFTER_CHECKPOINT in the original process, DMTCP_AFTER_RESTART
 * when the process was restarted from this checkpoint, DMTCP_NOT_PRESENT
 * without DMTCP, -1 on failure (errno set; EDEADLK inside this thread's own
 * dmtcp_disable_ckpt() section). */
int dmtcp_checkpoint(void) __attribute__((weak));
/* Critical section: a checkpoint requested between dmtcp_disable_ckpt() and
 * the matching dmtcp_enable_ckpt() waits until the section ends. Nestable,
 * per thread (enable must be called by the thread that disabled). Return 1,
 * DMTCP_NOT_PRESENT without DMTCP, -1 on an unmatched enable. */
int dmtcp_disable_ckpt(void) __attribute__((weak));
int dmtcp_enable_ckpt(void) __attribute__((weak));
/* Number of checkpoints this process went through (a process restarted from
 * checkpoint N sees N); 0 without DMTCP. */
int dmtcp_get_generation(void) __attribute__((weak));
/* Number of times this process was restarted; 0 without DMTCP. */
int dmtcp_get_restart_count(void) __attribute__((weak));

/* Safe calls: a function-like macro does not expand itself, so the inner
 * name is the (possibly null) weak symbol. */
#define dmtcp_is_enabled() (dmtcp_is_enabled ? dmtcp_is_enabled() : 0)
#define dmtcp_checkpoint() (dmtcp_checkpoint ? dmtcp_checkpoint() : DMTCP_NOT_PRESENT)
#define dmtcp_disable_ckpt() (dmtcp_disable_ckpt ? dmtcp_disable_ckpt() : DMTCP_NOT_PRESENT)
#define dmtcp_enable_ckpt() (dmtcp_enable_ckpt ? dmtcp_enable_ckpt() : DMTCP_NOT_PRESENT)
#define dmtcp_get_generation() (dmtcp_get_generation ? dmtcp_get_generation() : 0)
#define dmtcp_get_restart_count() (dmtcp_get_restart_count ? dmtcp_get_restart_count() : 0)

/* 1 when the DMTCP library is present. */
static inline int dmtcp_present(void) { return dmtcp_is_enabled(); }

#ifdef __cplusplus
}
#endif

#endif
