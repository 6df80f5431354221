// Cross-node Write latency beside the bare NATS request-reply round trip, in
// one process so both see the same machine at the same moment.
//
//   cross_write --owner=127.0.0.1:50061 --owner_listen=127.0.0.1:7071
//     --asker=127.0.0.1:50062 --nats=nats://127.0.0.1:4222 --samples=1000
//
// It opens one raw TCP connection to the owner node's listener and learns its
// connection id from an Opened event on the asking node's stream (so the
// asking node has seen the connection, as a subscriber there would have).
// Then, --samples times, in rotating order, --interval_ms apart:
//   cross: Write on the asking node for the owner's connection (routed over
//          NATS request-reply to the owner); the time until the bytes arrive
//          at the raw client, and until the RPC returns;
//   local: the same Write on the owner node itself (no routing);
//   nats:  natsConnection_Request on one connection to a responder on another
//          connection that answers with the request's bytes, the payload as
//          large as the serialized WriteRequest: the broker's round trip that
//          routing adds to a Write. Twice: the responder's connection with
//          libnats' default options (a publish waits for its flusher thread,
//          which batches for about a millisecond), and with SendAsap (sent at
//          once, what the header recommends for a replier).
// Prints one JSON line with p50/p90/p99/p99.9/max (µs) of each.
#include <arpa/inet.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "fanin/v1/fanin.grpc.pb.h"
#include "grpcpp/grpcpp.h"

ABSL_FLAG(std::string, owner, "", "gRPC HOST:PORT of the connection's node");
ABSL_FLAG(std::string, owner_listen, "", "its raw listener, IPv4 HOST:PORT");
ABSL_FLAG(std::string, asker, "", "gRPC HOST:PORT of another node");
ABSL_FLAG(std::string, nats, "", "nats://HOST:PORT of the cluster's broker");
ABSL_FLAG(int, samples, 1000, "samples of each kind");
ABSL_FLAG(int, warmup, 50, "unrecorded samples of each kind first");
ABSL_FLAG(double, interval_ms, 1, "pause between two samples");
ABSL_FLAG(int, write_bytes, 16, "bytes per Write");

namespace fanin::bench {
namespace {

int64_t Now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "cross_write: %s\n", what.c_str());
  std::exit(1);
}

struct Series {
  std::vector<int64_t> ns;
  std::string Json() {
    std::sort(ns.begin(), ns.end());
    auto q = [&](double f) {
      if (ns.empty()) return 0.0;
      const size_t i =
          std::min(ns.size() - 1, static_cast<size_t>(f * ns.size()));
      return ns[i] / 1e3;
    };
    return absl::StrFormat(
        "{\"n\":%d,\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,"
        "\"p999_us\":%.1f,\"max_us\":%.1f}",
        ns.size(), q(0.5), q(0.9), q(0.99), q(0.999),
        ns.empty() ? 0.0 : ns.back() / 1e3);
  }
};

int ConnectRaw(const std::string& hostport, std::string* local) {
  std::vector<std::string> hp = absl::StrSplit(hostport, ':');
  sockaddr_in a{};
  a.sin_family = AF_INET;
  int port = 0;
  if (hp.size() != 2 || inet_pton(AF_INET, hp[0].c_str(), &a.sin_addr) != 1 ||
      !absl::SimpleAtoi(hp[1], &port)) {
    Die("--owner_listen must be IPv4:PORT");
  }
  a.sin_port = htons(port);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    Die(absl::StrCat("connect ", hostport, ": ", std::strerror(errno)));
  }
  // A Write that fails leaves nothing to read: give up rather than hang.
  timeval timeout{.tv_sec = 10, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  sockaddr_in me{};
  socklen_t len = sizeof(me);
  getsockname(fd, reinterpret_cast<sockaddr*>(&me), &len);
  char ip[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &me.sin_addr, ip, sizeof(ip));
  *local = absl::StrCat(ip, ":", ntohs(me.sin_port));
  return fd;
}

