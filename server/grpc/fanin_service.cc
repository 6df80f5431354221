#include "server/grpc/fanin_service.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/base/log.h"
#include "server/base/text.h"
#include "server/fanout/event_codec.h"
#include "server/fanout/filter.h"
#include "server/grpc/batch_encoder.h"
#include "server/grpc/group_stream.h"
#include "server/grpc/requests.h"

namespace fanin::grpc_api {
namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()),
                      std::string(s.message()));
}

grpc::ByteBuffer ToByteBuffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

// The bytes of a request as gRPC received them.
std::string BytesOf(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (!buffer.Dump(&slices).ok()) return bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return bytes;
}

void SetResponse(const google::protobuf::Message& message,
                 grpc::ByteBuffer* out) {
  *out = ToByteBuffer(message.SerializeAsString());
}

std::string Serialize(const fanin::v1::SubscribeResponse& message) {
  std::string out;
  message.SerializeToString(&out);
  return out;
}

// A slice that owns `bytes` (moved, not copied).
grpc::Slice SliceOwning(std::string bytes) {
  auto* owned = new std::string(std::move(bytes));
  return grpc::Slice(
      owned->data(), owned->size(),
      [](void* p) { delete static_cast<std::string*>(p); }, owned);
}

}  // namespace

// One Subscribe stream. Owned by itself (self_) from Start until OnDone; the
// hub's wake and the heartbeat thread hold weak references, so a wake that
// races with the end of the stream finds finished_ set and does nothing.
//
// At most one Pump runs at a time: the stream pumps after it starts and after
// each write; otherwise it is parked in the hub and only the party that
// unparks it (a publisher's wake, a Kick) pumps.
//
// A group member (request.group) reads from its GroupRegistry member instead
// of a hub subscription of its own: the same protocol (Read, park, wake),
// plus Written after each completed write, which is what a handover counts
// as delivered, and Assigned messages between batches.
class SubscribeStream : public grpc::ServerWriteReactor<grpc::ByteBuffer>,
                        public std::enable_shared_from_this<SubscribeStream> {
 public:
  SubscribeStream(FaninService* service, grpc::CallbackServerContext* context,
                  fanin::v1::SubscribeRequest request, uint64_t id,
                  std::string peer)
      : service_(service),
        hub_(service->hub_),
        context_(context),
        request_(std::move(request)),
        id_(id),
        peer_(std::move(peer)) {
    const ServiceOptions& o = service->options_;
    max_events_ =
        request_.max_batch_events() == 0
            ? o.default_batch_events
            : std::min(request_.max_batch_events(), o.max_batch_events);
    policy_.omit = request_.omit_payload();
    policy_.max = request_.max_payload_bytes();
  }

  // Subscribes (or joins the group) and sends Started, or finishes with the
  // reason it cannot.
  void Start(fanout::Filter filter, fanout::GroupSpec* group) {
    self_ = shared_from_this();
    class_key_ = BatchCache::ClassOf(filter.Key(), policy_);
    if (service_->options_.cluster != nullptr) filter_ = filter;
    std::weak_ptr<SubscribeStream> weak = self_;
    auto wake = [weak] {
      if (auto s = weak.lock()) s->Pump();
    };
    fanout::EventHub::Started started;
    absl::Status status;
    if (group != nullptr) {
      auto member = service_->groups_.Join({.group = request_.group(),
                                            .spec = std::move(*group),
                                            .rebalance = request_.rebalance(),
                                            .member_id = id_,
                                            .peer = peer_,
                                            .wake = std::move(wake)},
                                           &started);
      status = member.status();
      if (member.ok()) member_ = *std::move(member);
    } else {
      auto sub = hub_->Subscribe(
          {.filter = std::move(filter),
           .lossless = request_.delivery() == fanin::v1::DELIVERY_LOSSLESS,
           .resume_after_seq = request_.resume_after_seq(),
           .resume_epoch = request_.resume_epoch(),
           .start_back = request_.start_back(),
           .start_time_unix_nano = request_.start_time_unix_nano(),
           .wake = std::move(wake)},
          &started);
      status = sub.status();
      if (sub.ok()) sub_ = *std::move(sub);
    }
    if (!status.ok()) {
      finished_ = true;
      Finish(ToGrpc(status));
      return;
    }
    service_->Register(self_);
    // Group members never share batches: each has its own connections.
    if (member_ == nullptr) service_->batches_.AddStream(class_key_);
    base::Log(base::LogLevel::kInfo, "subscriber started",
              {{"subscriber", id_},
               {"peer", peer_},
               {"delivery", request_.delivery() == fanin::v1::DELIVERY_LOSSLESS
                                ? "lossless"
                                : "lossy"},
               {"resume_after_seq", request_.resume_after_seq()},
               {"start_back", request_.start_back()},
               {"start_time_unix_nano", request_.start_time_unix_nano()},
               {"group", request_.group()},
               {"head_seq", started.head_seq}});
    fanin::v1::SubscribeResponse first;
    first.mutable_started()->set_server_epoch(started.epoch);
    first.mutable_started()->set_oldest_seq(started.oldest_seq);
    first.mutable_started()->set_head_seq(started.head_seq);
    if (service_->options_.cluster != nullptr) {
      first.mutable_started()->set_node(service_->options_.cluster->node());
    }
    Send(Serialize(first));
  }

  void OnWriteDone(bool ok) override {
    write_in_flight_ = false;
    if (ok) written_seq_ = pending_seq_;
    if (!ok) cancelled_ = true;
    // What a group counts as delivered: a member that leaves later hands
    // over only what it had not finished writing.
    if (ok && member_) service_->groups_.Written(member_.get());
    Pump();
  }

  void OnCancel() override {
    cancelled_ = true;
    Kick();
  }

  void OnDone() override {
    if (sub_ || member_) {
      base::Log(
          base::LogLevel::kInfo, "subscriber ended",
          {{"subscriber", id_},
           {"peer", peer_},
           {"code", absl::StatusCodeToString(
                        static_cast<absl::StatusCode>(final_code_.load()))},
           {"delivered", delivered_},
           {"lost", lost_},
           {"batches", batches_sent_},
           {"shared_batches", shared_batches_}});
      if (member_ == nullptr) service_->batches_.RemoveStream(class_key_);
    }
    service_->Unregister(this);
    Leave();
    self_.reset();  // May delete this.
  }

  // Heartbeat thread: asks for a heartbeat if the stream has been quiet.
  void MaybeHeartbeat(absl::Time now, absl::Duration interval) {
    if (now - absl::FromUnixNanos(last_send_ns_.load()) < interval) return;
    heartbeat_due_ = true;
    Kick();
  }
  // Heartbeat thread: a lossless stream whose write has been in flight for
  // `timeout` is holding back ingestion for a subscriber that stopped
  // reading: end it, which lifts its back-pressure at once. If even the end
  // cannot be written for as long again, cancel the call. A group member,
  // lossless or not, is ended too: its connections then go to members that
  // read.
  void MaybeStalled(absl::Time now, absl::Duration timeout) {
    if (timeout <= absl::ZeroDuration() || !write_in_flight_ ||
        (request_.delivery() != fanin::v1::DELIVERY_LOSSLESS &&
         member_ == nullptr)) {
      return;
    }
    const absl::Duration stuck =
        now - absl::FromUnixNanos(last_send_ns_.load());
    if (stuck < timeout) return;
    if (finished_) {
      if (stuck >= 2 * timeout && !stall_cancelled_.exchange(true)) {
        context_->TryCancel();
      }
      return;
    }
    const uint64_t written = written_seq_.load();
    base::Log(base::LogLevel::kWarning, "subscriber stalled",
              {{"subscriber", id_},
               {"peer", peer_},
               {"stalled_ms", absl::ToInt64Milliseconds(stuck)},
               {"written_seq", written}});
    FinishOnce(grpc::Status(
        grpc::StatusCode::ABORTED,
        absl::StrCat("lossless subscriber stopped reading: no write completed "
                     "for ",
                     absl::FormatDuration(timeout),
                     " (--subscriber_stall_timeout) while its back-pressure "
                     "held back ingestion; events through seq ",
                     written,
                     " were written; resubscribe with resume_after_seq = the "
                     "last seq received to lose nothing still retained")));
  }
  // Drain: finish once everything owed is delivered.
  void Drain() {
    draining_ = true;
    Kick();
  }

 private:
  // The source of events: the hub subscription, or the group member.
  void Kick() {
    if (member_) {
      service_->groups_.Kick(member_.get());
    } else if (sub_) {
      hub_->Kick(sub_.get());
    }
  }
  bool Unpark() {
    return member_ ? service_->groups_.Unpark(member_.get())
                   : hub_->Unpark(sub_.get());
  }
  void Leave() {
    if (member_) {
      service_->groups_.Leave(member_.get());
    } else if (sub_) {
      hub_->Unsubscribe(sub_.get());
    }
  }
  // Reads the next batch into batch_, or parks (true). Once parked, another
  // thread may pump this stream: the caller must not touch batch_ then. A
  // group member's Assigned goes out at once (*sent).
  bool ReadSource(bool* sent) {
    if (member_ == nullptr) {
      return hub_->Read(sub_.get(), max_events_,
                        service_->options_.max_batch_bytes,
                        /*park_if_empty=*/true, &batch_);
    }
    fanout::GroupRead r;  // Not a member: see above.
    service_->groups_.Read(member_.get(), max_events_,
                           service_->options_.max_batch_bytes,
                           /*park_if_empty=*/true, &r);
    if (r.parked) return true;
    if (r.end.has_value()) {
      // The cluster ended the membership (refused, or its node cut off).
      FinishOnce(ToGrpc(*r.end));
      *sent = true;
      return false;
    }
    batch_.Clear();
    batch_.gap = std::move(r.gap);
    batch_.events = std::move(r.events);
    batch_.more = r.more;
    if (r.assigned.has_value()) {
      fanin::v1::SubscribeResponse msg;
      *msg.mutable_assigned() = std::move(*r.assigned);
      Send(Serialize(msg));
      *sent = true;
    }
    return false;
  }

  void Pump() {
    for (;;) {
      if (finished_) return;
      if (cancelled_) {
        FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED,
                                "subscription cancelled"));
        return;
      }
      bool sent = false;
      const bool parked = ReadSource(&sent);
      if (sent) return;
      if (parked) {
        OnParked();
        return;
      }
      if (batch_.behind_from.has_value()) {
        Fetch(*batch_.behind_from);
        return;
      }
      if (batch_.gap.has_value()) {
        lost_ += batch_.gap->lost();
        service_->events_lost_.fetch_add(batch_.gap->lost());
        fanin::v1::SubscribeResponse msg;
        *msg.mutable_gap() = *batch_.gap;
        Send(Serialize(msg));
        return;
      }
      if (!batch_.events.empty()) {
        delivered_ += batch_.events.size();
        bool shared = false;
        grpc::Slice wire;
        if (member_ == nullptr) {
          wire = service_->batches_.Encode(class_key_, batch_.events, policy_,
                                           &shared);
        } else {
          std::string bytes;
          AppendBatchResponse(batch_.events, policy_, &bytes);
          wire = SliceOwning(std::move(bytes));
        }
        ++batches_sent_;
        if (shared) ++shared_batches_;
        if (service_->options_.on_batch_sent) {
          service_->options_.on_batch_sent(batch_.events);
        }
        pending_seq_ = batch_.events.back()->seq;
        batch_.events.clear();
        Send(std::move(wire));
        return;
      }
      if (batch_.more) continue;
      OnParked();
      return;
    }
  }

  // Cluster mode: the next events are older than this node's history; read
  // them from the cluster's stream. Until the fetch answers nobody else pumps
  // (the subscription is not parked), so it continues from there.
  void Fetch(uint64_t from) {
    std::weak_ptr<SubscribeStream> weak = self_;
    service_->options_.cluster->Fetch(
        from, filter_, max_events_, service_->options_.max_batch_bytes,
        [weak](absl::StatusOr<ClusterRouter::Fetched> fetched) {
          auto self = weak.lock();
          if (self) self->OnFetched(std::move(fetched));
        });
  }
  void OnFetched(absl::StatusOr<ClusterRouter::Fetched> fetched) {
    if (finished_) return;
    if (!fetched.ok()) {
      FinishOnce(grpc::Status(
          grpc::StatusCode::UNAVAILABLE,
          absl::StrCat(
              "reading the cluster's stream: ", fetched.status().message(),
              "; resume after the last seq received")));
      return;
    }
    hub_->Rejoin(sub_.get(), fetched->next_seq);
    if (fetched->gap.has_value()) {
      lost_ += fetched->gap->lost();
      service_->events_lost_.fetch_add(fetched->gap->lost());
      fanin::v1::SubscribeResponse msg;
      *msg.mutable_gap() = *fetched->gap;
      Send(Serialize(msg));
      return;
    }
    if (!fetched->events.empty()) {
      delivered_ += fetched->events.size();
      std::string wire;
      AppendBatchResponse(fetched->events, policy_, &wire);
      ++batches_sent_;
      pending_seq_ = fetched->events.back()->seq;
      Send(std::move(wire));
      return;
    }
    Pump();
  }

  // Parked (or the source is gone). Anything that asked for our attention
  // before we parked must be handled now, or it would wait for the next
  // event; only the party that unparks may touch the stream's state.
  void OnParked() {
    if (!cancelled_ && !draining_ && !heartbeat_due_) return;
    if (!Unpark()) return;  // Someone else pumps.
    if (cancelled_) {
      FinishOnce(
          grpc::Status(grpc::StatusCode::CANCELLED, "subscription cancelled"));
      return;
    }
    if (draining_) {
      FinishOnce(grpc::Status::OK);
      return;
    }
    heartbeat_due_ = false;
    fanin::v1::SubscribeResponse msg;
    msg.mutable_heartbeat()->set_head_seq(hub_->head_seq());
    msg.mutable_heartbeat()->set_delivered(delivered_);
    msg.mutable_heartbeat()->set_lost(lost_);
    if (service_->options_.cluster != nullptr &&
        !service_->options_.cluster->broker_available()) {
      msg.mutable_heartbeat()->set_broker_unavailable(true);
    }
    Send(Serialize(msg));
  }

  void Send(const std::string& bytes) { Send(grpc::Slice(bytes)); }
  void Send(grpc::Slice bytes) {
    last_send_ns_ = absl::GetCurrentTimeNanos();
    write_in_flight_ = true;
    out_ = grpc::ByteBuffer(&bytes, 1);
    StartWrite(&out_);
  }

  void FinishOnce(grpc::Status status) {
    if (finished_.exchange(true)) return;
    final_code_ = static_cast<int>(status.error_code());
    Leave();
    Finish(std::move(status));
  }

  FaninService* const service_;
  fanout::EventHub* const hub_;
  grpc::CallbackServerContext* const context_;
  const fanin::v1::SubscribeRequest request_;
  const uint64_t id_;  // for logs
  const std::string peer_;
  std::atomic<int> final_code_{static_cast<int>(grpc::StatusCode::CANCELLED)};
  uint32_t max_events_;
  fanout::PayloadPolicy policy_;
  std::string class_key_;  // BatchCache class: filter and payload policy
  uint64_t batches_sent_ = 0;
  uint64_t shared_batches_ = 0;
  std::shared_ptr<SubscribeStream> self_;
  std::shared_ptr<fanout::EventHub::Subscription> sub_;
  fanout::Filter filter_;  // cluster mode: for fetches from the stream
  std::shared_ptr<fanout::GroupRegistry::Member> member_;  // group members
  fanout::EventHub::ReadResult batch_;
  grpc::ByteBuffer out_;
  uint64_t delivered_ = 0;
  uint64_t lost_ = 0;
  std::atomic<bool> finished_{false};
  std::atomic<bool> cancelled_{false};
  std::atomic<bool> draining_{false};
  std::atomic<bool> heartbeat_due_{false};
  std::atomic<int64_t> last_send_ns_{0};
  // Stall detection (read by the heartbeat thread).
  std::atomic<bool> write_in_flight_{false};
  std::atomic<bool> stall_cancelled_{false};
  uint64_t pending_seq_ = 0;  // last seq of the batch being written
  std::atomic<uint64_t> written_seq_{0};
};

