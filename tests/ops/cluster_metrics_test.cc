// /metrics of a node in cluster mode (a real nats-server and fanin_server):
// the cluster series are there under the names and labels the Grafana
// dashboard (deploy/grafana/fanin.json) and docs/CLUSTER.md use, and scraping
// them again and again leaves the node serving and stopping cleanly.
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/ops/ops_util.h"
#include "tests/testing/nats_server.h"
#include "tests/testing/server_process.h"

namespace fanin::opstest {
namespace {

using fanin::testing::NatsServer;
using fanin::testing::ServerProcess;

TEST(ClusterMetricsTest, ScrapesShowTheClusterSeriesAndTheNodeLives) {
  auto nats = NatsServer::Start();
  ASSERT_TRUE(nats.ok()) << nats.status();
  const std::string metrics = absl::StrCat("127.0.0.1:", FreePort());
  auto node = ServerProcess::Start(
      {.flags = {"--cluster_nats=" + (*nats)->url(), "--node_name=m",
                 "--grpc_address=127.0.0.1:0", "--listen=127.0.0.1:0",
                 "--metrics_address=" + metrics}});
  ASSERT_TRUE(node.ok()) << node.status();

  // Prometheus scrapes every few seconds for as long as the node runs.
  for (int scrape = 0; scrape < 5; ++scrape) {
    SCOPED_TRACE(absl::StrCat("scrape ", scrape));
    auto text = HttpGet(metrics, "/metrics");
    ASSERT_TRUE(text.ok()) << text.status();
    auto connected = MetricValue(*text, "fanin_cluster_broker_connected");
    ASSERT_TRUE(connected.ok()) << connected.status();
    EXPECT_EQ(*connected, 1);
    auto up = MetricValue(*text, "fanin_cluster_nodes{state=\"up\"}");
    ASSERT_TRUE(up.ok()) << up.status();
    EXPECT_EQ(*up, 1);
    for (const char* series :
         {"fanin_cluster_published_events_total",
          "fanin_cluster_publish_batches_total",
          "fanin_cluster_publish_conflicts_total",
          "fanin_cluster_consumed_events_total", "fanin_cluster_buffer_bytes",
          "fanin_cluster_lag_events", "fanin_cluster_nodes{state=\"draining\"}",
          "fanin_cluster_nodes{state=\"left\"}",
          "fanin_cluster_nodes{state=\"lost\"}"}) {
      EXPECT_TRUE(MetricValue(*text, series).ok()) << series;
    }
  }
  auto code = (*node)->Stop();
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
}

}  // namespace
}  // namespace fanin::opstest
