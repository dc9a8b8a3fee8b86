/* sleep_inner.c, sleep_inner.c: two plugins wrapping sleep(3). Loaded as
 * --with-plugin sleep_inner.so:sleep_inner.so, a call to sleep() enters
 * sleep_inner's wrapper, which calls NEXT_FNC(sleep): sleep_inner's, which
 * calls the real one. Each says so on stderr (write(2): no stdio locks).
 *
 * Build: gcc -shared -fPIC -I inject/include -o sleep_inner.so sleep_inner.c
 */
#include <string.h>
#include <unistd.h>

#include "dmtcp.h"

static void say(const char *s)
{
  ssize_t w = write(2, s, strlen(s));
  (void)w;
}

unsigned int sleep(unsigned int seconds)
{
  say("sleep_inner: enter\n");
  unsigned int r = NEXT_FNC(sleep)(seconds);
  say("sleep_inner: leave\n");
  return r;
}

/* Wrappers alone need no descriptor; this one has one so that the plugin
 * shows up in error messages by name. */
static DmtcpPluginDescriptor_t sleep_inner = {
  DMTCP_PLUGIN_API_VERSION, DMTCP_PACKAGE_VERSION, "sleep_inner",
  "dmtcp-rs examples", "", "wraps sleep()", NULL
};

DMTCP_DECL_PLUGIN(sleep_inner);
