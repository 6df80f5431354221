// ClusterRouter: what the FanIn service asks of cluster mode, without
// depending on it. server/cluster/cluster_node implements it; standalone has
// none (ServiceOptions::cluster is null) and every request is local.
#ifndef FANIN_SERVER_GRPC_CLUSTER_ROUTER_H_
#define FANIN_SERVER_GRPC_CLUSTER_ROUTER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "fanin/v1/fanin.pb.h"
#include "server/fanout/filter.h"
#include "server/fanout/stored_event.h"

namespace fanin::grpc_api {

class ClusterRouter {
 public:
  using Reply = absl::AnyInvocable<void(absl::Status, std::string response)>;

  virtual ~ClusterRouter() = default;

  // This node's name.
  virtual const std::string& node() const = 0;
  // Listener names seen anywhere in the cluster (subscription filters may
  // name any of them), in the index order events carry.
  virtual std::vector<std::string> listener_names() const = 0;
  // True when the connection is owned by another node.
  virtual bool IsRemote(uint64_t connection_id) const = 0;
  // Sends a serialized request for `method` ("Write", "CloseConnection",
  // "Read") to the owner of `connection_id`; `done` gets what the owner's
  // FaninService::ExecuteLocal answered, or UNAVAILABLE naming the node when
  // it cannot be reached, NOT_FOUND when no live node owns that id.
  virtual void Call(absl::string_view method, uint64_t connection_id,
                    std::string request, Reply done) = 0;
  // The cluster-wide ListConnections: every node's connections in id order.
  virtual void List(const fanin::v1::ListConnectionsRequest& request,
                    uint64_t as_of_seq,
                    absl::AnyInvocable<void(
                        absl::StatusOr<fanin::v1::ListConnectionsResponse>)>
                        done) = 0;
  virtual fanin::v1::ListNodesResponse ListNodes() const = 0;
  // Events older than this node's history, read from the cluster's stream:
  // from `from_seq` on, those `filter` matches, at most about max_events /
  // max_bytes. A Gap (HISTORY_EXPIRED, exact) when the stream no longer holds
  // some of them. `done` runs on the cluster's fetch thread.
  using Fetched = fanout::FetchedEvents;
  virtual void Fetch(
      uint64_t from_seq, const fanout::Filter& filter, size_t max_events,
      size_t max_bytes,
      absl::AnyInvocable<void(absl::StatusOr<Fetched>)> done) = 0;
  // False while this node cannot reach the broker (heartbeats say so).
  virtual bool broker_available() const = 0;
  // Adds node and cluster fields to a GetStats answer.
  virtual void FillStats(fanin::v1::GetStatsResponse* stats) const = 0;
};

}  // namespace fanin::grpc_api

#endif  // FANIN_SERVER_GRPC_CLUSTER_ROUTER_H_