FaninService::FaninService(core::FaninCore* core, fanout::EventHub* hub,
                           ServiceOptions options)
    : core_(core),
      hub_(hub),
      options_(std::move(options)),
      groups_(hub, options_.groups) {
  // Cluster mode: a member joining through another node arrives as its
  // request (GroupChange.request); its spec is built as for our own.
  groups_.SetSpecOf([this](const fanin::v1::SubscribeRequest& request)
                        -> absl::StatusOr<fanout::GroupSpec> {
    absl::StatusOr<fanout::Filter> filter =
        CheckSubscribe(request, FilterListenerNames());
    if (!filter.ok()) return filter.status();
    if (absl::Status s = CheckGroupRequest(request); !s.ok()) return s;
    return GroupSpecOf(request, FilterListenerNames());
  });
  heartbeat_thread_ = std::thread([this] { HeartbeatLoop(); });
}

FaninService::~FaninService() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  heartbeat_thread_.join();
}

void FaninService::HeartbeatLoop() {
  absl::Duration tick = options_.heartbeat_interval / 5;
  if (options_.subscriber_stall_timeout > absl::ZeroDuration()) {
    tick = std::min(tick, options_.subscriber_stall_timeout / 4);
  }
  tick = std::clamp(tick, absl::Milliseconds(10), absl::Seconds(1));
  absl::MutexLock lock(&mu_);
  while (!stop_) {
    mu_.AwaitWithTimeout(absl::Condition(&stop_), tick);
    if (stop_) break;
    std::vector<std::shared_ptr<SubscribeStream>> live;
    for (auto& [ptr, weak] : streams_) {
      if (auto s = weak.lock()) live.push_back(std::move(s));
    }
    mu_.Unlock();
    absl::Time now = absl::Now();
    for (auto& s : live) {
      s->MaybeHeartbeat(now, options_.heartbeat_interval);
      s->MaybeStalled(now, options_.subscriber_stall_timeout);
    }
    groups_.Sweep(now);
    live.clear();
    mu_.Lock();
  }
}

