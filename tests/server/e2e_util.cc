#include "tests/server/e2e_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "grpcpp/generic/generic_stub.h"
#include "server/net/address.h"

namespace fanin::servertest {
namespace {

using fanin::v1::Event;
using fanin::v1::EventKind;
using fanin::v1::SubscribeResponse;

// Minimal protobuf wire-format helpers for the two services whose generated
// code is not in the build (health, reflection).
void PutVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

void PutLengthDelimited(int field, absl::string_view bytes, std::string* out) {
  PutVarint(static_cast<uint64_t>(field) << 3 | 2, out);
  PutVarint(bytes.size(), out);
  out->append(bytes.data(), bytes.size());
}

bool GetVarint(absl::string_view* in, uint64_t* v) {
  *v = 0;
  for (int shift = 0; shift < 64 && !in->empty(); shift += 7) {
    uint8_t b = static_cast<uint8_t>(in->front());
    in->remove_prefix(1);
    *v |= uint64_t{b & 0x7fu} << shift;
    if ((b & 0x80) == 0) return true;
  }
  return false;
}

// Calls fn(field, wire_type, varint, bytes) for each field of `message`;
// false on malformed input.
bool ForEachField(
    absl::string_view message,
    const std::function<void(int, int, uint64_t, absl::string_view)>& fn) {
  while (!message.empty()) {
    uint64_t tag = 0;
    if (!GetVarint(&message, &tag)) return false;
    const int field = static_cast<int>(tag >> 3);
    const int type = static_cast<int>(tag & 7);
    if (type == 0) {
      uint64_t v = 0;
      if (!GetVarint(&message, &v)) return false;
      fn(field, type, v, {});
    } else if (type == 2) {
      uint64_t len = 0;
      if (!GetVarint(&message, &len) || len > message.size()) return false;
      fn(field, type, 0, message.substr(0, len));
      message.remove_prefix(len);
    } else if (type == 1 || type == 5) {
      size_t n = type == 1 ? 8 : 4;
      if (message.size() < n) return false;
      message.remove_prefix(n);
    } else {
      return false;
    }
  }
  return true;
}

grpc::ByteBuffer ToBuffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

std::string FromBuffer(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  for (const grpc::Slice& s : slices) {
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return out;
}

absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      s.error_message());
}

}  // namespace

const std::vector<reactor::PollerKind>& AllPollers() {
  static const auto* kinds = new std::vector<reactor::PollerKind>{
      reactor::PollerKind::kEpollLevel, reactor::PollerKind::kEpollEdge,
      reactor::PollerKind::kPoll, reactor::PollerKind::kSelect};
  return *kinds;
}

std::string PollerTestName(
    const ::testing::TestParamInfo<reactor::PollerKind>& info) {
  switch (info.param) {
    case reactor::PollerKind::kEpollLevel:
      return "Epoll";
    case reactor::PollerKind::kEpollEdge:
      return "EpollEdge";
    case reactor::PollerKind::kPoll:
      return "Poll";
    case reactor::PollerKind::kSelect:
      return "Select";
  }
  return "Unknown";
}

ServerConfig BaseConfig(reactor::PollerKind poller) {
  ServerConfig config;
  config.core.listen = {{"default", net::Endpoint::Loopback(0)}};
  config.core.poller = poller;
  config.core.loops = 2;
  config.grpc_address = net::Endpoint::Loopback(0);
  config.drain_timeout = absl::Seconds(5);
  return config;
}

std::unique_ptr<FaninServer> StartServer(ServerConfig config) {
  auto server = FaninServer::Start(std::move(config));
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return nullptr;
  return *std::move(server);
}

std::string ListenAddress(const FaninServer& server, const std::string& name) {
  for (const auto& [n, address] : server.listen_addresses()) {
    if (n == name) return address;
  }
  return "";
}

std::shared_ptr<grpc::Channel> NewChannel(const std::string& address) {
  grpc::ChannelArguments args;
  // A connection of its own: a stalled stream must not hold the connection
  // window other streams in the test need.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // No window growth: a subscriber that stops reading stalls the server's
  // writes after a modest amount, as a slow one would.
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(),
                                   args);
}

std::unique_ptr<fanin::v1::FanIn::Stub> NewStub(const std::string& address) {
  return fanin::v1::FanIn::NewStub(NewChannel(address));
}

std::unique_ptr<grpc::ClientContext> NewContext() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(Deadline()));
  return context;
}