// Connects to the owner's listener and waits for the Opened event of that
// connection on the asking node's stream; returns its id.
uint64_t OpenConnection(v1::FanIn::Stub* asker, const std::string& listen,
                        int* fd) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  v1::SubscribeRequest req;
  req.add_kinds(v1::EVENT_KIND_OPENED);
  auto reader = asker->Subscribe(&ctx, req);
  v1::SubscribeResponse r;
  if (!reader->Read(&r) || !r.has_started()) Die("no Started from --asker");
  std::string local;
  *fd = ConnectRaw(listen, &local);
  uint64_t id = 0;
  while (id == 0 && reader->Read(&r)) {
    if (!r.has_batch()) continue;
    for (const v1::Event& e : r.batch().events()) {
      if (e.has_opened() && e.opened().remote_address() == local) {
        id = e.connection_id();
      }
    }
  }
  ctx.TryCancel();
  reader->Finish();
  if (id == 0) Die("the asking node never reported the connection's Opened");
  return id;
}

// Reads from the raw socket until `n` bytes have arrived; returns when the
// last of them did. The bytes must be the expected ones.
int64_t ReadExactly(int fd, const std::string& expect) {
  std::string got;
  char buf[4096];
  while (got.size() < expect.size()) {
    ssize_t k =
        recv(fd, buf, std::min(sizeof(buf), expect.size() - got.size()), 0);
    if (k <= 0) Die(absl::StrCat("raw connection: ", std::strerror(errno)));
    got.append(buf, k);
  }
  const int64_t t = Now();
  if (got != expect) Die("the raw client received other bytes than written");
  return t;
}

// One Write, asynchronously, so the arrival at the raw client is timed while
// the RPC is still in flight.
struct WriteSample {
  int64_t arrive_ns;
  int64_t rpc_ns;
};
WriteSample TimedWrite(v1::FanIn::Stub* stub, uint64_t id,
                       const std::string& data, int fd) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::WriteRequest req;
  req.set_connection_id(id);
  req.set_data(data);
  v1::WriteResponse resp;
  absl::Mutex mu;
  bool done = false;
  grpc::Status status;
  int64_t rpc_end = 0;
  const int64_t t0 = Now();
  stub->async()->Write(&ctx, &req, &resp, [&](grpc::Status s) {
    const int64_t t = Now();
    absl::MutexLock lock(&mu);
    status = std::move(s);
    rpc_end = t;
    done = true;
  });
  const int64_t arrived = ReadExactly(fd, data);
  absl::MutexLock lock(&mu);
  mu.Await(absl::Condition(&done));
  if (!status.ok()) {
    Die(absl::StrCat("Write: ", status.error_code(), " ",
                     status.error_message()));
  }
  return {arrived - t0, rpc_end - t0};
}

void OnRequest(natsConnection* nc, natsSubscription*, natsMsg* msg, void*) {
  natsConnection_Publish(nc, natsMsg_GetReply(msg), natsMsg_GetData(msg),
                         natsMsg_GetDataLength(msg));
  natsMsg_Destroy(msg);
}

natsConnection* Connect(const std::string& url, bool send_asap) {
  natsOptions* opts = nullptr;
  natsConnection* nc = nullptr;
  if (natsOptions_Create(&opts) != NATS_OK ||
      natsOptions_SetURL(opts, url.c_str()) != NATS_OK ||
      natsOptions_SetSendAsap(opts, send_asap) != NATS_OK ||
      natsConnection_Connect(&nc, opts) != NATS_OK) {
    Die(absl::StrCat("cannot connect to ", url));
  }
  natsOptions_Destroy(opts);
  return nc;
}

natsSubscription* Respond(natsConnection* nc, const std::string& subject) {
  natsSubscription* sub = nullptr;
  if (natsConnection_Subscribe(&sub, nc, subject.c_str(), &OnRequest,
                               nullptr) != NATS_OK ||
      natsConnection_Flush(nc) != NATS_OK) {
    Die("cannot subscribe a responder");
  }
  return sub;
}

// One request-reply round trip to `subject`.
int64_t TimedRequest(natsConnection* nc, const std::string& subject,
                     const std::string& payload) {
  natsMsg* reply = nullptr;
  const int64_t t0 = Now();
  natsStatus st =
      natsConnection_Request(&reply, nc, subject.c_str(), payload.data(),
                             static_cast<int>(payload.size()), 5000);
  const int64_t t = Now() - t0;
  if (st != NATS_OK)
    Die(absl::StrCat("NATS request: ", natsStatus_GetText(st)));
  natsMsg_Destroy(reply);
  return t;
}