void FaninService::Register(const std::shared_ptr<SubscribeStream>& stream) {
  absl::MutexLock lock(&mu_);
  streams_[stream.get()] = stream;
}

void FaninService::Unregister(SubscribeStream* stream) {
  absl::MutexLock lock(&mu_);
  streams_.erase(stream);
}

size_t FaninService::active_streams() const {
  absl::MutexLock lock(&mu_);
  return streams_.size();
}

void FaninService::BeginDrain() {
  draining_ = true;
  std::vector<std::shared_ptr<SubscribeStream>> live;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [ptr, weak] : streams_) {
      if (auto s = weak.lock()) live.push_back(std::move(s));
    }
  }
  for (auto& s : live) s->Drain();
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* FaninService::Subscribe(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
  fanin::v1::SubscribeRequest req;
  grpc::Status status =
      Admit(context, Access::kRead, "Subscribe", request, &req);
  absl::StatusOr<fanout::Filter> filter = fanout::Filter();
  if (status.ok()) {
    filter = CheckSubscribe(req, FilterListenerNames());
    if (!filter.ok()) status = ToGrpc(filter.status());
  }
  if (status.ok() && req.nodes_size() > 0 && options_.cluster == nullptr) {
    status = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "nodes: this server is not in cluster mode (its "
                          "events have no node); drop the node filter");
  }
  absl::StatusOr<fanout::GroupSpec> group = fanout::GroupSpec();
  if (status.ok()) status = ToGrpc(CheckGroupRequest(req));
  if (status.ok() && !req.group().empty()) {
    group = GroupSpecOf(req, FilterListenerNames());
    if (!group.ok()) status = ToGrpc(group.status());
  }
  if (status.ok() && req.delivery() == fanin::v1::DELIVERY_LOSSLESS) {
    status = Authorize(context, Access::kLossless);
  }
  if (status.ok() && draining_) {
    status = grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "fanin server is shutting down");
  }
  if (status.ok() && active_streams() >= options_.max_subscribers) {
    status =
        grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                     absl::StrCat("too many subscribers (max_subscribers is ",
                                  options_.max_subscribers, ")"));
  }
  if (!status.ok()) {
    // A reactor that only finishes; it deletes itself when done.
    class Refusal : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
     public:
      explicit Refusal(grpc::Status s) { Finish(std::move(s)); }
      void OnDone() override { delete this; }
    };
    return new Refusal(std::move(status));
  }
  const bool member = !req.group().empty();
  auto stream = std::make_shared<SubscribeStream>(
      this, context, std::move(req), next_subscriber_id_.fetch_add(1),
      context->peer());
  stream->Start(*std::move(filter), member ? &*group : nullptr);
  return stream.get();
}

