/* event_logger.c: a plugin that logs every event it sees, one line each:
 *   <pid> <event name> gen=<generation> restarted=<0|1> running=<0|1>
 * (at POST_EXEC also " boat=<what PRE_EXEC wrote into the lifeboat>")
 * to the file named by $EVENT_LOG (appended), else to stderr; at RESTART
 * also " mark=<value>" when dmtcp-restart's environment has $EVENT_LOG_MARK
 * (dmtcp_get_restart_env).
 * Only async-signal-safe calls (open, write, snprintf into a buffer) are
 * made in the hooks: user threads may be stopped holding stdio locks.
 *
 * Build: gcc -shared -fPIC -I inject/include -o event_logger.so event_logger.c
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dmtcp.h"

static const char *event_name(DmtcpEvent_t e)
{
  switch (e) {
  case DMTCP_EVENT_INIT: return "INIT";
  case DMTCP_EVENT_EXIT: return "EXIT";
  case DMTCP_EVENT_ATFORK_PREPARE: return "ATFORK_PREPARE";
  case DMTCP_EVENT_ATFORK_PARENT: return "ATFORK_PARENT";
  case DMTCP_EVENT_ATFORK_CHILD: return "ATFORK_CHILD";
  case DMTCP_EVENT_PRESUSPEND: return "PRESUSPEND";
  case DMTCP_EVENT_PRECHECKPOINT: return "PRECHECKPOINT";
  case DMTCP_EVENT_RESUME: return "RESUME";
  case DMTCP_EVENT_RESTART: return "RESTART";
  case DMTCP_EVENT_RUNNING: return "RUNNING";
  case DMTCP_EVENT_PRE_EXEC: return "PRE_EXEC";
  case DMTCP_EVENT_POST_EXEC: return "POST_EXEC";
  case DMTCP_EVENT_PTHREAD_START: return "PTHREAD_START";
  case DMTCP_EVENT_PTHREAD_EXIT: return "PTHREAD_EXIT";
  case DMTCP_EVENT_PTHREAD_RETURN: return "PTHREAD_RETURN";
  default: return "OTHER";
  }
}

static void log_event(DmtcpEvent_t event, DmtcpEventData_t *data)
{
  /* At restart, also what $EVENT_LOG_MARK was for dmtcp-restart. */
  char mark[64] = "";
  /* Across exec: a note in the lifeboat at PRE_EXEC, read back (and
   * logged) at POST_EXEC in the new program. */
  static const char note[] = "lifeboat-ok";
  if (event == DMTCP_EVENT_PRE_EXEC) {
    ssize_t w = write(data->preExec.serializationFd, note, sizeof note - 1);
    (void)w;
  }
  if (event == DMTCP_EVENT_POST_EXEC) {
    char b[32] = "";
    ssize_t r = read(data->postExec.serializationFd, b, sizeof b - 1);
    snprintf(mark, sizeof mark, " boat=%.*s", r > 0 ? (int)r : 0, b);
  }
  if (event == DMTCP_EVENT_RESTART) {
    char v[48];
    if (dmtcp_get_restart_env("EVENT_LOG_MARK", v, sizeof v) == RESTART_ENV_SUCCESS) {
      snprintf(mark, sizeof mark, " mark=%s", v);
    }
  }
  char line[256];
  int n = snprintf(line, sizeof line, "%d %s gen=%d restarted=%d running=%d%s\n",
                   (int)getpid(), event_name(event), dmtcp_get_generation(),
                   dmtcp_is_restarted(), dmtcp_is_running_state(), mark);
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

static DmtcpPluginDescriptor_t event_logger = {
  DMTCP_PLUGIN_API_VERSION,
  DMTCP_PACKAGE_VERSION,
  "event_logger",
  "dmtcp-rs examples",
  "",
  "Logs every plugin event",
  log_event
};

DMTCP_DECL_PLUGIN(event_logger);
