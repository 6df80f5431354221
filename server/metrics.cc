#include "server/metrics.h"

#include <algorithm>
#include <exception>
#include <limits>
#include <map>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "prometheus/client_metric.h"
#include "prometheus/metric_family.h"
#include "prometheus/metric_type.h"
#include "server/base/log.h"

namespace fanin {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily& Family(std::vector<MetricFamily>* out, std::string name,
                     std::string help, MetricType type) {
  MetricFamily& f = out->emplace_back();
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

ClientMetric& Sample(MetricFamily* f, double value,
                     std::vector<ClientMetric::Label> labels = {}) {
  ClientMetric& m = f->metric.emplace_back();
  m.label = std::move(labels);
  if (f->type == MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  return m;
}

void Single(std::vector<MetricFamily>* out, std::string name, std::string help,
            MetricType type, double value) {
  Sample(&Family(out, std::move(name), std::move(help), type), value);
}

// The kind label of fanin_events_total: "data" for EVENT_KIND_DATA.
std::string KindLabel(fanin::v1::EventKind kind) {
  return absl::AsciiStrToLower(
      absl::StripPrefix(fanin::v1::EventKind_Name(kind), "EVENT_KIND_"));
}

}  // namespace

const std::vector<double>& Metrics::LatencyBuckets() {
  static const auto* buckets = new std::vector<double>{
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
      0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
  return *buckets;
}

Metrics::Metrics() : latency_buckets_(LatencyBuckets().size() + 1) {}

Metrics::~Metrics() { Stop(); }

absl::Status Metrics::Serve(const net::Endpoint& address) {
  if (exposer_ != nullptr) {
    return absl::FailedPreconditionError("metrics endpoint already serving");
  }
  if (address.family == net::Endpoint::Family::kUnix) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address ", address.ToString(),
                     ": a unix socket is not supported; want HOST:PORT"));
  }
  // civetweb reports a failed bind by throwing; nothing else here throws.
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(address.ToString(), 2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ",
                                               address.ToString(), ": ",
                                               e.what(), " (address in use?)"));
  }
  std::vector<int> ports = exposer_->GetListeningPorts();
  net::Endpoint bound = address;
  bound.port = ports.empty() ? 0 : ports[0];
  bound_address_ = bound.ToString();
  exposer_->RegisterCollectable(
      std::static_pointer_cast<prometheus::Collectable>(shared_from_this()),
      "/metrics");
  return absl::OkStatus();
}

void Metrics::Stop() { exposer_.reset(); }

void Metrics::OnBatchSent(const std::vector<fanout::EventPtr>& events) {
  if (events.empty()) return;
  const std::vector<double>& bounds = LatencyBuckets();
  const int64_t now = absl::GetCurrentTimeNanos();
  // Counted locally first so a batch costs one atomic add per touched bucket.
  uint64_t counts[32] = {};
  uint64_t sum_ns = 0;
  for (const fanout::EventPtr& e : events) {
    int64_t age_ns = std::max<int64_t>(0, now - e->time_unix_nano);
    sum_ns += static_cast<uint64_t>(age_ns);
    const double age = static_cast<double>(age_ns) * 1e-9;
    size_t b = static_cast<size_t>(
        std::lower_bound(bounds.begin(), bounds.end(), age) - bounds.begin());
    ++counts[b];
  }
  for (size_t b = 0; b <= bounds.size(); ++b) {
    if (counts[b] != 0) {
      latency_buckets_[b].fetch_add(counts[b], std::memory_order_relaxed);
    }
  }
  latency_sum_ns_.fetch_add(sum_ns, std::memory_order_relaxed);
  latency_count_.fetch_add(events.size(), std::memory_order_relaxed);
}