// A unary call's reactor: counts the call in flight until gRPC is done with
// it (its status sent), so a drain knows when nothing is owed.
class UnaryCall : public grpc::ServerUnaryReactor {
 public:
  explicit UnaryCall(FaninService* service) : service_(service) {}
  void OnDone() override {
    service_->UnaryDone();
    delete this;
  }

 private:
  FaninService* const service_;
};

grpc::ServerUnaryReactor* FaninService::NewUnary() {
  {
    absl::MutexLock lock(&mu_);
    ++unary_in_flight_;
  }
  return new UnaryCall(this);
}

void FaninService::UnaryDone() {
  absl::MutexLock lock(&mu_);
  --unary_in_flight_;
}

grpc::ServerUnaryReactor* FaninService::Finished(const grpc::Status& status) {
  grpc::ServerUnaryReactor* reactor = NewUnary();
  reactor->Finish(status);
  return reactor;
}

bool FaninService::WaitUntilIdle(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithDeadline(
      absl::Condition(
          +[](FaninService* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) {
            return s->streams_.empty() && s->unary_in_flight_ == 0;
          },
          this),
      deadline);
}

grpc::Status FaninService::Admit(grpc::CallbackServerContext* context,
                                 Access access, const char* method,
                                 const grpc::ByteBuffer* request,
                                 google::protobuf::Message* out) const {
  grpc::Status s = Authorize(context, access);
  if (!s.ok()) return s;
  return ToGrpc(ParseRequest(BytesOf(*request), method, out));
}

