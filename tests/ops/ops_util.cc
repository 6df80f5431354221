#include "tests/ops/ops_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "tests/testing/subprocess.h"

namespace fanin::opstest {

std::string MakeTempDir() {
  const char* tmp = getenv("TEST_TMPDIR");
  std::string pattern =
      absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/ops-XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp " << pattern;
  }
  return pattern;
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc | std::ios::binary);
  out << text;
  out.close();
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  EXPECT_NE(port, 0);
  return port;
}

absl::StatusOr<std::string> HttpGet(const std::string& address,
                                    const std::string& path) {
  auto client = fanin::testing::ConnectTcp(address);
  if (!client.ok()) return client.status();
  absl::Status sent =
      client->SendAll(absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: ", address,
                                   "\r\nConnection: close\r\n\r\n"));
  if (!sent.ok()) return sent;
  auto response = client->RecvUntilEof();
  if (!response.ok()) return response.status();
  size_t body = response->find("\r\n\r\n");
  if (!absl::StartsWith(*response, "HTTP/1.") || body == std::string::npos) {
    return absl::DataLossError(absl::StrCat("not HTTP: ", *response));
  }
  std::string status_line = response->substr(0, response->find("\r\n"));
  if (!absl::StrContains(status_line, " 200")) {
    return absl::UnavailableError(status_line);
  }
  return response->substr(body + 4);
}

absl::StatusOr<double> MetricValue(const std::string& text,
                                   const std::string& series) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::ConsumePrefix(&line, series)) continue;
    if (!absl::ConsumePrefix(&line, " ")) continue;
    double value = 0;
    if (absl::SimpleAtod(absl::StripAsciiWhitespace(line), &value)) {
      return value;
    }
  }
  return absl::NotFoundError(absl::StrCat("no sample ", series));
}

absl::StatusOr<TestPki> MakeTestPki(const std::string& dir) {
  // P-256 keys: fast to make, and gRPC's TLS takes them.
  const std::string script = absl::StrCat(R"(set -e
cd ")",
                                          dir, R"("
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ca() {  # name cn
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -out "$1.pem" -days 2 -subj "/CN=$2" \
    -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}
leaf() {  # name cn ca serial extensions
  key "$1.key"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
  printf '%s\n' "$5" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -set_serial "$4" \
    -days 2 -out "$1.pem" -extfile "$1.ext" 2>/dev/null
}
client_ext='basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth'
ca ca fanin-test-ca
ca rogue-ca fanin-rogue-ca
leaf server localhost ca 1 'basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost'
leaf writer writer-bot ca 2 "$client_ext"
leaf reader reader-bot ca 3 "$client_ext"
leaf stranger stranger ca 4 "$client_ext"
leaf rogue writer-bot rogue-ca 5 "$client_ext"
)");
  auto result = fanin::testing::RunCommand({"/bin/sh", "-c", script}, "",
                                           {.timeout = absl::Seconds(60)});
  if (!result.ok()) return result.status();
  if (result->exit_code != 0) {
    return absl::InternalError(
        absl::StrCat("openssl failed: ", result->stderr_data));
  }
  TestPki pki;
  pki.dir = dir;
  auto f = [&dir](const char* name) { return absl::StrCat(dir, "/", name); };
  pki.ca_cert = f("ca.pem");
  pki.server_cert = f("server.pem");
  pki.server_key = f("server.key");
  pki.writer_cert = f("writer.pem");
  pki.writer_key = f("writer.key");
  pki.reader_cert = f("reader.pem");
  pki.reader_key = f("reader.key");
  pki.stranger_cert = f("stranger.pem");
  pki.stranger_key = f("stranger.key");
  pki.rogue_cert = f("rogue.pem");
  pki.rogue_key = f("rogue.key");
  return pki;
}

}  // namespace fanin::opstest