EventKind KindOf(const Event& event) {
  switch (event.kind_case()) {
    case Event::kOpened:
      return fanin::v1::EVENT_KIND_OPENED;
    case Event::kData:
      return fanin::v1::EVENT_KIND_DATA;
    case Event::kWritable:
      return fanin::v1::EVENT_KIND_WRITABLE;
    case Event::kReadClosed:
      return fanin::v1::EVENT_KIND_READ_CLOSED;
    case Event::kClosed:
      return fanin::v1::EVENT_KIND_CLOSED;
    case Event::kReadable:
      return fanin::v1::EVENT_KIND_READABLE;
    case Event::KIND_NOT_SET:
      break;
  }
  return fanin::v1::EVENT_KIND_UNSPECIFIED;
}

std::string KindName(EventKind kind) {
  std::string name = fanin::v1::EventKind_Name(kind);
  constexpr absl::string_view kPrefix = "EVENT_KIND_";
  if (absl::StartsWith(name, kPrefix)) name.erase(0, kPrefix.size());
  return name;
}

std::vector<Event> EventsOf(const std::vector<Event>& events,
                            uint64_t connection_id) {
  std::vector<Event> out;
  for (const Event& e : events) {
    if (e.connection_id() == connection_id) out.push_back(e);
  }
  return out;
}

std::vector<EventKind> KindsOf(const std::vector<Event>& events) {
  std::vector<EventKind> out;
  for (const Event& e : events) out.push_back(KindOf(e));
  return out;
}

std::string PayloadOf(const std::vector<Event>& events,
                      uint64_t connection_id) {
  std::string out;
  for (const Event& e : events) {
    if (e.connection_id() == connection_id && e.has_data()) {
      out += e.data().payload();
    }
  }
  return out;
}

std::string LocalAddressOf(int fd) { return net::LocalAddressOf(fd); }

TcpClient ConnectFrom(const std::string& source_ip,
                      const std::string& address) {
  size_t colon = address.rfind(':');
  int port = 0;
  sockaddr_in to = {};
  to.sin_family = AF_INET;
  sockaddr_in from = {};
  from.sin_family = AF_INET;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      inet_pton(AF_INET, address.substr(0, colon).c_str(), &to.sin_addr) != 1 ||
      inet_pton(AF_INET, source_ip.c_str(), &from.sin_addr) != 1) {
    ADD_FAILURE() << "bad address " << address << " or " << source_ip;
    return TcpClient();
  }
  to.sin_port = htons(static_cast<uint16_t>(port));
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ADD_FAILURE() << "socket: " << std::strerror(errno);
    return TcpClient();
  }
  if (::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof(from)) != 0 ||
      ::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)) != 0) {
    ADD_FAILURE() << "bind/connect from " << source_ip << " to " << address
                  << ": " << std::strerror(errno);
    ::close(fd);
    return TcpClient();
  }
  return TcpClient(fd);
}

std::string ReadUntilEofOrError(int fd, absl::Time deadline, int* error) {
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) {
      out.append(buf, n);
      continue;
    }
    if (n == 0) {
      *error = 0;
      return out;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      *error = errno;
      return out;
    }
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      *error = -1;
      return out;
    }
    pollfd p = {fd, POLLIN, 0};
    ::poll(&p, 1,
           static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);  // wakes
  }
}

// Subscriber.

std::unique_ptr<Subscriber> Subscriber::Start(
    const std::string& address, const fanin::v1::SubscribeRequest& request,
    bool held) {
  auto sub = std::unique_ptr<Subscriber>(new Subscriber());
  sub->channel_ = NewChannel(address);
  sub->stub_ = fanin::v1::FanIn::NewStub(sub->channel_);
  {
    absl::MutexLock lock(&sub->mu_);
    sub->held_ = held;
  }
  sub->thread_ = std::thread([s = sub.get(), request] { s->Run(request); });
  return sub;
}

Subscriber::~Subscriber() {
  Cancel();
  thread_.join();
}

void Subscriber::Cancel() {
  {
    absl::MutexLock lock(&mu_);
    held_ = false;
    cv_.SignalAll();
  }
  context_.TryCancel();
}

void Subscriber::Hold() {
  absl::MutexLock lock(&mu_);
  held_ = true;
}

void Subscriber::Release() {
  absl::MutexLock lock(&mu_);
  held_ = false;
  cv_.SignalAll();
}

