// ClusterNode: one fanin server's membership of a cluster on NATS JetStream.
//
// Every node publishes its connections' events to one JetStream stream and
// reads the whole stream back into its own EventHub, so all nodes serve the
// same events at the same seq (docs/CLUSTER.md has the design):
//
//   loops ──Publish──▶ ClusterNode (EventSink): bounded buffer
//                        │ publisher thread: one JetStream message per batch,
//                        │ headers Fanin-Base (seq of its first event) and
//                        │ Fanin-Count, published with Nats-Expected-Last-
//                        │ Sequence so batches of all nodes get contiguous seqs
//                        ▼
//                 stream <cluster>_events
//                        │ consumer thread: an ordered consumer
//                        ▼
//                 EventHub (this node's history; subscriptions as standalone)
//
// Membership lives in the KV bucket <cluster>_nodes (one NodeInfo per node
// name, heartbeated every second); incarnations come from the revisions of
// the bucket <cluster>_ids, and a connection id carries its node's
// incarnation in its high 32 bits. Requests for another node's connection go
// to it over NATS request-reply on <cluster>.rpc.<incarnation>.
//
// Threads: the publisher, the consumer, a heartbeat thread (membership,
// request deadlines) and a replier (answers to routed requests, so loops
// never touch the NATS socket); libnats' own threads run the callbacks.
#ifndef FANIN_SERVER_CLUSTER_CLUSTER_NODE_H_
#define FANIN_SERVER_CLUSTER_CLUSTER_NODE_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "fanin/v1/fanin.pb.h"
#include "server/cluster/nats.h"
#include "server/fanout/event_hub.h"
#include "server/fanout/event_sink.h"
#include "server/fanout/group.h"
#include "server/grpc/cluster_router.h"
#include "server/grpc/fanin_service.h"

