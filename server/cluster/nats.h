// Small RAII helpers over the NATS C client (libnats, Debian's libnats-dev):
// owners for its handles and natsStatus turned into absl::Status.
#ifndef FANIN_SERVER_CLUSTER_NATS_H_
#define FANIN_SERVER_CLUSTER_NATS_H_

#include <nats/nats.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace fanin::cluster {

struct NatsDeleter {
  void operator()(natsConnection* p) const { natsConnection_Destroy(p); }
  void operator()(natsOptions* p) const { natsOptions_Destroy(p); }
  void operator()(natsMsg* p) const { natsMsg_Destroy(p); }
  void operator()(natsSubscription* p) const { natsSubscription_Destroy(p); }
  void operator()(jsCtx* p) const { jsCtx_Destroy(p); }
  void operator()(jsPubAck* p) const { jsPubAck_Destroy(p); }
  void operator()(jsStreamInfo* p) const { jsStreamInfo_Destroy(p); }
  void operator()(jsMsgMetaData* p) const { jsMsgMetaData_Destroy(p); }
  void operator()(kvStore* p) const { kvStore_Destroy(p); }
  void operator()(kvEntry* p) const { kvEntry_Destroy(p); }
};
template <typename T>
using NatsPtr = std::unique_ptr<T, NatsDeleter>;

// OK for NATS_OK; otherwise the status named by `what`, with the library's
// text and, for JetStream, its error code. NATS_TIMEOUT and connection
// failures are UNAVAILABLE, NATS_NOT_FOUND NOT_FOUND.
absl::Status FromNats(natsStatus s, absl::string_view what,
                      jsErrCode js_error = static_cast<jsErrCode>(0));

// A header of `msg`, or empty.
std::string Header(natsMsg* msg, const char* key);

}  // namespace fanin::cluster

#endif  // FANIN_SERVER_CLUSTER_NATS_H_
