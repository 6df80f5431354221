// FaninService: the fanin.v1.FanIn gRPC service on the callback API.
//
// Every method is raw (ByteBuffer in and out): Subscribe so that batches are
// built straight from the hub's pre-encoded events (see batch_encoder.h), and
// all of them so that a request that does not parse gets INVALID_ARGUMENT
// naming the method (requests.h) instead of gRPC's empty UNIMPLEMENTED. Each
// stream keeps exactly one write in flight: when a write completes it reads
// the next batch from its hub subscription; when there is nothing to read it
// parks and the hub wakes it on the next matching event. A batch therefore
// goes out as soon as the stream is idle (low latency at low load) and grows up
// to max_batch_events while a write is in flight (throughput at high load).
//
// The unary methods post to the connection's loop and finish from there; no
// gRPC thread ever waits on a loop.
//
// Threads: gRPC's callback threads, the hub's publishing threads (wakes) and
// one heartbeat thread owned by this service.
#ifndef FANIN_SERVER_GRPC_FANIN_SERVICE_H_
#define FANIN_SERVER_GRPC_FANIN_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "fanin/v1/fanin.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "server/core/fanin_core.h"
#include "server/fanout/event_hub.h"
#include "server/fanout/group.h"
#include "server/grpc/batch_cache.h"
#include "server/grpc/cluster_router.h"

namespace fanin::grpc_api {

// What an RPC does: Subscribe, ListConnections, GetStats, ListNodes and Read
// observe;
// Write and CloseConnection act on connections; a lossless Subscribe also
// holds back ingestion (its back-pressure pauses the sockets it matches),
// a right of its own.
enum class Access { kRead, kWrite, kLossless };

struct ServiceOptions {
  uint32_t default_batch_events = 256;
  uint32_t max_batch_events = 4096;
  // Keeps a batch well under gRPC's default 4 MiB receive limit.
  size_t max_batch_bytes = size_t{1} << 20;
  absl::Duration heartbeat_interval = absl::Seconds(5);
  // A lossless stream whose write has not completed for this long (its
  // subscriber stopped reading) is ended with ABORTED, so its back-pressure
  // stops holding back the sockets it matches; it may resume from the last
  // seq it received. Zero: never.
  absl::Duration subscriber_stall_timeout = absl::Seconds(30);
  uint32_t max_subscribers = 1024;
  // Checked first on every FanIn RPC; a non-OK status (UNAUTHENTICATED,
  // PERMISSION_DENIED) ends the RPC before it has any effect. Empty: allow.
  std::function<grpc::Status(grpc::CallbackServerContext*, Access)> authorize;
  // Called with every batch a stream starts writing (for delivery-latency
  // metrics); on a gRPC or publishing thread. Must be quick. Empty: none.
  std::function<void(const std::vector<fanout::EventPtr>&)> on_batch_sent;
  // Cluster mode: routes requests for other nodes' connections and answers
  // the cluster-wide questions. Null in standalone. Not owned.
  ClusterRouter* cluster = nullptr;
  // Worker-pool groups (SubscribeRequest.group).
  fanout::GroupOptions groups;
};

class SubscribeStream;

namespace internal {
using V1 = fanin::v1::FanIn;
using RawService = V1::WithRawCallbackMethod_Subscribe<
    V1::WithRawCallbackMethod_Write<V1::WithRawCallbackMethod_CloseConnection<
        V1::WithRawCallbackMethod_ListConnections<
            V1::WithRawCallbackMethod_GetStats<V1::WithRawCallbackMethod_Read<
                V1::WithRawCallbackMethod_ListNodes<
                    V1::WithRawCallbackMethod_ListGroups<V1::Service>>>>>>>>;
}  // namespace internal

class FaninService final : public internal::RawService {
 public:
  FaninService(core::FaninCore* core, fanout::EventHub* hub,
               ServiceOptions options);
  ~FaninService() override;

