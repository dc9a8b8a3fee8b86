/* safe_point.c: a PRESUSPEND hook that waits until the program is at a safe
 * point. The program marks the regions a checkpoint must not cut with
 *   void safe_point_begin(void) __attribute__((weak));
 *   void safe_point_end(void) __attribute__((weak));
 * (weak: without the plugin they are null and not called). At PRESUSPEND
 * (the program still runs) new regions wait and the hook waits for the open
 * ones to end; at RESUME/RESTART regions may start again. PRECHECKPOINT
 * logs "<pid> safe_point: PRECHECKPOINT inside=<open regions>" (always 0)
 * to $EVENT_LOG.
 *
 * Only atomics and usleep: at RESUME and RESTART the user threads are
 * stopped, and one could be stopped holding any lock.
 *
 * Build: gcc -shared -fPIC -I inject/include -o safe_point.so safe_point.c
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "dmtcp.h"

static int inside;  /* open regions */
static int pending; /* a checkpoint waits for a safe point */

void safe_point_begin(void)
{
  for (;;) {
    __atomic_add_fetch(&inside, 1, __ATOMIC_SEQ_CST);
    if (!__atomic_load_n(&pending, __ATOMIC_SEQ_CST)) {
      return;
    }
    __atomic_sub_fetch(&inside, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&pending, __ATOMIC_SEQ_CST)) {
      usleep(1000);
    }
  }
}

void safe_point_end(void)
{
  __atomic_sub_fetch(&inside, 1, __ATOMIC_SEQ_CST);
}

static void logline(const char *what)
{
  char line[128];
  int n = snprintf(line, sizeof line, "%d safe_point: %s inside=%d\n", (int)getpid(), what,
                   __atomic_load_n(&inside, __ATOMIC_SEQ_CST));
  const char *path = getenv("EVENT_LOG");
  int fd = path ? open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644) : 2;
  if (fd >= 0) {
    ssize_t w = write(fd, line, (size_t)n);
    (void)w;
    if (fd != 2) {
      close(fd);
    }
  }
}

static void hook(DmtcpEvent_t event, DmtcpEventData_t *data)
{
  (void)data;
  switch (event) {
  case DMTCP_EVENT_PRESUSPEND:
    __atomic_store_n(&pending, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&inside, __ATOMIC_SEQ_CST) > 0) {
      usleep(1000);
    }
    break;
  case DMTCP_EVENT_PRECHECKPOINT:
    logline("PRECHECKPOINT");
    break;
  case DMTCP_EVENT_RESUME:
  case DMTCP_EVENT_RESTART:
    __atomic_store_n(&pending, 0, __ATOMIC_SEQ_CST);
    break;
  default:
    break;
  }
}

static DmtcpPluginDescriptor_t safe_point = {
  DMTCP_PLUGIN_API_VERSION, DMTCP_PACKAGE_VERSION, "safe_point",
  "dmtcp-rs examples", "", "checkpoints only at safe points", hook
};

DMTCP_DECL_PLUGIN(safe_point);