std::pair<grpc::ServerUnaryReactor*, ClusterRouter::Reply>
FaninService::NewReply(grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = NewUnary();
  return {reactor, [reactor, response](absl::Status status, std::string bytes) {
            if (status.ok()) *response = ToByteBuffer(bytes);
            reactor->Finish(ToGrpc(status));
          }};
}

void FaninService::LocalWrite(fanin::v1::WriteRequest req,
                              ClusterRouter::Reply done) {
  core_->Write(
      req.connection_id(), std::move(*req.mutable_data()), req.close_after(),
      [done = std::move(done)](absl::StatusOr<uint64_t> queued) mutable {
        if (!queued.ok()) return done(queued.status(), "");
        fanin::v1::WriteResponse r;
        r.set_queued_bytes(*queued);
        done(absl::OkStatus(), r.SerializeAsString());
      });
}

void FaninService::LocalClose(const fanin::v1::CloseConnectionRequest& req,
                              ClusterRouter::Reply done) {
  core_->Close(
      req.connection_id(), req.abort(),
      [done = std::move(done)](absl::Status status) mutable {
        done(status,
             status.ok()
                 ? fanin::v1::CloseConnectionResponse().SerializeAsString()
                 : "");
      });
}

void FaninService::LocalRead(const fanin::v1::ReadRequest& req,
                             ClusterRouter::Reply done) {
  core_->Read(req.connection_id(), req.max_bytes(),
              [done = std::move(done)](
                  absl::StatusOr<core::Connection::ReadOutcome> out) mutable {
                if (!out.ok()) return done(out.status(), "");
                fanin::v1::ReadResponse r;
                r.set_data(std::move(out->data));
                r.set_read_closed(out->read_closed);
                done(absl::OkStatus(), r.SerializeAsString());
              });
}