std::vector<MetricFamily> Metrics::Collect() const {
  std::vector<MetricFamily> out;
  const Sources& s = sources_;
  if (s.core != nullptr) {
    core::CoreStats c = s.core->GetStats();
    Single(&out, "fanin_connections_open", "Raw connections open now.",
           MetricType::Gauge, c.connections_open);
    Single(&out, "fanin_connections_accepted_total",
           "Raw connections accepted and adopted by a loop.",
           MetricType::Counter, c.connections_accepted);
    MetricFamily& rejected =
        Family(&out, "fanin_connections_rejected_total",
               "Raw connections closed at once after accept, by reason.",
               MetricType::Counter);
    Sample(&rejected, c.rejected_max_connections,
           {{"reason", "max_connections"}});
    Sample(&rejected, c.rejected_per_ip,
           {{"reason", "max_connections_per_ip"}});
    Sample(&rejected, c.rejected_poller, {{"reason", "poller"}});
    Sample(&rejected, c.rejected_out_of_fds, {{"reason", "out_of_fds"}});
    Single(&out, "fanin_accept_errors_total",
           "Connections lost to accept() failures (e.g. shed on EMFILE).",
           MetricType::Counter, c.accept_errors);
    Single(&out, "fanin_bytes_received_total",
           "Bytes read from raw connections.", MetricType::Counter,
           c.bytes_received);
    Single(&out, "fanin_bytes_sent_total", "Bytes written to raw connections.",
           MetricType::Counter, c.bytes_sent);
    Single(&out, "fanin_tls_handshakes_total",
           "TLS handshakes completed on raw listeners.", MetricType::Counter,
           c.tls_handshakes);
    MetricFamily& tls_failed =
        Family(&out, "fanin_tls_handshake_failures_total",
               "TLS handshakes that failed (connection closed, no event), by "
               "reason.",
               MetricType::Counter);
    Sample(&tls_failed, c.tls_failed_timeout, {{"reason", "timeout"}});
    Sample(&tls_failed, c.tls_failed_client_cert, {{"reason", "client_cert"}});
    Sample(&tls_failed, c.tls_failed_protocol, {{"reason", "protocol"}});
    Sample(&tls_failed, c.tls_failed_closed, {{"reason", "closed"}});
    MetricFamily& reloads =
        Family(&out, "fanin_tls_certificate_reloads_total",
               "Listener certificate reloads (SIGHUP), by result.",
               MetricType::Counter);
    Sample(&reloads, c.tls_reloads, {{"result", "ok"}});
    Sample(&reloads, c.tls_reload_failures, {{"result", "failed"}});
    Single(&out, "fanin_proxy_headers_total",
           "PROXY protocol headers accepted.", MetricType::Counter,
           c.proxy_headers);
    MetricFamily& proxy_failed =
        Family(&out, "fanin_proxy_header_failures_total",
               "Connections closed for a missing, malformed or late PROXY "
               "header (no event), by reason.",
               MetricType::Counter);
    Sample(&proxy_failed, c.proxy_failed_timeout, {{"reason", "timeout"}});
    Sample(&proxy_failed, c.proxy_failed_malformed, {{"reason", "malformed"}});
    Sample(&proxy_failed, c.proxy_failed_closed, {{"reason", "closed"}});
    reactor::LoopGroup* loops = s.core->loops();
    if (loops != nullptr) {
      MetricFamily& iterations =
          Family(&out, "fanin_loop_iterations_total",
                 "Reactor loop iterations, by loop.", MetricType::Counter);
      MetricFamily& wakeups =
          Family(&out, "fanin_loop_wakeups_total",
                 "Cross-thread wake-ups (eventfd writes) of each reactor loop.",
                 MetricType::Counter);
      for (int i = 0; i < loops->size(); ++i) {
        std::string label = absl::StrCat(i);
        Sample(&iterations, loops->loop(i)->iterations(), {{"loop", label}});
        Sample(&wakeups, loops->loop(i)->wakeups(), {{"loop", label}});
      }
    }
  }
  if (s.hub != nullptr) {
    fanout::EventHub::Stats h = s.hub->GetStats();
    MetricFamily& events =
        Family(&out, "fanin_events_total", "Events published, by kind.",
               MetricType::Counter);
    for (int k = 0; k < fanin::v1::EventKind_ARRAYSIZE; ++k) {
      if (!fanin::v1::EventKind_IsValid(k) ||
          k == fanin::v1::EVENT_KIND_UNSPECIFIED) {
        continue;
      }
      Sample(&events, h.events_by_kind[k],
             {{"kind", KindLabel(static_cast<fanin::v1::EventKind>(k))}});
    }
    MetricFamily& lost = Family(
        &out, "fanin_events_lost_total",
        "Matching events evicted from the history before a lossy subscriber "
        "read them, by reason.",
        MetricType::Counter);
    Sample(&lost, h.events_lost, {{"reason", "subscriber_too_slow"}});
    Single(&out, "fanin_subscribers", "Hub subscriptions now.",
           MetricType::Gauge, h.subscribers);
    Single(&out, "fanin_subscribers_paused",
           "Lossless subscribers holding back their sockets now.",
           MetricType::Gauge, h.paused_subscribers);
    Single(&out, "fanin_subscriber_queue_bytes",
           "Unread matching bytes lossless subscribers hold now.",
           MetricType::Gauge, h.lossless_pending_bytes);
    Single(&out, "fanin_history_events", "Events in the resume history.",
           MetricType::Gauge, h.history_events);
    Single(&out, "fanin_history_bytes", "Bytes in the resume history.",
           MetricType::Gauge, h.history_bytes);
    Single(&out, "fanin_head_seq", "Newest event sequence number.",
           MetricType::Gauge, h.head_seq);
  }
  if (s.service != nullptr) {
    Single(&out, "fanin_subscriber_streams", "Subscribe streams open now.",
           MetricType::Gauge, s.service->active_streams());
    Single(&out, "fanin_subscriber_events_lost_total",
           "Events reported lost to subscribers in Gap messages (all reasons).",
           MetricType::Counter, s.service->events_lost());
    // Worker-pool groups: totals, and per group (at most --max_groups of
    // them) its members, connections and backlog.
    const fanout::GroupRegistry& groups = s.service->groups();
    fanout::GroupRegistry::Stats g = groups.GetStats();
    Single(&out, "fanin_groups", "Worker-pool groups now.", MetricType::Gauge,
           g.groups);
    Single(&out, "fanin_group_handovers_total",
           "Connections moved between group members (a member left, or a "
           "rebalance).",
           MetricType::Counter, g.handovers);
    Single(&out, "fanin_group_redelivered_events_total",
           "Events delivered again, marked, after a handover: the old member "
           "may have had them (its unfinished and most recent writes).",
           MetricType::Counter, g.redelivered_events);
    Single(&out, "fanin_group_events_lost_total",
           "Events lossy groups lost (their members fell behind the history, "
           "or the group had no member).",
           MetricType::Counter, g.events_lost);
    MetricFamily& members =
        Family(&out, "fanin_group_members", "Members of each group now.",
               MetricType::Gauge);
    MetricFamily& connections = Family(
        &out, "fanin_group_connections",
        "Open connections of each group, assigned to a member or waiting for "
        "one.",
        MetricType::Gauge);
    MetricFamily& backlog =
        Family(&out, "fanin_group_backlog_bytes",
               "A lossless group's backlog, counted against "
               "--subscriber_queue_bytes.",
               MetricType::Gauge);
    for (const fanin::v1::GroupInfo& info : groups.List()) {
      Sample(&members, info.members_size(), {{"group", info.name()}});
      Sample(&connections, info.connections() - info.unassigned_connections(),
             {{"group", info.name()}, {"state", "assigned"}});
      Sample(&connections, info.unassigned_connections(),
             {{"group", info.name()}, {"state", "unassigned"}});
      Sample(&backlog, info.backlog_bytes(), {{"group", info.name()}});
    }
  }
  if (s.cluster != nullptr) {
    const cluster::ClusterStats c = s.cluster->GetStats();
    Single(&out, "fanin_cluster_published_events_total",
           "Events this node stored in the cluster's stream.",
           MetricType::Counter, c.published_events);
    Single(&out, "fanin_cluster_publish_batches_total",
           "JetStream messages (batches of events) this node stored.",
           MetricType::Counter, c.publish_batches);
    Single(&out, "fanin_cluster_publish_conflicts_total",
           "Publishes retried because another node published first.",
           MetricType::Counter, c.publish_conflicts);
    Single(&out, "fanin_cluster_publish_retries_total",
           "Publishes retried after the broker did not answer in time.",
           MetricType::Counter, c.publish_retries);
    Single(&out, "fanin_cluster_nodes_reported_lost_total",
           "Nodes this node reported lost (their connections closed as "
           "NODE_LOST).",
           MetricType::Counter, c.nodes_reported_lost);
    Single(&out, "fanin_cluster_fenced_total",
           "Times this node found itself reported lost, closed its "
           "connections and rejoined.",
           MetricType::Counter, c.fenced);
    Single(&out, "fanin_cluster_consumed_events_total",
           "Events this node read from the cluster's stream.",
           MetricType::Counter, c.consumed_events);
    Single(&out, "fanin_cluster_buffer_bytes",
           "Event bytes waiting to be published (bounded by "
           "--cluster_buffer_bytes).",
           MetricType::Gauge, c.buffer_bytes);
    Single(&out, "fanin_cluster_broker_connected",
           "1 while this node is connected to NATS.", MetricType::Gauge,
           c.broker_connected ? 1 : 0);
    const uint64_t local_head = s.hub != nullptr ? s.hub->head_seq() : 0;
    Single(&out, "fanin_cluster_lag_events",
           "Events in the cluster's stream this node has not read yet.",
           MetricType::Gauge,
           c.head_seq > local_head ? c.head_seq - local_head : 0);
    MetricFamily& nodes =
        Family(&out, "fanin_cluster_nodes", "Nodes of the cluster, by state.",
               MetricType::Gauge);
    std::map<std::string, int> by_state;
    for (const char* st : {"up", "draining", "left", "lost"}) by_state[st] = 0;
    const fanin::v1::ListNodesResponse listed = s.cluster->ListNodes();
    for (const auto& n : listed.nodes()) {
      ++by_state[absl::AsciiStrToLower(absl::StripPrefix(
          fanin::v1::NodeState_Name(n.state()), "NODE_STATE_"))];
    }
    for (const auto& [st, n] : by_state) Sample(&nodes, n, {{"state", st}});
  }
  if (s.auth != nullptr) {
    MetricFamily& refused =
        Family(&out, "fanin_auth_refused_total",
               "FanIn calls refused by access control, by gRPC code.",
               MetricType::Counter);
    Sample(&refused, s.auth->unauthenticated(), {{"code", "UNAUTHENTICATED"}});
    Sample(&refused, s.auth->permission_denied(),
           {{"code", "PERMISSION_DENIED"}});
  }
  if (s.watchdog != nullptr) {
    Single(&out, "fanin_loops_stuck",
           "Reactor loops whose watchdog probe is overdue.", MetricType::Gauge,
           s.watchdog->stuck_loops());
  }
  if (s.serving) {
    Single(&out, "fanin_serving", "1 while health is SERVING.",
           MetricType::Gauge, s.serving() ? 1 : 0);
  }
  MetricFamily& latency =
      Family(&out, "fanin_event_delivery_latency_seconds",
             "From the server observing an event to a stream starting to "
             "send it.",
             MetricType::Histogram);
  ClientMetric& m = latency.metric.emplace_back();
  const std::vector<double>& bounds = LatencyBuckets();
  uint64_t cumulative = 0;
  for (size_t b = 0; b < bounds.size(); ++b) {
    cumulative += latency_buckets_[b].load(std::memory_order_relaxed);
    m.histogram.bucket.push_back({cumulative, bounds[b]});
  }
  cumulative += latency_buckets_[bounds.size()].load(std::memory_order_relaxed);
  m.histogram.bucket.push_back(
      {cumulative, std::numeric_limits<double>::infinity()});
  // The count is the +Inf bucket, so buckets and count always agree.
  m.histogram.sample_count = cumulative;
  m.histogram.sample_sum =
      static_cast<double>(latency_sum_ns_.load(std::memory_order_relaxed)) *
      1e-9;
  return out;
}

}  // namespace fanin