namespace fanin::cluster {

struct ClusterOptions {
  std::vector<std::string> servers;  // nats://HOST:PORT
  std::string cluster_name = "fanin";
  std::string node_name;
  int64_t stream_max_bytes = int64_t{1} << 30;
  absl::Duration stream_max_age = absl::Hours(24);
  int replicas = 1;
  bool memory_storage = false;
  std::string token;
  std::string user;
  std::string password;
  std::string ca_file;
  absl::Duration connect_timeout = absl::Seconds(10);
  absl::Duration node_timeout = absl::Seconds(10);
  // Events waiting to be published; past it the loops stop reading.
  size_t buffer_bytes = size_t{64} << 20;
  absl::Duration request_timeout = absl::Seconds(5);
  // The largest JetStream message a batch may make (NATS allows 1 MiB).
  size_t max_message_bytes = size_t{512} << 10;
};

struct ClusterStats {
  uint64_t published_events = 0;
  uint64_t publish_batches = 0;
  uint64_t publish_conflicts = 0;
  // Publishes retried because the broker did not answer in time (or at
  // all); the message id makes each harmless.
  uint64_t publish_retries = 0;
  uint64_t consumed_events = 0;
  uint64_t nodes_reported_lost = 0;  // by this node
  uint64_t fenced = 0;               // times this node was fenced and rejoined
  size_t buffer_bytes = 0;
  bool broker_connected = false;
  uint64_t head_seq = 0;    // the cluster stream's newest seq
  uint64_t oldest_seq = 0;  // its oldest retained seq (0: unknown)
};

class ClusterNode final : public fanout::EventSink,
                          public grpc_api::ClusterRouter,
                          public fanout::GroupReplication {
 public:
  // Connects (bounded by connect_timeout), makes sure the stream and buckets
  // exist, refuses a node name a live node holds (ALREADY_EXISTS), and takes
  // an incarnation. UNAVAILABLE when the broker cannot be reached.
  static absl::StatusOr<std::unique_ptr<ClusterNode>> Join(
      ClusterOptions options);
  ~ClusterNode() override;
  using Fetched = fanout::FetchedEvents;  // both bases name it

  // The cluster's epoch (the stream's creation time): HubOptions::epoch.
  const std::string& epoch() const { return epoch_; }
  uint64_t incarnation() const override { return incarnation_; }
  uint64_t first_connection_id() const { return incarnation_ << 32 | 1; }

  // Starts reading the stream into `hub`, publishing, heartbeating and
  // answering routed requests with `service`; publishes NodeChange(JOINED).
  struct Local {
    fanout::EventHub* hub = nullptr;
    grpc_api::FaninService* service = nullptr;
    std::vector<std::string> listeners;
    std::string grpc_address;
    std::function<uint64_t()> connections_open;
    // Fencing: closes every raw connection at once (their events are not
    // published), then makes new ids start at the given one.
    std::function<void()> close_all;
    std::function<void(uint64_t first_id)> restart_ids;
    // Another node's group member's progress (GroupReplication::Progress).
    std::function<void(const std::string& group, uint64_t member,
                       uint64_t received_through, uint64_t as_of)>
        on_group_progress;
  };
  absl::Status Start(Local local);
  // Graceful leave, first step: DRAINING in the registry and the stream.
  void BeginLeave();
  // Last step, after the connections are closed: LEFT, the buffer flushed
  // (at most `flush_timeout`), everything stopped. Idempotent.
  void Stop(absl::Duration flush_timeout);

  ClusterStats GetStats() const;

  // fanout::EventSink
  uint64_t Publish(std::shared_ptr<fanout::StoredEvent> event,
                   Deferred* deferred) override;
  void RunDeferred(Deferred* deferred) override { deferred->items.clear(); }
  bool ReadingPaused(uint32_t, uint64_t) const override {
    return paused_.load(std::memory_order_acquire) ||
           fenced_.load(std::memory_order_acquire);
  }
  bool AcceptingPaused(uint32_t) const override {
    return paused_.load(std::memory_order_acquire) ||
           fenced_.load(std::memory_order_acquire);
  }
  // Broker reachable now (for heartbeats and routed requests).
  bool broker_connected() const {
    return link_->connected.load(std::memory_order_acquire);
  }
  void SetPauseObserver(absl::AnyInvocable<void()> observer) override;

  // grpc_api::ClusterRouter
  const std::string& node() const override { return options_.node_name; }
  std::vector<std::string> listener_names() const override;
  bool IsRemote(uint64_t connection_id) const override {
    return connection_id >> 32 != incarnation_;
  }
  void Call(absl::string_view method, uint64_t connection_id,
            std::string request, Reply done) override;
  void List(const fanin::v1::ListConnectionsRequest& request,
            uint64_t as_of_seq,
            absl::AnyInvocable<
                void(absl::StatusOr<fanin::v1::ListConnectionsResponse>)>
                done) override;
  fanin::v1::ListNodesResponse ListNodes() const override;
  void Fetch(uint64_t from_seq, const fanout::Filter& filter, size_t max_events,
             size_t max_bytes,
             absl::AnyInvocable<void(absl::StatusOr<Fetched>)> done) override;
  void FillStats(fanin::v1::GetStatsResponse* stats) const override;
  bool broker_available() const override { return broker_connected(); }

  // fanout::GroupReplication (node(), incarnation() and Fetch() above)
  uint64_t live_from_seq() const override {
    return live_from_.load(std::memory_order_acquire);
  }
  void Announce(fanin::v1::Event event) override;
  absl::StatusOr<uint64_t> FoundedAt(const std::string& group) override;
  void Founded(const std::string& group, uint64_t seq) override;
  void Forgotten(const std::string& group) override;
  void Progress(const std::string& group, uint64_t member,
                uint64_t received_through, uint64_t as_of) override;

 private:
  explicit ClusterNode(ClusterOptions options);
  absl::Status Connect();
  absl::Status EnsureStreamAndBuckets();
  absl::Status ClaimName();
  // Where the stream ends: the last message's seq and the seq after it.
  struct Tail {
    uint64_t stream_seq = 0;
    uint64_t next_seq = 1;
  };
  absl::StatusOr<Tail> ReadTail();
  // Base and count of the message at `stream_seq`.
  absl::StatusOr<std::pair<uint64_t, uint64_t>> MessageRange(
      uint64_t stream_seq);
  void AdvanceTail(Tail t) ABSL_LOCKS_EXCLUDED(tail_mu_);
  // Reads the messages stored after `from` and advances the tail past them;
  // true when one of them was sent under one of `ids`.
  absl::StatusOr<bool> CatchUpTail(Tail from,
                                   const std::vector<std::string>& ids);

  void PublisherLoop();
  void ConsumerLoop();
  void HeartbeatLoop();
  void ReplierLoop();
  void FetcherLoop();
  struct FetchJob {
    uint64_t from = 0;
    fanout::Filter filter;
    size_t max_events = 0;
    size_t max_bytes = 0;
    absl::AnyInvocable<void(absl::StatusOr<Fetched>)> done;
  };
  absl::StatusOr<Fetched> RunFetch(const FetchJob& job);
  void PutRecord(fanin::v1::NodeState state);
  void RefreshMembership();
  void NoteNodeChange(const fanout::StoredEvent& e);
  // Open connections of every node, as the stream tells them (so a
  // survivor can close a lost node's connections).
  void Track(const fanout::StoredEvent& e, uint64_t stream_seq);
  void SeedTracker();
  // Node loss: reports nodes silent for node_timeout (once, cluster-wide).
  void DetectLostNodes();
  absl::Status ReportLost(const fanin::v1::NodeInfo& node,
                          absl::Duration silent);
  // Fencing: this node was reported lost while it was cut off.
  void FenceAndRejoin();
  static void OnDisconnected(natsConnection*, void* self);
  static void OnReconnected(natsConnection*, void* self);
  void PublishNodeChange(fanin::v1::NodeState state, std::string detail);
  uint32_t ListenerIndex(absl::string_view name);
  void SendRequest(uint64_t incarnation, absl::string_view method,
                   const std::string& request, Reply done);
  static void OnRequest(natsConnection*, natsSubscription*, natsMsg* msg,
                        void* self);
  static void OnReply(natsConnection*, natsSubscription*, natsMsg* msg,
                      void* self);
  static void OnGroupProgress(natsConnection*, natsSubscription*, natsMsg* msg,
                              void* self);
  void SweepDeadlines();
  std::string ProgressSubject() const {
    return options_.cluster_name + ".groups.progress";
  }
  bool Stopping() const { return stop_.load(std::memory_order_acquire); }

  const ClusterOptions options_;
  const std::string stream_name_;
  const std::string events_subject_;
  std::string epoch_;
  std::atomic<uint64_t> incarnation_{0};
  Local local_;
  uint64_t consume_from_ = 1;  // the stream seq the consumer starts at

  NatsPtr<natsConnection> nc_;
  NatsPtr<jsCtx> js_;
  NatsPtr<kvStore> nodes_kv_;
  NatsPtr<kvStore> ids_kv_;
  NatsPtr<kvStore> groups_kv_;  // group name (hex) -> founding seq
  NatsPtr<natsSubscription> progress_sub_;
  std::atomic<uint64_t> live_from_{UINT64_MAX};
  NatsPtr<natsSubscription> rpc_sub_;
  NatsPtr<natsSubscription> reply_sub_;
  std::string reply_prefix_;

  std::atomic<bool> stop_{false};
  std::atomic<bool> started_{false};
  std::atomic<bool> stopped_{false};
  std::atomic<bool> paused_{false};
  std::atomic<bool> leaving_{false};
  std::atomic<bool> fenced_{false};
  // What libnats' connection callbacks touch. They run on libnats' own
  // thread and may come after this node is destroyed (a connection closes
  // asynchronously), so it lives as long as the process: a few bytes per
  // node, kept in a process-wide list (reachable, so not a leak).
  struct Link {
    std::atomic<bool> connected{true};
    std::string node;
  };
  static Link* NewLink();
  Link* const link_ = NewLink();
  std::atomic<bool> fence_requested_{false};
  absl::Mutex record_mu_;  // our KV record's revision, for compare-and-set
  uint64_t record_revision_guarded_ ABSL_GUARDED_BY(record_mu_) = 0;

  struct Tracked {
    std::string listener;
    std::string node;
    uint64_t bytes_received = 0;
    // Seeded from the owner's list: its count already covers the Data
    // events up to about this stream seq, which the replay must not add.
    uint64_t counted_through = 0;
  };
  mutable absl::Mutex track_mu_;
  // incarnation -> connection id -> what is known of it
  absl::flat_hash_map<uint64_t, absl::flat_hash_map<uint64_t, Tracked>> open_
      ABSL_GUARDED_BY(track_mu_);
  absl::flat_hash_set<uint64_t> lost_reported_ ABSL_GUARDED_BY(track_mu_);
  Tail tracked_ ABSL_GUARDED_BY(track_mu_);  // stream position applied
  std::atomic<uint64_t> nodes_reported_lost_{0};
  std::atomic<uint64_t> fenced_count_{0};

  // The publish buffer.
  mutable absl::Mutex mu_;
  std::deque<std::shared_ptr<fanout::StoredEvent>> pending_
      ABSL_GUARDED_BY(mu_);
  size_t pending_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t pending_generation_ ABSL_GUARDED_BY(mu_) = 0;  // + 1 per fence
  absl::CondVar pending_cv_;
  absl::AnyInvocable<void()> pause_observer_ ABSL_GUARDED_BY(mu_);

  mutable absl::Mutex tail_mu_;
  Tail tail_ ABSL_GUARDED_BY(tail_mu_);
  absl::CondVar tail_cv_;
  uint64_t oldest_seq_ ABSL_GUARDED_BY(tail_mu_) = 0;

  mutable absl::Mutex listeners_mu_;
  std::vector<std::string> listener_names_ ABSL_GUARDED_BY(listeners_mu_);
  absl::flat_hash_map<std::string, uint32_t> listener_index_
      ABSL_GUARDED_BY(listeners_mu_);

  mutable absl::Mutex nodes_mu_;
  absl::flat_hash_map<std::string, fanin::v1::NodeInfo> nodes_
      ABSL_GUARDED_BY(nodes_mu_);

  struct PendingCall {
    Reply done;
    absl::Time deadline;
    std::string node;
    bool known = true;  // the incarnation was in the membership view
  };
  absl::Mutex calls_mu_;
  absl::flat_hash_map<uint64_t, PendingCall> calls_ ABSL_GUARDED_BY(calls_mu_);
  uint64_t next_call_ ABSL_GUARDED_BY(calls_mu_) = 1;

  struct OutgoingReply {
    std::string subject;
    absl::Status status;
    std::string body;
  };
  absl::Mutex replies_mu_;
  std::deque<OutgoingReply> replies_ ABSL_GUARDED_BY(replies_mu_);
  absl::CondVar replies_cv_;

  std::atomic<uint64_t> published_events_{0};
  std::atomic<uint64_t> publish_batches_{0};
  std::atomic<uint64_t> publish_conflicts_{0};
  std::atomic<uint64_t> publish_retries_{0};
  std::atomic<uint64_t> consumed_events_{0};
  std::atomic<uint64_t> batch_no_{0};

  std::thread publisher_;
  std::thread consumer_;
  std::thread heartbeat_;
  std::thread replier_;
  std::thread fetcher_;
  absl::Mutex fetch_mu_;
  std::deque<FetchJob> fetches_ ABSL_GUARDED_BY(fetch_mu_);
  absl::CondVar fetch_cv_;
  // Fetcher thread only: next seq of a finished fetch -> the stream message
  // holding it, so a reader catching up needs no search per fetch.
  absl::flat_hash_map<uint64_t, uint64_t> fetch_hints_;
};

}  // namespace fanin::cluster

#endif  // FANIN_SERVER_CLUSTER_CLUSTER_NODE_H_