void FaninService::LocalList(const fanin::v1::ListConnectionsRequest& req,
                             uint64_t as_of_seq, ClusterRouter::Reply done) {
  absl::StatusOr<ListQuery> query = CheckList(req, core_->listener_names());
  if (!query.ok()) return done(query.status(), "");
  core_->List(query->listener, query->after_id, query->limit,
              [done = std::move(done), as_of_seq](
                  absl::StatusOr<core::FaninCore::ListPage> page) mutable {
                if (!page.ok()) return done(page.status(), "");
                fanin::v1::ListConnectionsResponse r;
                r.set_as_of_seq(as_of_seq);
                for (auto& c : page->connections) {
                  *r.add_connections() = std::move(c);
                }
                if (page->more && r.connections_size() > 0) {
                  r.set_next_page_token(PageTokenAfter(
                      r.connections(r.connections_size() - 1).connection_id()));
                }
                done(absl::OkStatus(), r.SerializeAsString());
              });
}

void FaninService::ExecuteLocal(absl::string_view method, std::string request,
                                ClusterRouter::Reply done) {
  absl::Status s;
  if (method == "Write") {
    fanin::v1::WriteRequest req;
    s = ParseRequest(request, method, &req);
    if (s.ok()) s = CheckWrite(req);
    if (s.ok()) return LocalWrite(std::move(req), std::move(done));
  } else if (method == "CloseConnection") {
    fanin::v1::CloseConnectionRequest req;
    s = ParseRequest(request, method, &req);
    if (s.ok()) s = CheckConnectionId(req.connection_id(), method);
    if (s.ok()) return LocalClose(req, std::move(done));
  } else if (method == "Read") {
    fanin::v1::ReadRequest req;
    s = ParseRequest(request, method, &req);
    if (s.ok()) s = CheckConnectionId(req.connection_id(), method);
    if (s.ok()) return LocalRead(req, std::move(done));
  } else if (method == "ListLocal") {
    fanin::v1::ListConnectionsRequest req;
    s = ParseRequest(request, method, &req);
    if (s.ok()) return LocalList(req, hub_->head_seq(), std::move(done));
  } else {
    s = absl::UnimplementedError(
        absl::StrCat("no routed method named ", base::QuoteBounded(method)));
  }
  done(s, "");
}

