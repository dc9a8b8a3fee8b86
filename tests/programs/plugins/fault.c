/* fault: a plugin whose hook misbehaves, for the tests.
 * $PLUGIN_FAULT is "hang:EVENT" or "crash:EVENT" (EVENT: PRESUSPEND,
 * PRECHECKPOINT, RESUME); from checkpoint $PLUGIN_FAULT_FROM on (default 1:
 * the first). With $PLUGIN_FAULT_CHILD_ONLY set, only a process whose parent
 * is not pid 1 misbehaves. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dmtcp.h"

static int seen;

static void hook(DmtcpEvent_t event, DmtcpEventData_t *data)
{
  (void)data;
  const char *f = getenv("PLUGIN_FAULT");
  if (f == NULL || (getenv("PLUGIN_FAULT_CHILD_ONLY") && getppid() == 1)) {
    return;
  }
  const char *name = event == DMTCP_EVENT_PRESUSPEND      ? "PRESUSPEND"
                     : event == DMTCP_EVENT_PRECHECKPOINT ? "PRECHECKPOINT"
                     : event == DMTCP_EVENT_RESUME        ? "RESUME"
                                                          : "";
  if (event == DMTCP_EVENT_PRESUSPEND) {
    seen++;
  }
  const char *from = getenv("PLUGIN_FAULT_FROM");
  if (seen < (from ? atoi(from) : 1) || *name == '\0') {
    return;
  }
  const char *colon = strchr(f, ':');
  if (colon == NULL || strcmp(colon + 1, name) != 0) {
    return;
  }
  if (strncmp(f, "hang:", 5) == 0) {
    for (;;) {
      pause();
    }
  }
  if (strncmp(f, "crash:", 6) == 0) {
    *(volatile int *)0 = 1; /* a real fault: kills even with SIGSEGV blocked */
  }
}

static DmtcpPluginDescriptor_t fault = {
  DMTCP_PLUGIN_API_VERSION, DMTCP_PACKAGE_VERSION, "fault", "tests", "",
  "hangs or crashes in a hook", hook
};

DMTCP_DECL_PLUGIN(fault);
