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

std::string ReadFileOrDie(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  return buffer.str();
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

std::string LocalAddressOf(int fd) {
  sockaddr_in addr = {};
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  char ip[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &addr.sin_addr, ip, sizeof(ip));
  return absl::StrCat(ip, ":", ntohs(addr.sin_port));
}

absl::StatusOr<fanin::testing::TcpClient> ConnectFrom(
    const std::string& source_ip, const std::string& address, int rcvbuf) {
  size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port)) {
    return absl::InvalidArgumentError(absl::StrCat("bad address ", address));
  }
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::ErrnoToStatus(errno, "socket");
  fanin::testing::TcpClient client(fd);
  if (rcvbuf > 0 &&
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) != 0) {
    return absl::ErrnoToStatus(errno, "setsockopt(SO_RCVBUF)");
  }
  sockaddr_in src = {};
  src.sin_family = AF_INET;
  inet_pton(AF_INET, source_ip.c_str(), &src.sin_addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof(src)) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("bind ", source_ip));
  }
  sockaddr_in dst = {};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, address.substr(0, colon).c_str(), &dst.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof(dst)) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("connect ", address));
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return client;
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

std::shared_ptr<grpc::Channel> NewChannel(const std::string& address,
                                          const ClientAuth& auth) {
  grpc::ChannelArguments args;
  // One connection per channel, so tests do not share (or wait on) another's.
  args.SetInt("grpc.use_local_subchannel_pool", 1);
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (auth.ca_file.empty()) {
    creds = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadFileOrDie(auth.ca_file);
    if (!auth.cert_file.empty()) {
      ssl.pem_cert_chain = ReadFileOrDie(auth.cert_file);
      ssl.pem_private_key = ReadFileOrDie(auth.key_file);
    }
    creds = grpc::SslCredentials(ssl);
  }
  return grpc::CreateCustomChannel(address, creds, args);
}

std::unique_ptr<grpc::ClientContext> NewContext(const ClientAuth& auth) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(Deadline()));
  if (!auth.token.empty()) {
    context->AddMetadata("authorization", absl::StrCat("Bearer ", auth.token));
  }
  return context;
}

absl::StatusOr<int> HealthCheck(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::GenericStub stub(channel);
  // HealthCheckRequest{service: ""} encodes to no bytes at all.
  grpc::ByteBuffer in;
  grpc::Slice empty("");
  in = grpc::ByteBuffer(&empty, 1);
  grpc::ByteBuffer out;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(Deadline(absl::Seconds(10))));
  absl::Notification done;
  grpc::Status status;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(),
                 &in, &out, [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        status.error_message());
  }
  std::vector<grpc::Slice> slices;
  if (!out.Dump(&slices).ok()) return absl::DataLossError("bad response");
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  // HealthCheckResponse{status = 1: enum}: "\x08<v>", or empty for 0.
  if (bytes.empty()) return 0;
  if (bytes.size() != 2 || bytes[0] != 0x08) {
    return absl::DataLossError("unexpected HealthCheckResponse");
  }
  return static_cast<int>(bytes[1]);
}

fanin::v1::SubscribeRequest LosslessRequest() {
  fanin::v1::SubscribeRequest request;
  request.set_delivery(fanin::v1::DELIVERY_LOSSLESS);
  return request;
}

std::unique_ptr<EventReader> EventReader::Start(
    const std::string& address, const fanin::v1::SubscribeRequest& request,
    const ClientAuth& auth) {
  auto reader = std::unique_ptr<EventReader>(new EventReader());
  reader->channel_ = NewChannel(address, auth);
  reader->stub_ = fanin::v1::FanIn::NewStub(reader->channel_);
  reader->context_ = std::make_unique<grpc::ClientContext>();
  reader->context_->set_deadline(
      absl::ToChronoTime(absl::Now() + absl::Minutes(5)));
  if (!auth.token.empty()) {
    reader->context_->AddMetadata("authorization",
                                  absl::StrCat("Bearer ", auth.token));
  }
  reader->thread_ =
      std::thread([r = reader.get(), request] { r->Run(request); });
  return reader;
}

EventReader::~EventReader() {
  context_->TryCancel();
  if (thread_.joinable()) thread_.join();
}

void EventReader::Run(fanin::v1::SubscribeRequest request) {
  auto stream = stub_->Subscribe(context_.get(), request);
  fanin::v1::SubscribeResponse msg;
  while (stream->Read(&msg)) {
    absl::MutexLock lock(&mu_);
    if (msg.has_started()) state_.started = true;
    if (msg.has_gap()) state_.lost += msg.gap().lost();
    for (const fanin::v1::Event& e : msg.batch().events()) {
      state_.events.push_back(e);
      if (e.has_opened()) {
        state_.id_by_remote[e.opened().remote_address()] = e.connection_id();
      }
      if (e.has_data()) state_.data_bytes[e.connection_id()] += e.data().size();
      if (e.has_closed()) state_.closed[e.connection_id()] = e.closed();
    }
  }
  grpc::Status status = stream->Finish();
  absl::MutexLock lock(&mu_);
  state_.done = true;
  state_.status = status;
}

bool EventReader::WaitUntil(absl::FunctionRef<bool(const State&)> pred,
                            absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto cond = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return pred(state_); };
  return mu_.AwaitWithDeadline(absl::Condition(&cond), deadline);
}

bool EventReader::WaitStarted(absl::Time deadline) {
  WaitUntil([](const State& s) { return s.started || s.done; }, deadline);
  absl::MutexLock lock(&mu_);
  return state_.started;
}

grpc::Status EventReader::WaitDone(absl::Time deadline) {
  if (!WaitUntil([](const State& s) { return s.done; }, deadline)) {
    return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                        "stream still open");
  }
  absl::MutexLock lock(&mu_);
  return state_.status;
}

uint64_t EventReader::WaitOpened(const std::string& remote,
                                 absl::Time deadline) {
  uint64_t id = 0;
  WaitUntil(
      [&](const State& s) {
        auto it = s.id_by_remote.find(remote);
        if (it != s.id_by_remote.end()) id = it->second;
        return id != 0;
      },
      deadline);
  return id;
}

EventReader::State EventReader::Snapshot() const {
  absl::MutexLock lock(&mu_);
  return state_;
}

}  // namespace fanin::opstest