grpc::ServerUnaryReactor* FaninService::Write(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  fanin::v1::WriteRequest req;
  grpc::Status s = Admit(context, Access::kWrite, "Write", request, &req);
  if (s.ok()) s = ToGrpc(CheckWrite(req));
  if (!s.ok()) return Finished(s);
  auto [reactor, reply] = NewReply(response);
  if (IsRemote(req.connection_id())) {
    options_.cluster->Call("Write", req.connection_id(), BytesOf(*request),
                           std::move(reply));
  } else {
    LocalWrite(std::move(req), std::move(reply));
  }
  return reactor;
}

grpc::ServerUnaryReactor* FaninService::CloseConnection(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  fanin::v1::CloseConnectionRequest req;
  grpc::Status s =
      Admit(context, Access::kWrite, "CloseConnection", request, &req);
  if (s.ok())
    s = ToGrpc(CheckConnectionId(req.connection_id(), "CloseConnection"));
  if (!s.ok()) return Finished(s);
  auto [reactor, reply] = NewReply(response);
  if (IsRemote(req.connection_id())) {
    options_.cluster->Call("CloseConnection", req.connection_id(),
                           BytesOf(*request), std::move(reply));
  } else {
    LocalClose(req, std::move(reply));
  }
  return reactor;
}

grpc::ServerUnaryReactor* FaninService::ListConnections(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  fanin::v1::ListConnectionsRequest req;
  grpc::Status s =
      Admit(context, Access::kRead, "ListConnections", request, &req);
  if (s.ok()) s = ToGrpc(CheckList(req, FilterListenerNames()).status());
  if (s.ok() && !req.node().empty() && options_.cluster == nullptr) {
    s = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                     "node: this server is not in cluster mode (its "
                     "connections have no node); drop the node filter");
  }
  if (!s.ok()) return Finished(s);
  auto [reactor, reply] = NewReply(response);
  const uint64_t as_of_seq = hub_->head_seq();
  if (options_.cluster != nullptr) {
    options_.cluster->List(
        req, as_of_seq,
        [reply = std::move(reply)](
            absl::StatusOr<fanin::v1::ListConnectionsResponse> r) mutable {
          if (!r.ok()) return reply(r.status(), "");
          reply(absl::OkStatus(), r->SerializeAsString());
        });
  } else {
    LocalList(req, as_of_seq, std::move(reply));
  }
  return reactor;
}

