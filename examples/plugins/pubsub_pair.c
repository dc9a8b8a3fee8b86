/* pubsub_pair.c: processes that find each other's new address at restart.
 *
 * At RESTART every process takes a slot number from an atomic counter in the
 * coordinator's database (dmtcp_kvdb_request64 KVDB_INCRBY), publishes its
 * "address" under addr-<slot> (here: its pid, restart count and a fresh
 * random nonce, as a server would publish its new port), and a 1 MiB blob
 * under blob-<slot>; after a global barrier it looks up its peer (slot 0
 * pairs with 1, 2 with 3, ...) and logs one line to $EVENT_LOG:
 *   <pid> slot=<n> me=<address> peer=<peer's address> blob=<ok|bad|missing>
 *
 * Build: gcc -shared -fPIC -I inject/include -o pubsub_pair.so pubsub_pair.c
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "dmtcp.h"

#define BLOB (1u << 20)
static char blob[BLOB];

static void fill(char *b, int slot)
{
  for (unsigned i = 0; i < BLOB; i++) {
    b[i] = (char)((i * 31u + (unsigned)slot * 7u) & 0xff);
  }
}

static void logline(const char *s)
{
  const char *path = getenv("EVENT_LOG");
  int fd = path ? open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644) : 2;
  if (fd >= 0) {
    ssize_t w = write(fd, s, strlen(s));
    (void)w;
    if (fd != 2) {
      close(fd);
    }
  }
}

static void on_restart(void)
{
  int64_t slot = -1;
  if (dmtcp_kvdb_request64(KVDB_INCRBY, "pubsub_pair", "slots", 1, &slot) !=
      KVDB_RESPONSE_SUCCESS) {
    logline("pubsub_pair: no slot\n");
    return;
  }
  unsigned nonce = 0;
  if (getrandom(&nonce, sizeof nonce, 0) != sizeof nonce) {
    nonce = (unsigned)getpid();
  }
  char me[128], key[32];
  snprintf(me, sizeof me, "pid:%d/restart:%d/nonce:%08x", (int)getpid(),
           dmtcp_get_restart_count(), nonce);
  snprintf(key, sizeof key, "addr-%lld", (long long)slot);
  dmtcp_send_key_val_pair_to_coordinator("pubsub_pair", key, (uint32_t)strlen(key),
                                         me, (uint32_t)strlen(me) + 1);
  fill(blob, (int)slot);
  snprintf(key, sizeof key, "blob-%lld", (long long)slot);
  dmtcp_send_key_val_pair_to_coordinator("pubsub_pair", key, (uint32_t)strlen(key),
                                         blob, BLOB);

  dmtcp_global_barrier("pubsub_pair:published");

  long long peer_slot = slot ^ 1;
  char peer[128] = "missing";
  uint32_t len = sizeof peer;
  snprintf(key, sizeof key, "addr-%lld", peer_slot);
  if (!dmtcp_send_query_to_coordinator("pubsub_pair", key, (uint32_t)strlen(key),
                                       peer, &len)) {
    strcpy(peer, "missing");
  }
  peer[sizeof peer - 1] = '\0';
  static char got[BLOB];
  uint32_t blen = BLOB;
  snprintf(key, sizeof key, "blob-%lld", peer_slot);
  const char *blob_state = "missing";
  if (dmtcp_send_query_to_coordinator("pubsub_pair", key, (uint32_t)strlen(key), got,
                                      &blen)) {
    fill(blob, (int)peer_slot);
    blob_state = (blen == BLOB && memcmp(got, blob, BLOB) == 0) ? "ok" : "bad";
  }
  char line[400];
  snprintf(line, sizeof line, "%d slot=%lld me=%s peer=%s blob=%s\n", (int)getpid(),
           (long long)slot, me, peer, blob_state);
  logline(line);
}

static void hook(DmtcpEvent_t event, DmtcpEventData_t *data)
{
  (void)data;
  if (event == DMTCP_EVENT_RESTART) {
    on_restart();
  }
}

static DmtcpPluginDescriptor_t pubsub_pair = {
  DMTCP_PLUGIN_API_VERSION, DMTCP_PACKAGE_VERSION, "pubsub_pair",
  "dmtcp-rs examples", "", "peers find each other at restart", hook
};

DMTCP_DECL_PLUGIN(pubsub_pair);
