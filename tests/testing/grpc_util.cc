#include "tests/testing/grpc_util.h"

#include <algorithm>
#include <fstream>
#include <functional>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "server/net/address.h"

namespace fanin::testing {
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

std::string ReadFileOrDie(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  return buffer.str();
}

std::shared_ptr<grpc::Channel> NewChannel(const std::string& address,
                                          const ClientAuth& auth) {
  grpc::ChannelArguments args;
  // A connection of its own: a stalled stream must not hold the connection
  // window other streams in the test need.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // No window growth: a subscriber that stops reading stalls the server's
  // writes after a modest amount, as a slow one would.
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
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

std::unique_ptr<fanin::v1::FanIn::Stub> NewStub(const std::string& address,
                                                const ClientAuth& auth) {
  return fanin::v1::FanIn::NewStub(NewChannel(address, auth));
}

std::unique_ptr<grpc::ClientContext> NewContext(const ClientAuth& auth) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(Deadline()));
  if (!auth.token.empty()) {
    context->AddMetadata("authorization", absl::StrCat("Bearer ", auth.token));
  }
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
    case Event::kNodeChange:
      return fanin::v1::EVENT_KIND_NODE;
    case Event::kGroupChange:
      return fanin::v1::EVENT_KIND_GROUP;
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

fanin::v1::SubscribeRequest LosslessRequest() {
  fanin::v1::SubscribeRequest request;
  request.set_delivery(fanin::v1::DELIVERY_LOSSLESS);
  return request;
}

// Subscriber.

std::unique_ptr<Subscriber> Subscriber::Start(
    const std::string& address, const fanin::v1::SubscribeRequest& request,
    bool held, const ClientAuth& auth) {
  auto sub = std::unique_ptr<Subscriber>(new Subscriber());
  sub->channel_ = NewChannel(address, auth);
  if (!auth.token.empty()) {
    sub->context_.AddMetadata("authorization",
                              absl::StrCat("Bearer ", auth.token));
  }
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
    if (!msg.has_started()) s.events_before.push_back(s.events.size());
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
          if (e.has_data()) {
            s.data_bytes += e.data().size();
            s.data_bytes_by_id[e.connection_id()] += e.data().size();
          }
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
      case SubscribeResponse::kAssigned:
        s.assigned.push_back(msg.assigned());
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

absl::StatusOr<int> HealthCheck(const std::shared_ptr<grpc::Channel>& channel,
                                const std::string& service) {
  grpc::GenericStub stub(channel);
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

}  // namespace fanin::testing