grpc::ServerUnaryReactor* FaninService::GetStats(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  fanin::v1::GetStatsRequest req;
  grpc::Status s = Admit(context, Access::kRead, "GetStats", request, &req);
  if (!s.ok()) return Finished(s);
  core::CoreStats c = core_->GetStats();
  fanout::EventHub::Stats h = hub_->GetStats();
  fanin::v1::GetStatsResponse r;
  r.set_poller(c.poller);
  r.set_connections_open(c.connections_open);
  r.set_connections_accepted(c.connections_accepted);
  r.set_connections_rejected(c.connections_rejected);
  r.set_events_published(h.events_published);
  r.set_bytes_received(c.bytes_received);
  r.set_bytes_sent(c.bytes_sent);
  r.set_subscribers(h.subscribers);
  r.set_events_lost(h.events_lost);
  r.set_head_seq(h.head_seq);
  r.set_oldest_seq(h.oldest_seq);
  r.set_tls_handshakes(c.tls_handshakes);
  r.set_tls_handshake_failures(c.tls_handshake_failures);
  r.set_tls_handshake_timeouts(c.tls_failed_timeout);
  r.set_tls_client_cert_failures(c.tls_failed_client_cert);
  r.set_proxy_headers(c.proxy_headers);
  r.set_proxy_header_failures(c.proxy_header_failures);
  r.set_proxy_header_timeouts(c.proxy_failed_timeout);
  r.set_tls_reloads(c.tls_reloads);
  r.set_tls_reload_failures(c.tls_reload_failures);
  if (options_.cluster != nullptr) options_.cluster->FillStats(&r);
  AddGroupStats(groups_.GetStats(), &r);
  SetResponse(r, response);
  return Finished(grpc::Status::OK);
}

grpc::ServerUnaryReactor* FaninService::ListNodes(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  fanin::v1::ListNodesRequest req;
  grpc::Status s = Admit(context, Access::kRead, "ListNodes", request, &req);
  if (!s.ok()) return Finished(s);
  fanin::v1::ListNodesResponse r;
  if (options_.cluster != nullptr) {
    r = options_.cluster->ListNodes();
  } else {
    // Standalone: this server, with no name.
    fanin::v1::NodeInfo* self = r.add_nodes();
    {
      absl::MutexLock lock(&mu_);
      self->set_grpc_address(grpc_address_);
    }
    self->set_state(draining_ ? fanin::v1::NODE_STATE_DRAINING
                              : fanin::v1::NODE_STATE_UP);
    self->set_connections_open(core_->GetStats().connections_open);
    self->set_last_seen_unix_nano(absl::GetCurrentTimeNanos());
    for (const std::string& l : core_->listener_names()) self->add_listeners(l);
  }
  SetResponse(r, response);
  return Finished(grpc::Status::OK);
}

grpc::ServerUnaryReactor* FaninService::ListGroups(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  fanin::v1::ListGroupsRequest req;
  grpc::Status s = Admit(context, Access::kRead, "ListGroups", request, &req);
  if (!s.ok()) return Finished(s);
  fanin::v1::ListGroupsResponse r;
  for (auto& g : groups_.List(req.group())) *r.add_groups() = std::move(g);
  if (!req.group().empty() && r.groups_size() == 0) {
    return Finished(
        grpc::Status(grpc::StatusCode::NOT_FOUND,
                     absl::StrCat("ListGroups: no group named ",
                                  base::QuoteBounded(req.group()))));
  }
  SetResponse(r, response);
  return Finished(grpc::Status::OK);
}

grpc::ServerUnaryReactor* FaninService::Read(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  fanin::v1::ReadRequest req;
  grpc::Status s = Admit(context, Access::kRead, "Read", request, &req);
  if (s.ok()) s = ToGrpc(CheckConnectionId(req.connection_id(), "Read"));
  if (!s.ok()) return Finished(s);
  auto [reactor, reply] = NewReply(response);
  if (IsRemote(req.connection_id())) {
    options_.cluster->Call("Read", req.connection_id(), BytesOf(*request),
                           std::move(reply));
  } else {
    LocalRead(req, std::move(reply));
  }
  return reactor;
}

void FaninService::SetGrpcAddress(std::string address) {
  absl::MutexLock lock(&mu_);
  grpc_address_ = std::move(address);
}

}  // namespace fanin::grpc_api
