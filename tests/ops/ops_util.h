// Helpers for the ops tests: certificates made with the openssl command, free
// ports, temp files, HTTP scrapes and Prometheus samples. Channels (TLS,
// tokens), the Subscribe reader and health checks come from
// tests/testing/grpc_util.h, shared with tests/server.
//
// Every wait takes a deadline; nothing sleeps for a fixed time.
#ifndef FANIN_TESTS_OPS_OPS_UTIL_H_
#define FANIN_TESTS_OPS_OPS_UTIL_H_

#include <string>

#include "absl/status/statusor.h"
#include "server/net/address.h"
#include "tests/testing/grpc_util.h"
#include "tests/testing/tcp_client.h"

namespace fanin::opstest {

using ::fanin::net::LocalAddressOf;
using ::fanin::testing::ClientAuth;
using ::fanin::testing::ConnectFrom;
using ::fanin::testing::Deadline;
using ::fanin::testing::HealthCheck;
using ::fanin::testing::LosslessRequest;
using ::fanin::testing::NewChannel;
using ::fanin::testing::NewContext;
using ::fanin::testing::ReadFileOrDie;
using ::fanin::testing::Subscriber;

// A fresh directory under TEST_TMPDIR.
std::string MakeTempDir();
// Writes `text` to `path`; fails the test on error.
void WriteFile(const std::string& path, const std::string& text);
// A loopback TCP port that was free a moment ago.
int FreePort();

// PEM files made by the openssl command under `dir`: a CA, a server
// certificate for 127.0.0.1/localhost, client certificates (CN as given)
// signed by the CA, and a second, untrusted CA with its own client.
struct TestPki {
  std::string dir;
  std::string ca_cert;
  std::string server_cert, server_key;
  // CN=writer-bot, CN=reader-bot, CN=stranger (all signed by the CA).
  std::string writer_cert, writer_key;
  std::string reader_cert, reader_key;
  std::string stranger_cert, stranger_key;
  // CN=writer-bot signed by the untrusted CA.
  std::string rogue_cert, rogue_key;
};
absl::StatusOr<TestPki> MakeTestPki(const std::string& dir);

// GET http://ADDRESS/PATH with HTTP/1.0; the body on status 200.
absl::StatusOr<std::string> HttpGet(const std::string& address,
                                    const std::string& path);

// The value of the sample `series` (e.g. `fanin_connections_open` or
// `fanin_events_total{kind="data"}`) in Prometheus text; NotFound if absent.
absl::StatusOr<double> MetricValue(const std::string& text,
                                   const std::string& series);

}  // namespace fanin::opstest

#endif  // FANIN_TESTS_OPS_OPS_UTIL_H_