void Subscriber::Run(fanin::v1::SubscribeRequest request) {
  std::unique_ptr<grpc::ClientReader<SubscribeResponse>> reader =
      stub_->Subscribe(&context_, request);
  SubscribeResponse msg;
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      while (held_) cv_.Wait(&mu_);
    }
    if (!reader->Read(&msg)) break;
    absl::MutexLock lock(&mu_);
    State& s = state_;
    switch (msg.message_case()) {
      case SubscribeResponse::kStarted:
        s.started = msg.started();
        break;
      case SubscribeResponse::kBatch:
        s.batch_sizes.push_back(msg.batch().events_size());
        for (const Event& e : msg.batch().events()) {
          s.covered_seq = std::max(s.covered_seq, e.seq());
          if (e.has_opened()) {
            s.opened[e.connection_id()] = s.events.size();
            s.id_by_remote[e.opened().remote_address()] = e.connection_id();
            s.id_by_ends[absl::StrCat(e.opened().remote_address(), "|",
                                      e.opened().local_address())] =
                e.connection_id();
          }
          if (e.has_closed()) s.closed[e.connection_id()] = s.events.size();
          if (e.has_data()) s.data_bytes += e.data().size();
          s.events.push_back(e);
        }
        msg.mutable_batch()->clear_events();  // Kept once, in events.
        s.messages.push_back(msg);
        break;
      case SubscribeResponse::kGap:
        s.gaps.push_back(msg.gap());
        s.lost += msg.gap().lost();
        s.covered_seq = std::max(s.covered_seq, msg.gap().last_seq());
        s.messages.push_back(msg);
        break;
      case SubscribeResponse::kHeartbeat:
        s.heartbeats.push_back(msg.heartbeat());
        s.messages.push_back(msg);
        break;
      case SubscribeResponse::MESSAGE_NOT_SET:
        s.messages.push_back(msg);
        break;
    }
    cv_.SignalAll();
  }
  grpc::Status status = reader->Finish();
  absl::MutexLock lock(&mu_);
  state_.done = true;
  state_.status = status;
  cv_.SignalAll();
}

bool Subscriber::WaitUntil(absl::FunctionRef<bool(const State&)> pred,
                           absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  while (!pred(state_)) {
    if (cv_.WaitWithDeadline(&mu_, deadline)) return pred(state_);
  }
  return true;
}

absl::StatusOr<fanin::v1::Started> Subscriber::WaitStarted(
    absl::Time deadline) {
  if (!WaitUntil([](const State& s) { return s.started.has_value() || s.done; },
                 deadline)) {
    return absl::DeadlineExceededError("no Started message");
  }
  absl::MutexLock lock(&mu_);
  if (state_.started.has_value()) return *state_.started;
  return FromGrpc(state_.status);
}

uint64_t Subscriber::WaitOpened(int client_fd, absl::Time deadline) {
  const std::string ends = absl::StrCat(net::LocalAddressOf(client_fd), "|",
                                        net::PeerAddressOf(client_fd));
  uint64_t id = 0;
  WaitUntil(
      [&](const State& s) {
        auto it = s.id_by_ends.find(ends);
        if (it != s.id_by_ends.end()) id = it->second;
        return id != 0 || s.done;
      },
      deadline);
  return id;
}

std::optional<Event> Subscriber::WaitEvent(uint64_t id, EventKind kind,
                                           absl::Time deadline) {
  std::optional<Event> found;
  size_t scanned = 0;
  WaitUntil(
      [&](const State& s) {
        for (; scanned < s.events.size(); ++scanned) {
          const Event& e = s.events[scanned];
          if (e.connection_id() == id && KindOf(e) == kind) {
            found = e;
            return true;
          }
        }
        return s.done;
      },
      deadline);
  return found;
}

std::optional<Event> Subscriber::WaitClosed(uint64_t id, absl::Time deadline) {
  return WaitEvent(id, fanin::v1::EVENT_KIND_CLOSED, deadline);
}

grpc::Status Subscriber::WaitDone(absl::Time deadline) {
  if (!WaitUntil([](const State& s) { return s.done; }, deadline)) {
    return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                        "stream still open");
  }
  absl::MutexLock lock(&mu_);
  return state_.status;
}

Subscriber::State Subscriber::Snapshot() const {
  absl::MutexLock lock(&mu_);
  return state_;
}

fanin::v1::SubscribeRequest Lossless() {
  fanin::v1::SubscribeRequest request;
  request.set_delivery(fanin::v1::DELIVERY_LOSSLESS);
  return request;
}

// Health and reflection, hand-encoded.

