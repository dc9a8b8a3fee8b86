/* dmtcp/plugin.h: DMTCP's include layout; everything is in dmtcp.h. */
#ifndef DMTCP_PLUGIN_H
#define DMTCP_PLUGIN_H
#include "../dmtcp.h"
#endif