int Main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  auto channel = [](const std::string& addr) {
    return grpc::CreateChannel(addr, grpc::InsecureChannelCredentials());
  };
  auto owner = v1::FanIn::NewStub(channel(absl::GetFlag(FLAGS_owner)));
  auto asker = v1::FanIn::NewStub(channel(absl::GetFlag(FLAGS_asker)));
  int fd = -1;
  const uint64_t id =
      OpenConnection(asker.get(), absl::GetFlag(FLAGS_owner_listen), &fd);

  // NATS connections as two nodes have them: one asks, one answers (with
  // default options, and another with SendAsap).
  const std::string url = absl::GetFlag(FLAGS_nats);
  natsConnection* requester = Connect(url, false);
  natsConnection* responder = Connect(url, false);
  natsConnection* asap_responder = Connect(url, true);
  const std::string subject = absl::StrCat("fanin_bench.rr.", getpid());
  const std::string asap_subject = subject + ".asap";
  natsSubscription* sub = Respond(responder, subject);
  natsSubscription* asap_sub = Respond(asap_responder, asap_subject);

  const int write_bytes = std::max(1, absl::GetFlag(FLAGS_write_bytes));
  v1::WriteRequest sized;
  sized.set_connection_id(id);
  sized.set_data(std::string(write_bytes, 'w'));
  const std::string rr_payload(sized.ByteSizeLong(), 'r');

  Series cross_arrive, cross_rpc, local_arrive, local_rpc, nats_rr, asap_rr;
  const int warmup = absl::GetFlag(FLAGS_warmup);
  const int samples = absl::GetFlag(FLAGS_samples);
  const auto pause = absl::Milliseconds(absl::GetFlag(FLAGS_interval_ms));
  for (int i = 0; i < warmup + samples; ++i) {
    const bool record = i >= warmup;
    std::string data(write_bytes, static_cast<char>('a' + i % 26));
    for (int k = 0; k < 4; ++k) {
      switch ((i + k) % 4) {
        case 0: {
          WriteSample s = TimedWrite(asker.get(), id, data, fd);
          if (record) {
            cross_arrive.ns.push_back(s.arrive_ns);
            cross_rpc.ns.push_back(s.rpc_ns);
          }
          break;
        }
        case 1: {
          WriteSample s = TimedWrite(owner.get(), id, data, fd);
          if (record) {
            local_arrive.ns.push_back(s.arrive_ns);
            local_rpc.ns.push_back(s.rpc_ns);
          }
          break;
        }
        case 2: {
          const int64_t t = TimedRequest(requester, subject, rr_payload);
          if (record) nats_rr.ns.push_back(t);
          break;
        }
        default: {
          const int64_t t = TimedRequest(requester, asap_subject, rr_payload);
          if (record) asap_rr.ns.push_back(t);
        }
      }
      absl::SleepFor(pause);  // the measured rate: one request per pause
    }
  }
  natsSubscription_Destroy(sub);
  natsSubscription_Destroy(asap_sub);
  natsConnection_Destroy(requester);
  natsConnection_Destroy(responder);
  natsConnection_Destroy(asap_responder);
  close(fd);
  absl::PrintF(
      "{\"event\":\"done\",\"connection_id\":%d,\"write_bytes\":%d,"
      "\"request_bytes\":%d,\"cross_arrive\":%s,\"cross_rpc\":%s,"
      "\"local_arrive\":%s,\"local_rpc\":%s,\"nats_request_reply\":%s,"
      "\"nats_request_reply_asap\":%s}\n",
      id, write_bytes, rr_payload.size(), cross_arrive.Json(), cross_rpc.Json(),
      local_arrive.Json(), local_rpc.Json(), nats_rr.Json(), asap_rr.Json());
  return 0;
}

}  // namespace
}  // namespace fanin::bench

int main(int argc, char** argv) { return fanin::bench::Main(argc, argv); }