absl::StatusOr<int> HealthCheck(const std::string& address,
                                const std::string& service) {
  grpc::GenericStub stub(NewChannel(address));
  std::string request;
  if (!service.empty()) PutLengthDelimited(1, service, &request);
  grpc::ByteBuffer in = ToBuffer(request);
  grpc::ByteBuffer out;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(Deadline()));
  absl::Notification done;
  grpc::Status status;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(),
                 &in, &out, [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();
  if (!status.ok()) return FromGrpc(status);
  int serving = 0;  // proto3: an absent field is 0 (UNKNOWN).
  if (!ForEachField(FromBuffer(out),
                    [&](int field, int type, uint64_t v, absl::string_view) {
                      if (field == 1 && type == 0) {
                        serving = static_cast<int>(v);
                      }
                    })) {
    return absl::DataLossError("malformed HealthCheckResponse");
  }
  return serving;
}

absl::StatusOr<std::vector<std::string>> ReflectionListServices(
    const std::string& address) {
  grpc::GenericStub stub(NewChannel(address));
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(Deadline()));
  auto call = stub.PrepareCall(
      &context,
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  // One operation at a time: each tag is awaited before the next starts.
  auto await = [&cq](intptr_t want) {
    void* tag = nullptr;
    bool ok = false;
    if (cq.AsyncNext(&tag, &ok, absl::ToChronoTime(Deadline())) !=
        grpc::CompletionQueue::GOT_EVENT) {
      return false;
    }
    return ok && reinterpret_cast<intptr_t>(tag) == want;
  };
  std::string request;
  PutLengthDelimited(7, "*", &request);  // list_services
  grpc::ByteBuffer in = ToBuffer(request);
  grpc::ByteBuffer out;
  grpc::Status status;
  bool ok = false;
  call->StartCall(reinterpret_cast<void*>(1));
  if (await(1)) {
    call->Write(in, reinterpret_cast<void*>(2));
    if (await(2)) {
      call->WritesDone(reinterpret_cast<void*>(3));
      if (await(3)) {
        call->Read(&out, reinterpret_cast<void*>(4));
        ok = await(4);
      }
    }
  }
  call->Finish(&status, reinterpret_cast<void*>(5));
  void* tag = nullptr;
  bool tag_ok = false;
  cq.AsyncNext(&tag, &tag_ok, absl::ToChronoTime(Deadline()));
  cq.Shutdown();
  while (cq.Next(&tag, &tag_ok)) {
  }
  if (!status.ok()) return FromGrpc(status);
  if (!ok) return absl::UnavailableError("reflection stream failed");
  std::vector<std::string> names;
  bool parsed = ForEachField(
      FromBuffer(out), [&](int field, int type, uint64_t, absl::string_view b) {
        if (field != 6 || type != 2) return;  // list_services_response
        ForEachField(b, [&](int f, int t, uint64_t, absl::string_view svc) {
          if (f != 1 || t != 2) return;  // service
          ForEachField(svc, [&](int g, int u, uint64_t, absl::string_view n) {
            if (g == 1 && u == 2) names.emplace_back(n);  // name
          });
        });
      });
  if (!parsed) return absl::DataLossError("malformed reflection response");
  return names;
}

absl::Status SendAllInterleaved(std::vector<SendJob>& jobs, size_t max_piece,
                                uint64_t seed, absl::Time deadline) {
  std::mt19937_64 rng(seed);
  std::vector<pollfd> waiting;
  for (;;) {
    bool progress = false;
    bool left = false;
    waiting.clear();
    for (SendJob& job : jobs) {
      if (job.sent == job.data.size()) continue;
      left = true;
      size_t piece =
          std::min<size_t>(job.data.size() - job.sent,
                           1 + rng() % std::max<size_t>(max_piece, 1));
      ssize_t n = ::send(job.fd, job.data.data() + job.sent, piece,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        job.sent += n;
        progress = true;
        continue;
      }
      if (n < 0 &&
          (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        waiting.push_back({job.fd, POLLOUT, 0});
        continue;
      }
      return absl::ErrnoToStatus(errno, absl::StrCat("send fd ", job.fd));
    }
    if (!left) return absl::OkStatus();
    if (absl::Now() > deadline) {
      size_t remaining = 0;
      for (const SendJob& job : jobs) remaining += job.data.size() - job.sent;
      return absl::DeadlineExceededError(
          absl::StrCat(remaining, " bytes still unsent"));
    }
    if (!progress && !waiting.empty()) {
      // Blocks until some socket can take bytes again (bounded so the
      // deadline is checked).
      ::poll(waiting.data(), waiting.size(), 100);
    }
  }
}

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(n, '\0');
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<char>(rng() & 0xff);
  return out;
}

}  // namespace fanin::servertest
