/* old_pubsub: a plugin of DMTCP's older generation that finds its peer at
 * restart the way such plugins do: at DMTCP_EVENT_REGISTER_NAME_SERVICE_DATA
 * it publishes a new address under "old-$OLD_TAG"; at
 * DMTCP_EVENT_SEND_QUERIES (after the library's global barrier) it looks up
 * "old-$OLD_PEER" and appends to $EVENT_LOG:
 *   <pid> old me=<its address> peer=<the peer's, or missing>
 * (address: pid, restart count and a fresh random nonce). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "dmtcp.h"

static char me[96];

static void key_of(char *k, size_t n, const char *var)
{
  const char *v = getenv(var);
  snprintf(k, n, "old-%s", v ? v : "?");
}

void dmtcp_process_event(DmtcpEvent_t event, DmtcpEventData_t *data)
{
  char key[64];
  if (event == DMTCP_EVENT_REGISTER_NAME_SERVICE_DATA) {
    unsigned nonce = 0;
    if (getrandom(&nonce, sizeof nonce, 0) != sizeof nonce) {
      nonce = (unsigned)getpid();
    }
    snprintf(me, sizeof me, "pid:%d/restart:%d/nonce:%08x", (int)getpid(),
             dmtcp_get_restart_count(), nonce);
    key_of(key, sizeof key, "OLD_TAG");
    dmtcp_send_key_val_pair_to_coordinator("old_pubsub", key, (uint32_t)strlen(key), me,
                                           (uint32_t)strlen(me) + 1);
  } else if (event == DMTCP_EVENT_SEND_QUERIES) {
    char peer[96] = "missing";
    uint32_t len = sizeof peer;
    key_of(key, sizeof key, "OLD_PEER");
    if (!dmtcp_send_query_to_coordinator("old_pubsub", key, (uint32_t)strlen(key), peer,
                                         &len)) {
      strcpy(peer, "missing");
    }
    peer[sizeof peer - 1] = '\0';
    char line[256];
    int n = snprintf(line, sizeof line, "%d old me=%s peer=%s\n", (int)getpid(), me, peer);
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
  NEXT_DMTCP_PROCESS_EVENT(event, data);
}
