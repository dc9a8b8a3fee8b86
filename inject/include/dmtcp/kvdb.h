/* dmtcp/kvdb.h: the C++ names of DMTCP's key-value database
 * (dmtcp::kvdb), a thin layer over the C calls of dmtcp.h. */
#ifndef DMTCP_KVDB_H
#define DMTCP_KVDB_H

#include <stdint.h>
#include <string>

#include "../dmtcp.h"

namespace dmtcp
{
namespace kvdb
{
enum KVDBRequest {
  KVDB_SET = ::KVDB_SET,
  KVDB_INCRBY = ::KVDB_INCRBY,
  KVDB_AND = ::KVDB_AND,
  KVDB_OR = ::KVDB_OR,
  KVDB_XOR = ::KVDB_XOR,
  KVDB_MIN = ::KVDB_MIN,
  KVDB_MAX = ::KVDB_MAX,
  KVDB_GET = ::KVDB_GET
};

enum KVDBResponse {
  KVDB_RESPONSE_SUCCESS = ::KVDB_RESPONSE_SUCCESS,
  KVDB_RESPONSE_INVALID_REQUEST = ::KVDB_RESPONSE_INVALID_REQUEST,
  KVDB_RESPONSE_DB_NOT_FOUND = ::KVDB_RESPONSE_DB_NOT_FOUND,
  KVDB_RESPONSE_KEY_NOT_FOUND = ::KVDB_RESPONSE_KEY_NOT_FOUND,
  KVDB_RESPONSE_ERROR = ::KVDB_RESPONSE_ERROR
};

/* Stores val under key in database id. */
inline KVDBResponse set(const std::string &id, const std::string &key, const std::string &val)
{
  int ok = dmtcp_send_key_val_pair_to_coordinator(id.c_str(), key.data(), (uint32_t)key.size(),
                                                  val.data(), (uint32_t)val.size());
  return ok ? KVDB_RESPONSE_SUCCESS : KVDB_RESPONSE_ERROR;
}

/* Reads the value of key (any length) into *val. */
inline KVDBResponse get(const std::string &id, const std::string &key, std::string *val)
{
  std::string buf(4096, '\0');
  for (;;) {
    uint32_t len = (uint32_t)buf.size();
    if (!dmtcp_send_query_to_coordinator(id.c_str(), key.data(), (uint32_t)key.size(), &buf[0],
                                         &len)) {
      return KVDB_RESPONSE_KEY_NOT_FOUND;
    }
    if (len <= buf.size()) {
      val->assign(buf.data(), len);
      return KVDB_RESPONSE_SUCCESS;
    }
    buf.resize(len);
  }
}

/* An atomic integer operation; *oldVal gets the value before. */
inline KVDBResponse request64(KVDBRequest request, const std::string &id, const std::string &key,
                              int64_t val, int64_t *oldVal = nullptr)
{
  return (KVDBResponse)dmtcp_kvdb_request64((DmtcpKvdbOp_t)request, id.c_str(), key.c_str(), val,
                                            oldVal);
}

inline KVDBResponse get64(const std::string &id, const std::string &key, int64_t *val)
{
  return request64(KVDB_GET, id, key, 0, val);
}
} // namespace kvdb
} // namespace dmtcp

#endif
