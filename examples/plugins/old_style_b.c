/* old_style_a.c, old_style_b.c: plugins of DMTCP's older generation: no
 * descriptor, a dmtcp_process_event() that passes each event on with
 * NEXT_DMTCP_PROCESS_EVENT. Each logs "<tag> <pid> <event> isRestart=<n>"
 * to $EVENT_LOG. With $OLD_STYLE_A_SWALLOW set, old_style_a does not pass the
 * checkpoint events on, so old_style_b (loaded after it) does not see them.
 *
 * Build: gcc -shared -fPIC -I inject/include -o old_style_b.so old_style_b.c
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dmtcp.h"

#define TAG "b"
#define SWALLOW_VAR "OLD_STYLE_B_SWALLOW"

static const char *name(DmtcpEvent_t e)
{
  switch (e) {
  case DMTCP_EVENT_INIT: return "INIT";
  case DMTCP_EVENT_WAIT_FOR_SUSPEND_MSG: return "WAIT_FOR_SUSPEND_MSG";
  case DMTCP_EVENT_THREADS_SUSPEND: return "THREADS_SUSPEND";
  case DMTCP_EVENT_SUSPENDED: return "SUSPENDED";
  case DMTCP_EVENT_LEADER_ELECTION: return "LEADER_ELECTION";
  case DMTCP_EVENT_DRAIN: return "DRAIN";
  case DMTCP_EVENT_WRITE_CKPT: return "WRITE_CKPT";
  case DMTCP_EVENT_REFILL: return "REFILL";
  case DMTCP_EVENT_RESUME: return "RESUME";
  case DMTCP_EVENT_RESTART: return "RESTART";
  case DMTCP_EVENT_REGISTER_NAME_SERVICE_DATA: return "REGISTER_NAME_SERVICE_DATA";
  case DMTCP_EVENT_SEND_QUERIES: return "SEND_QUERIES";
  case DMTCP_EVENT_THREADS_RESUME: return "THREADS_RESUME";
  default: return NULL;
  }
}

void dmtcp_process_event(DmtcpEvent_t event, DmtcpEventData_t *data)
{
  const char *n = name(event);
  if (n != NULL) {
    char line[160];
    int len = snprintf(line, sizeof line, "%s %d %s isRestart=%d\n", TAG, (int)getpid(), n,
                       event == DMTCP_EVENT_THREADS_RESUME ? data->resumeInfo.isRestart
                                                          : data->refillInfo.isRestart);
    const char *path = getenv("EVENT_LOG");
    int fd = path ? open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644) : 2;
    if (fd >= 0) {
      ssize_t w = write(fd, line, (size_t)len);
      (void)w;
      if (fd != 2) {
        close(fd);
      }
    }
  }
  if (getenv(SWALLOW_VAR) != NULL && event != DMTCP_EVENT_INIT) {
    return; /* later plugins do not see it */
  }
  NEXT_DMTCP_PROCESS_EVENT(event, data);
}
