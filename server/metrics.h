// Prometheus metrics for fanin, served on --metrics_address at /metrics.
//
// Almost everything is read at scrape time from counters the server keeps
// anyway (CoreStats, EventHub::Stats, the loops, the service, the authorizer),
// so metrics add no work to the reactor's hot path. The one exception is the
// delivery-latency histogram, fed by ServiceOptions::on_batch_sent with a few
// relaxed atomic adds per batch.
//
// Series (no per-connection or per-subscriber labels):
//   fanin_connections_open, fanin_connections_accepted_total,
//   fanin_connections_rejected_total{reason}, fanin_accept_errors_total,
//   fanin_bytes_received_total, fanin_bytes_sent_total,
//   fanin_events_total{kind}, fanin_events_lost_total{reason},
//   fanin_subscriber_events_lost_total, fanin_subscribers,
//   fanin_subscribers_paused, fanin_subscriber_streams,
//   fanin_subscriber_queue_bytes, fanin_history_events, fanin_history_bytes,
//   fanin_head_seq, fanin_event_delivery_latency_seconds (histogram),
//   fanin_loop_iterations_total{loop}, fanin_loop_wakeups_total{loop},
//   fanin_loops_stuck, fanin_serving, fanin_auth_refused_total{code},
//   fanin_groups, fanin_group_handovers_total,
//   fanin_group_redelivered_events_total, fanin_group_events_lost_total,
//   and per worker-pool group (bounded by --max_groups):
//   fanin_group_members{group}, fanin_group_connections{group,state},
//   fanin_group_backlog_bytes{group}.
//
// Example:
//   auto metrics = std::make_shared<Metrics>();
//   metrics->SetSources({.core = core, .hub = hub, ...});
//   absl::Status s = metrics->Serve(*net::Endpoint::Parse("0.0.0.0:9464"));
//
// Owned by a shared_ptr (Serve registers a weak reference). Thread-safe after
// SetSources (which must come before Serve). Call Stop() before the last
// reference goes and before the sources do.
#ifndef FANIN_SERVER_METRICS_H_
#define FANIN_SERVER_METRICS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "prometheus/collectable.h"
#include "prometheus/exposer.h"
#include "server/cluster/cluster_node.h"
#include "server/core/fanin_core.h"
#include "server/fanout/event_hub.h"
#include "server/grpc/auth.h"
#include "server/grpc/fanin_service.h"
#include "server/net/address.h"
#include "server/reactor/watchdog.h"

namespace fanin {

class Metrics : public prometheus::Collectable,
                public std::enable_shared_from_this<Metrics> {
 public:
  struct Sources {
    core::FaninCore* core = nullptr;
    fanout::EventHub* hub = nullptr;
    grpc_api::FaninService* service = nullptr;
    grpc_api::Authorizer* auth = nullptr;     // may be null
    reactor::Watchdog* watchdog = nullptr;    // may be null
    std::function<bool()> serving;            // may be empty
    cluster::ClusterNode* cluster = nullptr;  // cluster mode only
  };

  // Upper bounds of the latency histogram's buckets, in seconds.
  static const std::vector<double>& LatencyBuckets();

  Metrics();
  ~Metrics() override;

  void SetSources(Sources sources) { sources_ = std::move(sources); }
  // Starts the HTTP endpoint on a TCP endpoint (port 0 picks a free one).
  // INVALID_ARGUMENT for a unix endpoint, UNAVAILABLE when it cannot bind.
  absl::Status Serve(const net::Endpoint& address);
  // "127.0.0.1:9464" once serving; empty before.
  const std::string& bound_address() const { return bound_address_; }
  // Stops the endpoint; idempotent.
  void Stop();

  // ServiceOptions::on_batch_sent: observes each event's age.
  void OnBatchSent(const std::vector<fanout::EventPtr>& events);

  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  Sources sources_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string bound_address_;
  // Histogram: per-bucket (non-cumulative) counts, the last for +Inf.
  std::vector<std::atomic<uint64_t>> latency_buckets_;
  std::atomic<uint64_t> latency_count_{0};
  std::atomic<uint64_t> latency_sum_ns_{0};
};

}  // namespace fanin

#endif  // FANIN_SERVER_METRICS_H_
