// Debian's real Prometheus server scrapes fanin's /metrics every second; the
// series must be there through Prometheus's HTTP API, and move when
// connections come and bytes flow.
#include <signal.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "server/fanin_server.h"
#include "tests/ops/ops_util.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/tcp_client.h"

namespace fanin::opstest {
namespace {

using fanin::testing::ConnectTcp;
using fanin::testing::Subprocess;
using fanin::testing::WaitFor;

std::string UrlEncode(absl::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (absl::ascii_isalnum(c) || c == '_' || c == '-' || c == '.') {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppendFormat(&out, "%%%02X", c);
    }
  }
  return out;
}

// The values of an instant query's result vector (one per series).
absl::StatusOr<std::vector<double>> Query(const std::string& prometheus,
                                          const std::string& promql) {
  auto body = HttpGet(prometheus,
                      absl::StrCat("/api/v1/query?query=", UrlEncode(promql)));
  if (!body.ok()) return body.status();
  if (!absl::StrContains(*body, "\"status\":\"success\"")) {
    return absl::InternalError(*body);
  }
  // Each sample is ..."value":[<time>,"<value>"]...
  std::vector<double> values;
  for (size_t pos = body->find("\"value\":["); pos != std::string::npos;
       pos = body->find("\"value\":[", pos + 1)) {
    size_t open = body->find(",\"", pos);
    size_t close = body->find('"', open + 2);
    if (open == std::string::npos || close == std::string::npos) break;
    double v = 0;
    if (!absl::SimpleAtod(body->substr(open + 2, close - open - 2), &v)) {
      return absl::DataLossError(*body);
    }
    values.push_back(v);
  }
  return values;
}

// Waits until every series of `promql` satisfies pred (and there is one).
bool WaitQuery(const std::string& prometheus, const std::string& promql,
               std::function<bool(double)> pred, std::string* last) {
  return WaitFor(
      [&] {
        auto values = Query(prometheus, promql);
        *last = values.ok() ? absl::StrJoin(*values, ",")
                            : std::string(values.status().message());
        if (!values.ok() || values->empty()) return false;
        for (double v : *values) {
          if (!pred(v)) return false;
        }
        return true;
      },
      Deadline(absl::Seconds(40)));
}

TEST(PrometheusTest, RealPrometheusScrapesFanin) {
  ServerConfig config;
  config.core.listen = {{"default", net::Endpoint::Loopback(0)}};
  config.core.loops = 2;
  config.grpc_address = net::Endpoint::Loopback(0);
  config.metrics_address = net::Endpoint::Loopback(0);
  config.drain_timeout = absl::Seconds(2);
  auto server = FaninServer::Start(std::move(config));
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string metrics = (*server)->metrics_address();
  ASSERT_FALSE(metrics.empty());

  const std::string dir = MakeTempDir();
  const std::string prometheus = absl::StrCat("127.0.0.1:", FreePort());
  WriteFile(absl::StrCat(dir, "/prometheus.yml"),
            absl::StrCat("global:\n"
                         "  scrape_interval: 1s\n"
                         "  evaluation_interval: 1s\n"
                         "scrape_configs:\n"
                         "  - job_name: fanin\n"
                         "    scrape_interval: 1s\n"
                         "    scrape_timeout: 900ms\n"
                         "    static_configs:\n"
                         "      - targets: ['",
                         metrics, "']\n"));
  auto process = Subprocess::Start(
      {"/usr/bin/prometheus",
       absl::StrCat("--config.file=", dir, "/prometheus.yml"),
       absl::StrCat("--storage.tsdb.path=", dir, "/data"),
       absl::StrCat("--web.listen-address=", prometheus), "--log.level=warn"},
      {.capture_output = false});
  ASSERT_TRUE(process.ok()) << process.status();
  ASSERT_TRUE(
      WaitFor([&] { return HttpGet(prometheus, "/-/ready").ok(); }, Deadline()))
      << "prometheus never became ready";

  std::string last;
  ASSERT_TRUE(WaitQuery(
      prometheus, "up{job=\"fanin\"}", [](double v) { return v == 1; }, &last))
      << "target not up: " << last;
  for (const char* series :
       {"fanin_connections_open", "fanin_connections_accepted_total",
        "fanin_connections_rejected_total{reason=\"max_connections\"}",
        "fanin_events_total{kind=\"data\"}",
        "fanin_events_lost_total{reason=\"subscriber_too_slow\"}",
        "fanin_bytes_received_total", "fanin_subscribers",
        "fanin_subscriber_queue_bytes",
        "fanin_event_delivery_latency_seconds_bucket{le=\"+Inf\"}",
        "fanin_loop_iterations_total", "fanin_loop_wakeups_total",
        "fanin_serving", "fanin_loops_stuck"}) {
    EXPECT_TRUE(WaitQuery(
        prometheus, series, [](double v) { return v >= 0; }, &last))
        << series << " missing: " << last;
  }
  EXPECT_TRUE(WaitQuery(
      prometheus, "fanin_serving", [](double v) { return v == 1; }, &last))
      << last;

  // Traffic: a subscriber, three connections, 3 x 1000 bytes.
  auto watch = Subscriber::Start((*server)->grpc_address(), LosslessRequest());
  ASSERT_TRUE(watch->WaitStarted(Deadline()).ok());
  std::vector<fanin::testing::TcpClient> clients;
  const std::string raw = (*server)->listen_addresses().at(0).second;
  for (int i = 0; i < 3; ++i) {
    auto c = ConnectTcp(raw);
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE(c->SendAll(std::string(1000, 'p')).ok());
    clients.push_back(*std::move(c));
  }
  ASSERT_TRUE(watch->WaitUntil(
      [](const Subscriber::State& s) {
        uint64_t total = 0;
        for (const auto& [id, n] : s.data_bytes_by_id) total += n;
        return total == 3000;
      },
      Deadline()));
  EXPECT_TRUE(WaitQuery(
      prometheus, "fanin_connections_accepted_total",
      [](double v) { return v == 3; }, &last))
      << last;
  EXPECT_TRUE(WaitQuery(
      prometheus, "fanin_connections_open", [](double v) { return v == 3; },
      &last))
      << last;
  EXPECT_TRUE(WaitQuery(
      prometheus, "fanin_bytes_received_total",
      [](double v) { return v == 3000; }, &last))
      << last;
  EXPECT_TRUE(WaitQuery(
      prometheus, "fanin_subscribers", [](double v) { return v == 1; }, &last))
      << last;
  EXPECT_TRUE(WaitQuery(
      prometheus, "fanin_events_total{kind=\"opened\"}",
      [](double v) { return v == 3; }, &last))
      << last;
  EXPECT_TRUE(WaitQuery(
      prometheus, "fanin_event_delivery_latency_seconds_count",
      [](double v) { return v >= 6; }, &last))
      << last;
  EXPECT_TRUE(WaitQuery(
      prometheus, "sum(fanin_loop_iterations_total)",
      [](double v) { return v > 0; }, &last))
      << last;
  // Counters move between scrapes: a rate over the window is positive.
  EXPECT_TRUE(WaitQuery(
      prometheus, "increase(fanin_connections_accepted_total[1m])",
      [](double v) { return v > 0; }, &last))
      << last;

  ASSERT_TRUE((*process)->Signal(SIGTERM).ok());
  auto exit = (*process)->Wait(Deadline());
  EXPECT_TRUE(exit.ok()) << exit.status();
}

}  // namespace
}  // namespace fanin::opstest