  grpc::ServerWriteReactor<grpc::ByteBuffer>* Subscribe(
      grpc::CallbackServerContext* context,
      const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* Write(grpc::CallbackServerContext* context,
                                  const grpc::ByteBuffer* request,
                                  grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* CloseConnection(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ListConnections(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Read(grpc::CallbackServerContext* context,
                                 const grpc::ByteBuffer* request,
                                 grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ListNodes(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* response) override;

  // Runs a request another node routed here (cluster mode) as if it had been
  // asked here: `method` is "Write", "CloseConnection", "Read" or
  // "ListLocal" (a ListConnectionsRequest answered from this node's
  // connections only); `done` gets the status and the serialized response.
  void ExecuteLocal(absl::string_view method, std::string request,
                    ClusterRouter::Reply done);
  grpc::ServerUnaryReactor* ListGroups(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;

  // The gRPC address a standalone ListNodes reports ("127.0.0.1:50051",
  // "unix:PATH"); FaninServer sets it once gRPC is bound (the port may have
  // been 0 until then). Empty until set. Any thread.
  void SetGrpcAddress(std::string address);

  // Graceful drain: every stream delivers what the hub holds for it, then
  // finishes with OK. New subscriptions are refused with UNAVAILABLE.
  void BeginDrain();
  // Streams not yet finished.
  size_t active_streams() const;
  // Waits until no stream and no unary call is in flight (nothing is owed to
  // any caller); false at the deadline.
  bool WaitUntilIdle(absl::Time deadline);
  // Subscriber loss so far (sum of Gap.lost sent).
  uint64_t events_lost() const { return events_lost_.load(); }
  // Encoded batches shared between streams of equal filters.
  const BatchCache& batch_cache() const { return batches_; }
  // Worker-pool groups.
  const fanout::GroupRegistry& groups() const { return groups_; }
  // Cluster mode: another node's group member's progress.
  void NoteGroupProgress(const std::string& group, uint64_t member,
                         uint64_t received_through, uint64_t as_of) {
    groups_.NoteProgress(group, member, received_through, as_of);
  }

 private:
  friend class SubscribeStream;
  friend class UnaryCall;
  // A reactor for a unary call, counted in flight until its OnDone.
  grpc::ServerUnaryReactor* NewUnary();
  void UnaryDone();
  // A unary reactor already finished with `status`.
  grpc::ServerUnaryReactor* Finished(const grpc::Status& status);
  // A reactor in flight and the Reply that finishes it with a serialized
  // response.
  std::pair<grpc::ServerUnaryReactor*, ClusterRouter::Reply> NewReply(
      grpc::ByteBuffer* response);
  bool IsRemote(uint64_t connection_id) const {
    return options_.cluster != nullptr &&
           options_.cluster->IsRemote(connection_id);
  }
  std::vector<std::string> FilterListenerNames() const {
    return options_.cluster != nullptr ? options_.cluster->listener_names()
                                       : core_->listener_names();
  }
  void LocalWrite(fanin::v1::WriteRequest req, ClusterRouter::Reply done);
  void LocalClose(const fanin::v1::CloseConnectionRequest& req,
                  ClusterRouter::Reply done);
  void LocalRead(const fanin::v1::ReadRequest& req, ClusterRouter::Reply done);
  void LocalList(const fanin::v1::ListConnectionsRequest& req,
                 uint64_t as_of_seq, ClusterRouter::Reply done);
  void Register(const std::shared_ptr<SubscribeStream>& stream);
  void Unregister(SubscribeStream* stream);
  void HeartbeatLoop();
  grpc::Status Authorize(grpc::CallbackServerContext* context,
                         Access access) const {
    return options_.authorize ? options_.authorize(context, access)
                              : grpc::Status::OK;
  }
  // The start of every call: authorization, then the request parsed into
  // *out (INVALID_ARGUMENT naming `method` when it does not parse).
  grpc::Status Admit(grpc::CallbackServerContext* context, Access access,
                     const char* method, const grpc::ByteBuffer* request,
                     google::protobuf::Message* out) const;

  core::FaninCore* const core_;
  fanout::EventHub* const hub_;
  const ServiceOptions options_;
  std::atomic<bool> draining_{false};
  std::atomic<uint64_t> events_lost_{0};
  std::atomic<uint64_t> next_subscriber_id_{1};  // for logs
  BatchCache batches_;
  fanout::GroupRegistry groups_;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<SubscribeStream*, std::weak_ptr<SubscribeStream>> streams_
      ABSL_GUARDED_BY(mu_);
  int64_t unary_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::string grpc_address_ ABSL_GUARDED_BY(mu_);
  std::thread heartbeat_thread_;
};

}  // namespace fanin::grpc_api

#endif  // FANIN_SERVER_GRPC_FANIN_SERVICE_H_
