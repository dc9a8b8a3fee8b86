/* gbarrier: a plugin that logs around a global barrier, for the tests.
 * At PRECHECKPOINT, RESUME and RESTART it appends "<tag> before <EVENT>" to
 * $GB_LOG, waits $GB_DELAY_MS milliseconds (default 0) first if set, calls
 * dmtcp_global_barrier("gbarrier"), then appends "<tag> after <EVENT>"
 * (<tag>: $GB_TAG and the pid). Every "after" of one checkpoint follows
 * every "before" of it, in every launch of the computation. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dmtcp.h"

static void note(const char *what, const char *event, int rc)
{
  const char *path = getenv("GB_LOG");
  if (path == NULL) {
    return;
  }
  char line[256];
  const char *tag = getenv("GB_TAG");
  int n = snprintf(line, sizeof line, "%s:%d %s %s rc=%d\n", tag ? tag : "?", (int)getpid(),
                   what, event, rc);
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd >= 0) {
    if (write(fd, line, (size_t)n) != n) {
      /* nothing to do: the test sees the line missing */
    }
    close(fd);
  }
}

static void hook(DmtcpEvent_t event, DmtcpEventData_t *data)
{
  (void)data;
  const char *name = event == DMTCP_EVENT_PRECHECKPOINT ? "PRECHECKPOINT"
                     : event == DMTCP_EVENT_RESUME      ? "RESUME"
                     : event == DMTCP_EVENT_RESTART     ? "RESTART"
                                                        : NULL;
  if (name == NULL) {
    return;
  }
  const char *d = getenv("GB_DELAY_MS");
  if (d != NULL) {
    long ms = atol(d);
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
  }
  note("before", name, 0);
  int rc = dmtcp_global_barrier("gbarrier");
  note("after", name, rc);
}

static DmtcpPluginDescriptor_t gbarrier = {
  DMTCP_PLUGIN_API_VERSION, DMTCP_PACKAGE_VERSION, "gbarrier", "tests", "",
  "logs around a global barrier", hook
};

DMTCP_DECL_PLUGIN(gbarrier);
