#include "server/cluster/cluster_node.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "server/base/log.h"
#include "server/base/text.h"
#include "server/cluster/batch.h"
#include "server/fanout/event_codec.h"
#include "server/grpc/requests.h"

namespace fanin::cluster {
namespace {

constexpr char kMethodHeader[] = "Fanin-Method";
constexpr char kCodeHeader[] = "Fanin-Code";
constexpr char kMessageHeader[] = "Fanin-Message";
// On a message reporting a node lost: its incarnation.
constexpr char kLostHeader[] = "Fanin-Lost";
// Messages the consumer replays into a fresh node's history.
constexpr uint64_t kPreloadMessages = 4096;
constexpr uint32_t kMaxListeners = 64;

// Lines the broker's state can repeat at a high rate: one per second per
// call site.
void LogLimited(base::LogRateLimiter& limiter, base::LogLevel level,
                absl::string_view message,
                std::initializer_list<base::LogField> fields) {
  if (limiter.Allow()) base::Log(level, message, fields);
}

int64_t Millis(absl::Duration d) { return absl::ToInt64Milliseconds(d); }

fanin::v1::NodeInfo ParseRecord(kvEntry* e) {
  fanin::v1::NodeInfo info;
  info.ParseFromArray(kvEntry_Value(e), kvEntry_ValueLen(e));
  return info;
}

bool Live(const fanin::v1::NodeInfo& info) {
  return info.state() == fanin::v1::NODE_STATE_UP ||
         info.state() == fanin::v1::NODE_STATE_DRAINING;
}

}  // namespace

ClusterNode::ClusterNode(ClusterOptions options)
    : options_(std::move(options)),
      stream_name_(absl::StrCat(options_.cluster_name, "_events")),
      events_subject_(absl::StrCat(options_.cluster_name, ".ev.")) {
  link_->node = options_.node_name;
}

absl::StatusOr<std::unique_ptr<ClusterNode>> ClusterNode::Join(
    ClusterOptions options) {
  auto node = absl::WrapUnique(new ClusterNode(std::move(options)));
  absl::Status s = node->Connect();
  if (!s.ok()) return s;
  // A JetStream cluster that is still electing its leader answers "not
  // available" for a while: retry within the start-up bound.
  const absl::Time deadline = absl::Now() + node->options_.connect_timeout;
  s = node->EnsureStreamAndBuckets();
  while (!s.ok() && absl::Now() < deadline &&
         s.code() != absl::StatusCode::kInvalidArgument) {
    absl::SleepFor(absl::Milliseconds(200));
    s = node->EnsureStreamAndBuckets();
  }
  if (s.ok()) s = node->ClaimName();
  if (!s.ok()) return s;
  return node;
}

ClusterNode::~ClusterNode() { Stop(absl::Seconds(2)); }

absl::Status ClusterNode::Connect() {
  natsOptions* raw = nullptr;
  if (natsOptions_Create(&raw) != NATS_OK) {
    return absl::InternalError("natsOptions_Create failed");
  }
  NatsPtr<natsOptions> opts(raw);
  std::vector<const char*> servers;
  for (const std::string& s : options_.servers) servers.push_back(s.c_str());
  natsStatus st = natsOptions_SetServers(opts.get(), servers.data(),
                                         static_cast<int>(servers.size()));
  if (st == NATS_OK) {
    st = natsOptions_SetTimeout(opts.get(), Millis(options_.connect_timeout));
  }
  if (st == NATS_OK) st = natsOptions_SetMaxReconnect(opts.get(), -1);
  if (st == NATS_OK) st = natsOptions_SetReconnectWait(opts.get(), 250);
  // Send each publish at once: libnats otherwise lets its flusher wait up to
  // 1 ms to batch them, which a routed request and its reply each paid
  // (cross-node Write 3.46x the NATS round trip, 1.63x with this; ingest and
  // event latency unchanged: docs/BENCHMARKS.md).
  if (st == NATS_OK) st = natsOptions_SetSendAsap(opts.get(), true);
  if (st == NATS_OK) {
    st = natsOptions_SetDisconnectedCB(opts.get(), &ClusterNode::OnDisconnected,
                                       link_);
  }
  if (st == NATS_OK) {
    st = natsOptions_SetReconnectedCB(opts.get(), &ClusterNode::OnReconnected,
                                      link_);
  }
  if (st == NATS_OK) {
    st = natsOptions_SetName(
        opts.get(), absl::StrCat("fanin ", options_.node_name).c_str());
  }
  if (st == NATS_OK && !options_.token.empty()) {
    st = natsOptions_SetToken(opts.get(), options_.token.c_str());
  }
  if (st == NATS_OK && !options_.user.empty()) {
    st = natsOptions_SetUserInfo(opts.get(), options_.user.c_str(),
                                 options_.password.c_str());
  }
  if (st == NATS_OK && !options_.ca_file.empty()) {
    st = natsOptions_LoadCATrustedCertificates(opts.get(),
                                               options_.ca_file.c_str());
    if (st == NATS_OK) st = natsOptions_SetSecure(opts.get(), true);
  }
  if (st != NATS_OK) return FromNats(st, "NATS options");
  natsConnection* conn = nullptr;
  st = natsConnection_Connect(&conn, opts.get());
  if (st != NATS_OK) {
    return absl::UnavailableError(absl::StrCat(
        "cannot reach the NATS broker at ",
        absl::StrJoin(options_.servers, ","), " within ",
        absl::FormatDuration(options_.connect_timeout), ": ",
        natsStatus_GetText(st), " (is nats-server running with -js?)"));
  }
  nc_.reset(conn);
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = Millis(options_.request_timeout);
  jsCtx* js = nullptr;
  st = natsConnection_JetStream(&js, nc_.get(), &jo);
  if (st != NATS_OK) return FromNats(st, "JetStream context");
  js_.reset(js);
  return absl::OkStatus();
}

absl::Status ClusterNode::EnsureStreamAndBuckets() {
  jsErrCode jerr = static_cast<jsErrCode>(0);
  jsStreamInfo* si = nullptr;
  natsStatus st =
      js_GetStreamInfo(&si, js_.get(), stream_name_.c_str(), nullptr, &jerr);
  if (st == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    const std::string subject = events_subject_ + ">";
    const char* subjects[] = {subject.c_str()};
    cfg.Name = stream_name_.c_str();
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = options_.memory_storage ? js_MemoryStorage : js_FileStorage;
    cfg.Replicas = options_.replicas;
    cfg.MaxBytes = options_.stream_max_bytes;
    cfg.MaxAge = absl::ToInt64Nanoseconds(options_.stream_max_age);
    cfg.Duplicates = absl::ToInt64Nanoseconds(absl::Minutes(2));
    cfg.AllowDirect = true;
    jerr = static_cast<jsErrCode>(0);
    st = js_AddStream(&si, js_.get(), &cfg, nullptr, &jerr);
    if (st != NATS_OK && jerr == JSStreamNameExistErr) {
      st = js_GetStreamInfo(&si, js_.get(), stream_name_.c_str(), nullptr,
                            &jerr);
    }
  }
  if (st != NATS_OK) {
    return FromNats(st, absl::StrCat("JetStream stream ", stream_name_), jerr);
  }
  NatsPtr<jsStreamInfo> info(si);
  epoch_ = absl::StrFormat("%016x", static_cast<uint64_t>(info->Created));

  auto bucket = [&](const std::string& name, NatsPtr<kvStore>* out) {
    kvStore* kv = nullptr;
    natsStatus s = js_KeyValue(&kv, js_.get(), name.c_str());
    if (s != NATS_OK) {
      kvConfig kc;
      kvConfig_Init(&kc);
      kc.Bucket = name.c_str();
      kc.History = 1;
      kc.StorageType =
          options_.memory_storage ? js_MemoryStorage : js_FileStorage;
      kc.Replicas = options_.replicas;
      s = js_CreateKeyValue(&kv, js_.get(), &kc);
      if (s != NATS_OK) s = js_KeyValue(&kv, js_.get(), name.c_str());
    }
    if (s != NATS_OK) return FromNats(s, absl::StrCat("KV bucket ", name));
    out->reset(kv);
    return absl::OkStatus();
  };
  absl::Status s =
      bucket(absl::StrCat(options_.cluster_name, "_nodes"), &nodes_kv_);
  if (s.ok()) s = bucket(absl::StrCat(options_.cluster_name, "_ids"), &ids_kv_);
  if (s.ok()) {
    s = bucket(absl::StrCat(options_.cluster_name, "_groups"), &groups_kv_);
  }
  return s;
}

absl::Status ClusterNode::ClaimName() {
  const std::string& name = options_.node_name;
  kvEntry* e = nullptr;
  uint64_t revision = 0;
  if (kvStore_Get(&e, nodes_kv_.get(), name.c_str()) == NATS_OK) {
    NatsPtr<kvEntry> entry(e);
    revision = kvEntry_Revision(e);
    fanin::v1::NodeInfo info = ParseRecord(e);
    const absl::Duration since =
        absl::Now() - absl::FromUnixNanos(info.last_seen_unix_nano());
    // Our own record (rejoining after a fence) is ours to take over.
    const bool ours =
        incarnation_.load() != 0 && info.incarnation() == incarnation_.load();
    if (Live(info) && since < options_.node_timeout && !ours) {
      return absl::AlreadyExistsError(absl::StrCat(
          "node name ", base::QuoteBounded(name),
          " is in use by a live node (incarnation ", info.incarnation(),
          ", gRPC ", info.grpc_address(), ", last seen ",
          absl::FormatDuration(absl::Trunc(since, absl::Milliseconds(1))),
          " ago); pick another --node_name or stop that node"));
    }
  }
  uint64_t rev = 0;
  natsStatus st =
      kvStore_PutString(&rev, ids_kv_.get(), "incarnation", name.c_str());
  if (st != NATS_OK) return FromNats(st, "taking an incarnation");
  incarnation_ = rev;
  fanin::v1::NodeInfo info;
  info.set_name(name);
  info.set_state(fanin::v1::NODE_STATE_UP);
  info.set_incarnation(incarnation_);
  info.set_last_seen_unix_nano(absl::GetCurrentTimeNanos());
  const std::string value = info.SerializeAsString();
  // Compare-and-set, so two nodes starting with one name cannot both win.
  st = revision == 0
           ? kvStore_Create(&rev, nodes_kv_.get(), name.c_str(), value.data(),
                            static_cast<int>(value.size()))
           : kvStore_Update(&rev, nodes_kv_.get(), name.c_str(), value.data(),
                            static_cast<int>(value.size()), revision);
  if (st != NATS_OK) {
    return absl::AlreadyExistsError(
        absl::StrCat("node name ", base::QuoteBounded(name),
                     " was just claimed by another node starting at the same "
                     "time; pick another --node_name"));
  }
  absl::MutexLock lock(&record_mu_);
  record_revision_guarded_ = rev;
  return absl::OkStatus();
}

absl::StatusOr<std::pair<uint64_t, uint64_t>> ClusterNode::MessageRange(
    uint64_t stream_seq) {
  natsMsg* raw = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus st = js_GetMsg(&raw, js_.get(), stream_name_.c_str(), stream_seq,
                            nullptr, &jerr);
  if (st != NATS_OK) {
    return FromNats(st, absl::StrCat("reading stream message ", stream_seq),
                    jerr);
  }
  NatsPtr<natsMsg> msg(raw);
  const std::optional<BatchHeaders> h = ReadBatchHeaders(msg.get());
  if (!h.has_value() || h->base == 0) {
    return absl::DataLossError(absl::StrCat(
        "stream ", stream_name_, " message ", stream_seq,
        " has no Fanin-Base/Fanin-Count headers: not written by fanin"));
  }
  return std::make_pair(h->base, h->count);
}

absl::StatusOr<ClusterNode::Tail> ClusterNode::ReadTail() {
  jsStreamInfo* si = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus st =
      js_GetStreamInfo(&si, js_.get(), stream_name_.c_str(), nullptr, &jerr);
  if (st != NATS_OK) return FromNats(st, "stream info", jerr);
  NatsPtr<jsStreamInfo> info(si);
  Tail t;
  t.stream_seq = info->State.LastSeq;
  if (t.stream_seq == 0) return t;
  auto range = MessageRange(t.stream_seq);
  if (!range.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot continue the cluster's sequence: ", range.status().message(),
        " (every message expired while no node ran? delete stream ",
        stream_name_, " to start a new epoch)"));
  }
  t.next_seq = range->first + range->second;
  return t;
}

absl::StatusOr<bool> ClusterNode::CatchUpTail(
    Tail from, const std::vector<std::string>& ids) {
  jsStreamInfo* si = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus st =
      js_GetStreamInfo(&si, js_.get(), stream_name_.c_str(), nullptr, &jerr);
  if (st != NATS_OK) return FromNats(st, "stream info", jerr);
  NatsPtr<jsStreamInfo> info(si);
  const uint64_t last = info->State.LastSeq;
  bool mine = false;
  Tail t = from;
  for (uint64_t seq = from.stream_seq + 1; seq <= last; ++seq) {
    natsMsg* raw = nullptr;
    st = js_GetMsg(&raw, js_.get(), stream_name_.c_str(), seq, nullptr, &jerr);
    if (st != NATS_OK) return FromNats(st, "reading the stream's tail", jerr);
    NatsPtr<natsMsg> msg(raw);
    const std::optional<BatchHeaders> h = ReadBatchHeaders(msg.get());
    if (!h.has_value()) {
      return absl::DataLossError(
          absl::StrCat("stream message ", seq, " was not written by fanin"));
    }
    const std::string id = Header(msg.get(), "Nats-Msg-Id");
    if (std::find(ids.begin(), ids.end(), id) != ids.end()) mine = true;
    if (Header(msg.get(), kLostHeader) == absl::StrCat(incarnation_.load())) {
      // Reported lost while this node was cut off: this batch must not be
      // published under the old incarnation.
      fenced_.store(true, std::memory_order_release);
      fence_requested_.store(true, std::memory_order_release);
    }
    t = {seq, h->base + h->count};
  }
  AdvanceTail(t);
  return mine;
}

void ClusterNode::AdvanceTail(Tail t) {
  absl::MutexLock lock(&tail_mu_);
  if (t.stream_seq > tail_.stream_seq) {
    tail_ = t;
    tail_cv_.SignalAll();
  }
}

absl::Status ClusterNode::Start(Local local) {
  local_ = std::move(local);
  {
    absl::MutexLock lock(&listeners_mu_);
    for (const std::string& n : local_.listeners) {
      if (listener_index_.contains(n)) continue;
      listener_index_[n] = static_cast<uint32_t>(listener_names_.size());
      listener_names_.push_back(n);
    }
  }
  absl::StatusOr<Tail> tail = ReadTail();
  if (!tail.ok()) return tail.status();
  if (tail->stream_seq == 0) {
    // A new stream: one empty genesis message (deduplicated by its id, so
    // nodes starting together store one) gives every later publish a last
    // sequence to expect.
    natsMsg* raw = nullptr;
    natsMsg_Create(&raw, (events_subject_ + "genesis").c_str(), nullptr,
                   nullptr, 0);
    NatsPtr<natsMsg> msg(raw);
    SetBatchHeaders(msg.get(), /*base=*/1, /*count=*/0);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    const std::string id = absl::StrCat("genesis-", epoch_);
    po.MsgId = id.c_str();
    jsPubAck* ack = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    natsStatus st = js_PublishMsg(&ack, js_.get(), msg.get(), &po, &jerr);
    if (st != NATS_OK) return FromNats(st, "publishing genesis", jerr);
    NatsPtr<jsPubAck> a(ack);
    tail = ReadTail();
    if (!tail.ok()) return tail.status();
  }
  // Replay the last kPreloadMessages messages into this node's history, so
  // a subscriber resuming here finds what it found on another node.
  jsStreamInfo* si = nullptr;
  natsStatus st =
      js_GetStreamInfo(&si, js_.get(), stream_name_.c_str(), nullptr, nullptr);
  if (st != NATS_OK) return FromNats(st, "stream info");
  NatsPtr<jsStreamInfo> info(si);
  uint64_t start = std::max<uint64_t>(
      info->State.FirstSeq, tail->stream_seq >= kPreloadMessages
                                ? tail->stream_seq - kPreloadMessages + 1
                                : 1);
  uint64_t first_seq = 0;
  for (; start <= tail->stream_seq; ++start) {
    auto range = MessageRange(start);
    if (range.ok()) {
      first_seq = range->first;
      break;
    }
    if (!absl::IsNotFound(range.status()) &&
        range.status().code() != absl::StatusCode::kInternal) {
      return range.status();
    }
  }
  if (first_seq == 0) first_seq = tail->next_seq;
  {
    absl::MutexLock lock(&tail_mu_);
    tail_ = *tail;
    oldest_seq_ = first_seq;
  }
  if (!local_.hub->StartAfter(first_seq - 1)) {
    return absl::InternalError("the hub took events before the cluster joined");
  }

  // Routed requests, and the replies to ours.
  const std::string rpc_subject =
      absl::StrCat(options_.cluster_name, ".rpc.", incarnation_.load());
  natsSubscription* sub = nullptr;
  st = natsConnection_Subscribe(&sub, nc_.get(), rpc_subject.c_str(),
                                &ClusterNode::OnRequest, this);
  if (st != NATS_OK) return FromNats(st, "subscribing to routed requests");
  rpc_sub_.reset(sub);
  natsInbox* inbox = nullptr;
  natsInbox_Create(&inbox);
  reply_prefix_ = absl::StrCat(inbox, ".");
  natsInbox_Destroy(inbox);
  st = natsConnection_Subscribe(&sub, nc_.get(), (reply_prefix_ + "*").c_str(),
                                &ClusterNode::OnReply, this);
  if (st != NATS_OK) return FromNats(st, "subscribing to replies");
  reply_sub_.reset(sub);
  // Group members' progress (best effort: a lost one only makes a handover
  // read back further).
  st = natsConnection_Subscribe(&sub, nc_.get(), ProgressSubject().c_str(),
                                &ClusterNode::OnGroupProgress, this);
  if (st != NATS_OK) return FromNats(st, "subscribing to group progress");
  progress_sub_.reset(sub);
  // Events from here on are live; those before were replayed.
  live_from_.store(tail->next_seq, std::memory_order_release);

  started_ = true;
  PutRecord(fanin::v1::NODE_STATE_UP);
  RefreshMembership();
  SeedTracker();
  consume_from_ = start;
  consumer_ = std::thread([this] { ConsumerLoop(); });
  publisher_ = std::thread([this] { PublisherLoop(); });
  heartbeat_ = std::thread([this] { HeartbeatLoop(); });
  replier_ = std::thread([this] { ReplierLoop(); });
  fetcher_ = std::thread([this] { FetcherLoop(); });
  PublishNodeChange(fanin::v1::NODE_STATE_JOINED, "");
  base::Log(base::LogLevel::kInfo, "cluster joined",
            {{"node", options_.node_name},
             {"incarnation", incarnation_.load()},
             {"stream", stream_name_},
             {"epoch", epoch_},
             {"head_seq", tail->next_seq - 1}});
  return absl::OkStatus();
}

void ClusterNode::BeginLeave() {
  if (!started_ || leaving_.exchange(true)) return;
  PutRecord(fanin::v1::NODE_STATE_DRAINING);
  PublishNodeChange(fanin::v1::NODE_STATE_DRAINING, "");
}

void ClusterNode::Stop(absl::Duration flush_timeout) {
  if (stopped_.exchange(true)) return;
  if (started_) {
    PublishNodeChange(fanin::v1::NODE_STATE_LEFT, "");
    const absl::Time deadline = absl::Now() + flush_timeout;
    {
      absl::MutexLock lock(&mu_);
      while (!pending_.empty() && absl::Now() < deadline) {
        pending_cv_.WaitWithDeadline(&mu_, deadline);
      }
    }
    // And read back, so this node's streams deliver its last events.
    absl::MutexLock lock(&tail_mu_);
    while (local_.hub->head_seq() + 1 < tail_.next_seq &&
           absl::Now() < deadline) {
      tail_cv_.WaitWithDeadline(
          &tail_mu_, std::min(deadline, absl::Now() + absl::Milliseconds(5)));
    }
  }
  stop_ = true;
  {
    absl::MutexLock lock(&mu_);
    pending_cv_.SignalAll();
  }
  {
    absl::MutexLock lock(&replies_mu_);
    replies_cv_.SignalAll();
  }
  {
    absl::MutexLock lock(&fetch_mu_);
    fetch_cv_.SignalAll();
  }
  {
    absl::MutexLock lock(&tail_mu_);
    tail_cv_.SignalAll();
  }
  for (std::thread* t :
       {&publisher_, &consumer_, &heartbeat_, &replier_, &fetcher_}) {
    if (t->joinable()) t->join();
  }
  {
    absl::MutexLock lock(&fetch_mu_);
    for (FetchJob& job : fetches_) {
      job.done(absl::UnavailableError("fanin node is shutting down"));
    }
    fetches_.clear();
  }
  if (started_) PutRecord(fanin::v1::NODE_STATE_LEFT);
  rpc_sub_.reset();
  reply_sub_.reset();
  progress_sub_.reset();
  {
    absl::MutexLock lock(&calls_mu_);
    for (auto& [id, call] : calls_) {
      call.done(absl::UnavailableError("fanin node is shutting down"), "");
    }
    calls_.clear();
  }
  nodes_kv_.reset();
  ids_kv_.reset();
  groups_kv_.reset();
  js_.reset();
  link_->connected.store(false);  // closing on purpose: no warning
  if (nc_ != nullptr) natsConnection_Close(nc_.get());
  nc_.reset();
}

// ---- Publishing ----

uint64_t ClusterNode::Publish(std::shared_ptr<fanout::StoredEvent> event,
                              Deferred*) {
  // Fenced: this incarnation was reported lost; nothing more is published
  // under it (its connections are being closed without events).
  if (fenced_.load(std::memory_order_acquire)) return 0;
  bool paused_now = false;
  {
    absl::MutexLock lock(&mu_);
    pending_bytes_ += event->body.size() + 5;
    pending_.push_back(std::move(event));
    if (pending_.size() == 1) pending_cv_.SignalAll();
    if (pending_bytes_ > options_.buffer_bytes &&
        !paused_.load(std::memory_order_relaxed)) {
      paused_.store(true, std::memory_order_release);
      paused_now = true;
    }
  }
  if (paused_now) {
    base::Log(base::LogLevel::kWarning, "cluster buffer full, reading paused",
              {{"buffer_bytes", options_.buffer_bytes}});
  }
  return 0;
}

void ClusterNode::SetPauseObserver(absl::AnyInvocable<void()> observer) {
  absl::MutexLock lock(&mu_);
  pause_observer_ = std::move(observer);
}

void ClusterNode::PublisherLoop() {
  std::string payload;
  while (true) {
    size_t take = 0;
    uint64_t count = 0;
    uint64_t generation = 0;
    payload.clear();
    {
      absl::MutexLock lock(&mu_);
      while (pending_.empty() && !Stopping()) pending_cv_.Wait(&mu_);
      if (pending_.empty()) return;
      for (const auto& e : pending_) {
        if (take > 0 &&
            payload.size() + e->body.size() + 5 > options_.max_message_bytes) {
          break;
        }
        AppendBody(e->body, &payload);
        ++take;
      }
      count = take;
      generation = pending_generation_;
    }
    bool dropped = false;
    // Publish until stored: expected-last-sequence keeps every node's batches
    // contiguous; the message id makes a retry after a lost ack harmless.
    int attempt = 0;
    absl::Duration backoff = absl::Milliseconds(50);
    std::vector<std::string> ids;  // every message id this batch was sent as
    // The expectation is kept across retries after a timeout: the attempt
    // that timed out may be stored meanwhile (the consumer then moves the
    // tail past it), and only the same id with the same expectation is then
    // recognised as a duplicate. It is read again only after a conflict.
    std::optional<Tail> expect;
    while (true) {
      if (!expect.has_value()) {
        absl::MutexLock lock(&tail_mu_);
        expect = tail_;
      }
      const Tail tail = *expect;
      if (fenced_.load(std::memory_order_acquire)) {
        dropped = true;  // the old incarnation publishes nothing more
        break;
      }
      natsMsg* raw = nullptr;
      natsMsg_Create(&raw, (events_subject_ + options_.node_name).c_str(),
                     nullptr, payload.data(), static_cast<int>(payload.size()));
      NatsPtr<natsMsg> msg(raw);
      SetBatchHeaders(msg.get(), tail.next_seq, count);
      const std::string id =
          absl::StrCat(options_.node_name, "-", incarnation_.load(), "-",
                       batch_no_.load(), "-", tail.stream_seq);
      if (ids.empty() || ids.back() != id) ids.push_back(id);
      jsPubOptions po;
      jsPubOptions_Init(&po);
      po.MsgId = id.c_str();
      po.ExpectLastSeq = tail.stream_seq;
      po.MaxWait = Millis(options_.request_timeout);
      jsPubAck* ack = nullptr;
      jsErrCode jerr = static_cast<jsErrCode>(0);
      natsStatus st = js_PublishMsg(&ack, js_.get(), msg.get(), &po, &jerr);
      if (st == NATS_OK) {
        NatsPtr<jsPubAck> a(ack);
        AdvanceTail({a->Sequence, tail.next_seq + count});
        break;
      }
      if (jerr == JSStreamWrongLastSequenceErr) {
        // Messages were stored after the one expected: another node's, or
        // this very batch from an attempt whose answer was lost (JetStream
        // checks the expected sequence before the duplicate window). Read
        // them: if one carries an id this batch used, it is stored.
        absl::StatusOr<bool> mine = CatchUpTail(tail, ids);
        if (mine.ok() && *mine) break;
        expect.reset();
        if (mine.ok())
          publish_conflicts_.fetch_add(1, std::memory_order_relaxed);
        if (!mine.ok()) absl::SleepFor(backoff);
        if (Stopping() && attempt++ > 3) return;
        continue;
      }
      // The broker is away or slow: keep the batch and retry (same id, same
      // expectation: if the first attempt was stored after all, JetStream
      // answers with it as a duplicate).
      publish_retries_.fetch_add(1, std::memory_order_relaxed);
      if (Stopping() && attempt++ > 3) return;
      static base::LogRateLimiter limiter1(1);
      LogLimited(limiter1, base::LogLevel::kWarning,
                 "cluster publish failed, retrying",
                 {{"error", FromNats(st, "publish", jerr).ToString()}});
      absl::SleepFor(backoff);
      backoff = std::min(backoff * 2, absl::Seconds(1));
    }
    batch_no_.fetch_add(1, std::memory_order_relaxed);
    if (!dropped) {
      publish_batches_.fetch_add(1, std::memory_order_relaxed);
      published_events_.fetch_add(count, std::memory_order_relaxed);
    }
    absl::AnyInvocable<void()>* observer = nullptr;
    {
      absl::MutexLock lock(&mu_);
      // A fence emptied the buffer meanwhile: these events are gone already.
      if (generation != pending_generation_) take = 0;
      for (size_t i = 0; i < take; ++i) {
        pending_bytes_ -= pending_.front()->body.size() + 5;
        pending_.pop_front();
      }
      if (pending_.empty()) pending_cv_.SignalAll();
      if (paused_.load(std::memory_order_relaxed) &&
          pending_bytes_ <= options_.buffer_bytes / 2) {
        paused_.store(false, std::memory_order_release);
        if (pause_observer_) observer = &pause_observer_;
      }
    }
    if (observer != nullptr) (*observer)();
  }
}

// ---- Consuming ----

uint32_t ClusterNode::ListenerIndex(absl::string_view name) {
  absl::MutexLock lock(&listeners_mu_);
  auto it = listener_index_.find(name);
  if (it != listener_index_.end()) return it->second;
  if (listener_names_.size() >= kMaxListeners) return kMaxListeners - 1;
  const auto index = static_cast<uint32_t>(listener_names_.size());
  listener_names_.emplace_back(name);
  listener_index_.emplace(std::string(name), index);
  return index;
}

void ClusterNode::ConsumerLoop() {
  const uint64_t start_seq = consume_from_;
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = stream_name_.c_str();
  so.Ordered = true;
  so.Config.DeliverPolicy = js_DeliverByStartSequence;
  so.Config.OptStartSeq = start_seq;
  natsSubscription* raw = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus st = js_SubscribeSync(
      &raw, js_.get(), (events_subject_ + ">").c_str(), nullptr, &so, &jerr);
  while (st != NATS_OK && !Stopping()) {
    static base::LogRateLimiter limiter2(1);
    LogLimited(limiter2, base::LogLevel::kWarning,
               "cluster consumer cannot subscribe, retrying",
               {{"error", FromNats(st, "subscribe", jerr).ToString()}});
    absl::SleepFor(absl::Milliseconds(200));
    st = js_SubscribeSync(&raw, js_.get(), (events_subject_ + ">").c_str(),
                          nullptr, &so, &jerr);
  }
  if (st != NATS_OK) return;
  NatsPtr<natsSubscription> sub(raw);
  natsSubscription_SetPendingLimits(sub.get(), -1, 256 << 20);
  fanout::EventHub::WakeList wakes;
  std::string body;
  auto index = [this](absl::string_view name) { return ListenerIndex(name); };
  while (!Stopping()) {
    // A lossless subscriber of this node that is full holds back this
    // node's reading of the stream (not ingestion: the stream keeps it).
    if (local_.hub->AnyPaused()) {
      absl::SleepFor(absl::Milliseconds(2));
      continue;
    }
    natsMsg* m = nullptr;
    st = natsSubscription_NextMsg(&m, sub.get(), 200);
    if (st == NATS_TIMEOUT) continue;
    if (st != NATS_OK) {
      static base::LogRateLimiter limiter3(1);
      LogLimited(limiter3, base::LogLevel::kWarning, "cluster consumer error",
                 {{"error", FromNats(st, "next message").ToString()}});
      absl::SleepFor(absl::Milliseconds(50));
      continue;
    }
    NatsPtr<natsMsg> msg(m);
    jsMsgMetaData* meta_raw = nullptr;
    if (natsMsg_GetMetaData(&meta_raw, msg.get()) != NATS_OK) continue;
    NatsPtr<jsMsgMetaData> meta(meta_raw);
    const uint64_t stream_seq = meta->Sequence.Stream;
    const std::optional<BatchHeaders> h = ReadBatchHeaders(msg.get());
    if (!h.has_value()) continue;  // not ours
    const uint64_t base = h->base;
    const uint64_t count = h->count;
    AdvanceTail({stream_seq, base + count});
    const uint64_t head = local_.hub->head_seq();
    if (base + count <= head + 1) continue;  // seen (or empty)
    if (base > head + 1) {
      static base::LogRateLimiter limiter4(1);
      LogLimited(limiter4, base::LogLevel::kError, "cluster stream has a hole",
                 {{"expected_seq", head + 1}, {"message_base", base}});
    }
    BatchBodies bodies(natsMsg_GetData(msg.get()),
                       natsMsg_GetDataLength(msg.get()));
    for (uint64_t i = 0; i < count; ++i) {
      if (!bodies.Next(&body)) break;
      if (base + i <= head) continue;  // seen before a redelivery
      auto e = fanout::ParseStoredEvent(std::move(body), index);
      body.clear();
      if (e == nullptr) {
        static base::LogRateLimiter limiter5(1);
        LogLimited(limiter5, base::LogLevel::kError,
                   "cluster stream event does not parse",
                   {{"stream_seq", stream_seq}});
        continue;
      }
      if (e->kind == fanin::v1::EVENT_KIND_NODE) NoteNodeChange(*e);
      Track(*e, stream_seq);
      local_.hub->Publish(std::move(e), &wakes);
    }
    {
      absl::MutexLock lock(&track_mu_);
      if (stream_seq > tracked_.stream_seq)
        tracked_ = {stream_seq, base + count};
    }
    consumed_events_.fetch_add(count, std::memory_order_relaxed);
    fanout::EventHub::RunWakes(&wakes);
  }
}

// ---- Node loss and fencing ----

ClusterNode::Link* ClusterNode::NewLink() {
  static absl::Mutex mu(absl::kConstInit);
  static auto* links = new std::vector<std::unique_ptr<Link>>();
  absl::MutexLock lock(&mu);
  links->push_back(std::make_unique<Link>());
  return links->back().get();
}

void ClusterNode::OnDisconnected(natsConnection*, void* link) {
  auto* l = static_cast<Link*>(link);
  if (!l->connected.exchange(false)) return;
  base::Log(base::LogLevel::kWarning, "cluster broker unavailable",
            {{"node", l->node}});
}

void ClusterNode::OnReconnected(natsConnection*, void* link) {
  auto* l = static_cast<Link*>(link);
  l->connected.store(true, std::memory_order_release);
  base::Log(base::LogLevel::kInfo, "cluster broker reachable again",
            {{"node", l->node}});
}

void ClusterNode::Track(const fanout::StoredEvent& e, uint64_t stream_seq) {
  const uint64_t inc = e.connection_id >> 32;
  if (e.connection_id == 0) return;
  absl::MutexLock lock(&track_mu_);
  switch (e.kind) {
    case fanin::v1::EVENT_KIND_OPENED: {
      Tracked& t = open_[inc][e.connection_id];
      t.node = e.node;
      absl::MutexLock names(&listeners_mu_);
      if (e.listener < listener_names_.size()) {
        t.listener = listener_names_[e.listener];
      }
      break;
    }
    case fanin::v1::EVENT_KIND_DATA: {
      auto it = open_.find(inc);
      if (it == open_.end()) break;
      auto c = it->second.find(e.connection_id);
      if (c != it->second.end() && stream_seq > c->second.counted_through) {
        c->second.bytes_received += e.data_size;
      }
      break;
    }
    case fanin::v1::EVENT_KIND_CLOSED: {
      auto it = open_.find(inc);
      if (it == open_.end()) break;
      it->second.erase(e.connection_id);
      if (it->second.empty()) open_.erase(it);
      break;
    }
    default:
      break;
  }
}

void ClusterNode::SeedTracker() {
  // Connections older than the stretch of stream this node replays are
  // learnt from their owners, so this node can report them if their node
  // dies. The replayed stream then applies on top (an open it repeats is
  // idempotent; a close after the listing removes it).
  std::vector<std::pair<uint64_t, std::string>> live;
  {
    absl::MutexLock lock(&nodes_mu_);
    for (const auto& [name, info] : nodes_) {
      if (Live(info) && name != options_.node_name) {
        live.emplace_back(info.incarnation(), name);
      }
    }
  }
  for (const auto& [inc, name] : live) {
    std::string token;
    uint64_t as_of;
    {
      absl::MutexLock lock(&tail_mu_);
      as_of = tail_.stream_seq;
    }
    for (int page = 0; page < 1000; ++page) {
      fanin::v1::ListConnectionsRequest req;
      req.set_page_size(1000);
      req.set_page_token(token);
      absl::Notification done;
      absl::Status status;
      fanin::v1::ListConnectionsResponse resp;
      SendRequest(inc, "ListLocal", req.SerializeAsString(),
                  [&](absl::Status s, std::string body) {
                    status = s;
                    if (s.ok() && !resp.ParseFromString(body)) {
                      status = absl::InternalError("unparsable list");
                    }
                    done.Notify();
                  });
      if (!done.WaitForNotificationWithTimeout(options_.request_timeout +
                                               absl::Seconds(1))) {
        SweepDeadlines();  // answers it UNAVAILABLE
        done.WaitForNotification();
      }
      if (!status.ok()) {
        base::Log(base::LogLevel::kWarning,
                  "cannot learn a node's open connections",
                  {{"from_node", name}, {"error", status.ToString()}});
        break;
      }
      {
        absl::MutexLock lock(&track_mu_);
        for (const auto& c : resp.connections()) {
          Tracked& t = open_[c.connection_id() >> 32][c.connection_id()];
          t.listener = c.listener();
          t.node = c.node();
          t.bytes_received = c.bytes_received();
          t.counted_through = as_of;
        }
      }
      token = resp.next_page_token();
      if (token.empty()) break;
    }
  }
}

void ClusterNode::DetectLostNodes() {
  std::vector<fanin::v1::NodeInfo> silent;
  const absl::Time now = absl::Now();
  {
    absl::MutexLock lock(&nodes_mu_);
    for (const auto& [name, info] : nodes_) {
      if (name == options_.node_name || !Live(info)) continue;
      if (now - absl::FromUnixNanos(info.last_seen_unix_nano()) >
          options_.node_timeout) {
        silent.push_back(info);
      }
    }
  }
  for (const auto& info : silent) {
    const absl::Duration quiet =
        now - absl::FromUnixNanos(info.last_seen_unix_nano());
    absl::Status s = ReportLost(info, quiet);
    if (!s.ok()) {
      static base::LogRateLimiter limiter(1);
      LogLimited(limiter, base::LogLevel::kWarning,
                 "reporting a lost node, will retry",
                 {{"lost_node", info.name()}, {"error", s.ToString()}});
    }
  }
}

absl::Status ClusterNode::ReportLost(const fanin::v1::NodeInfo& node,
                                     absl::Duration silent) {
  const uint64_t inc = node.incarnation();
  const std::string detail = absl::StrCat(
      "node ", node.name(), " lost: no heartbeat for ",
      absl::FormatDuration(absl::Trunc(silent, absl::Milliseconds(100))));
  // One message at a time, each published expecting the stream position
  // this node's view was built from: a survivor whose view is stale is
  // refused (and tries again once it has read on), two survivors with the
  // same view publish the same message id (JetStream keeps one). So every
  // connection of the lost node gets exactly one Closed(NODE_LOST).
  for (int round = 0; round < 64; ++round) {
    Tail at;
    bool change_done;
    std::vector<std::pair<uint64_t, Tracked>> conns;
    {
      absl::MutexLock lock(&track_mu_);
      at = tracked_;
      change_done = lost_reported_.contains(inc);
      auto it = open_.find(inc);
      if (it != open_.end()) {
        for (const auto& [id, t] : it->second) conns.emplace_back(id, t);
      }
    }
    if (change_done && conns.empty()) break;
    std::sort(conns.begin(), conns.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    std::string payload;
    uint64_t count = 0;
    const int64_t now = absl::GetCurrentTimeNanos();
    if (!change_done) {
      fanin::v1::Event event;
      event.set_time_unix_nano(now);
      event.set_node(node.name());
      auto* change = event.mutable_node_change();
      change->set_state(fanin::v1::NODE_STATE_LOST);
      change->set_incarnation(inc);
      change->set_grpc_address(node.grpc_address());
      change->set_detail(
          absl::StrCat(detail, "; reported by ", options_.node_name));
      AppendBody(event.SerializeAsString(), &payload);
      ++count;
    }
    for (const auto& [id, t] : conns) {
      if (payload.size() > options_.max_message_bytes) break;
      fanin::v1::Event event;
      event.set_time_unix_nano(now);
      event.set_connection_id(id);
      event.set_listener(t.listener);
      event.set_node(t.node);
      auto* closed = event.mutable_closed();
      closed->set_reason(fanin::v1::CLOSE_REASON_NODE_LOST);
      closed->set_detail(detail);
      closed->set_bytes_received(t.bytes_received);
      AppendBody(event.SerializeAsString(), &payload);
      ++count;
    }
    natsMsg* raw = nullptr;
    natsMsg_Create(&raw, (events_subject_ + "lost").c_str(), nullptr,
                   payload.data(), static_cast<int>(payload.size()));
    NatsPtr<natsMsg> msg(raw);
    SetBatchHeaders(msg.get(), at.next_seq, count);
    natsMsgHeader_Set(msg.get(), kLostHeader, absl::StrCat(inc).c_str());
    const std::string id = absl::StrCat("lost-", inc, "-", at.stream_seq);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = id.c_str();
    po.ExpectLastSeq = at.stream_seq;
    po.MaxWait = Millis(options_.request_timeout);
    jsPubAck* ack = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    natsStatus st = js_PublishMsg(&ack, js_.get(), msg.get(), &po, &jerr);
    if (st != NATS_OK) {
      return FromNats(st, "publishing a node's loss", jerr);
    }
    NatsPtr<jsPubAck> a(ack);
    if (!a->Duplicate && !change_done) {
      nodes_reported_lost_.fetch_add(1, std::memory_order_relaxed);
      base::Log(base::LogLevel::kWarning, "node lost",
                {{"lost_node", node.name()},
                 {"incarnation", inc},
                 {"connections_closed", count - 1},
                 {"silent_ms", absl::ToInt64Milliseconds(silent)}});
    }
    AdvanceTail({a->Sequence, at.next_seq + count});
    // Wait until the consumer has applied it (the view the next round
    // builds on).
    const absl::Time deadline = absl::Now() + absl::Seconds(5);
    while (absl::Now() < deadline && !Stopping()) {
      {
        absl::MutexLock lock(&track_mu_);
        if (tracked_.stream_seq >= a->Sequence) break;
      }
      absl::SleepFor(absl::Milliseconds(2));
    }
  }
  // The registry says so too (any survivor may; the record's revision keeps
  // a late write of the lost node's own from undoing it).
  kvEntry* e = nullptr;
  if (kvStore_Get(&e, nodes_kv_.get(), node.name().c_str()) == NATS_OK) {
    NatsPtr<kvEntry> entry(e);
    fanin::v1::NodeInfo record = ParseRecord(e);
    if (record.incarnation() == inc && Live(record)) {
      record.set_state(fanin::v1::NODE_STATE_LOST);
      const std::string value = record.SerializeAsString();
      uint64_t rev = 0;
      kvStore_Update(&rev, nodes_kv_.get(), node.name().c_str(), value.data(),
                     static_cast<int>(value.size()), kvEntry_Revision(e));
    }
  }
  {
    absl::MutexLock lock(&nodes_mu_);
    auto it = nodes_.find(node.name());
    if (it != nodes_.end() && it->second.incarnation() == inc) {
      it->second.set_state(fanin::v1::NODE_STATE_LOST);
    }
  }
  return absl::OkStatus();
}

void ClusterNode::FenceAndRejoin() {
  fenced_.store(true, std::memory_order_release);
  const uint64_t old = incarnation_.load();
  base::Log(base::LogLevel::kWarning,
            "this node was reported lost while cut off: closing its "
            "connections and rejoining as a new incarnation",
            {{"node", options_.node_name}, {"incarnation", old}});
  {
    absl::MutexLock lock(&mu_);
    pending_.clear();
    pending_bytes_ = 0;
    ++pending_generation_;
    pending_cv_.SignalAll();
  }
  if (local_.close_all) local_.close_all();  // their events are dropped
  absl::Status s = ClaimName();
  if (!s.ok()) {
    fence_requested_.store(true, std::memory_order_release);  // next beat
    base::Log(base::LogLevel::kError, "rejoining failed, will retry",
              {{"error", s.ToString()}});
    return;
  }
  // Routed requests now come to the new incarnation's subject.
  natsSubscription* sub = nullptr;
  const std::string rpc_subject =
      absl::StrCat(options_.cluster_name, ".rpc.", incarnation_.load());
  if (natsConnection_Subscribe(&sub, nc_.get(), rpc_subject.c_str(),
                               &ClusterNode::OnRequest, this) == NATS_OK) {
    rpc_sub_.reset(sub);
  }
  if (local_.restart_ids) local_.restart_ids(first_connection_id());
  absl::StatusOr<Tail> tail = ReadTail();
  if (tail.ok()) AdvanceTail(*tail);
  fenced_count_.fetch_add(1, std::memory_order_relaxed);
  fenced_.store(false, std::memory_order_release);
  PublishNodeChange(
      fanin::v1::NODE_STATE_JOINED,
      absl::StrCat("rejoined after incarnation ", old, " was reported lost"));
  absl::AnyInvocable<void()>* observer = nullptr;
  {
    absl::MutexLock lock(&mu_);
    if (pause_observer_) observer = &pause_observer_;
  }
  if (observer != nullptr) (*observer)();  // reading and accepting resume
}

// ---- Reading history from the stream ----

void ClusterNode::Fetch(
    uint64_t from_seq, const fanout::Filter& filter, size_t max_events,
    size_t max_bytes, absl::AnyInvocable<void(absl::StatusOr<Fetched>)> done) {
  absl::MutexLock lock(&fetch_mu_);
  if (Stopping()) {
    done(absl::UnavailableError("fanin node is shutting down"));
    return;
  }
  fetches_.push_back(
      {from_seq, filter, max_events, max_bytes, std::move(done)});
  fetch_cv_.Signal();
}

void ClusterNode::FetcherLoop() {
  while (true) {
    FetchJob job;
    {
      absl::MutexLock lock(&fetch_mu_);
      while (fetches_.empty() && !Stopping()) fetch_cv_.Wait(&fetch_mu_);
      if (fetches_.empty()) return;
      job = std::move(fetches_.front());
      fetches_.pop_front();
    }
    absl::StatusOr<Fetched> result = RunFetch(job);
    job.done(std::move(result));
  }
}

absl::StatusOr<grpc_api::ClusterRouter::Fetched> ClusterNode::RunFetch(
    const FetchJob& job) {
  Fetched out;
  out.next_seq = job.from;
  jsStreamInfo* si = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus st =
      js_GetStreamInfo(&si, js_.get(), stream_name_.c_str(), nullptr, &jerr);
  if (st != NATS_OK) return FromNats(st, "stream info", jerr);
  NatsPtr<jsStreamInfo> info(si);
  const uint64_t first = info->State.FirstSeq;
  const uint64_t last = info->State.LastSeq;
  if (last == 0 || first > last) return out;
  auto oldest = MessageRange(first);
  if (!oldest.ok()) return oldest.status();
  if (job.from < oldest->first) {
    // Retention took them: exactly these seqs are gone.
    fanin::v1::Gap gap;
    gap.set_first_seq(job.from);
    gap.set_last_seq(oldest->first - 1);
    gap.set_lost(oldest->first - job.from);
    gap.set_reason(fanin::v1::GAP_REASON_HISTORY_EXPIRED);
    out.gap = gap;
    out.next_seq = oldest->first;
    return out;
  }
  // The message holding job.from: the hint a previous fetch left, or a binary
  // search over the stream (bases never decrease).
  uint64_t m = 0;
  if (auto it = fetch_hints_.find(job.from); it != fetch_hints_.end()) {
    m = it->second;
    fetch_hints_.erase(it);
  }
  if (m < first || m > last) {
    uint64_t lo = first, hi = last;
    while (lo < hi) {
      const uint64_t mid = lo + (hi - lo + 1) / 2;
      auto r = MessageRange(mid);
      if (!r.ok()) return r.status();
      if (r->first <= job.from) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    m = lo;
  }
  size_t bytes = 0;
  std::string body;
  auto index = [this](absl::string_view name) { return ListenerIndex(name); };
  for (; m <= last; ++m) {
    natsMsg* raw = nullptr;
    st = js_GetMsg(&raw, js_.get(), stream_name_.c_str(), m, nullptr, &jerr);
    if (st != NATS_OK) return FromNats(st, "reading the stream", jerr);
    NatsPtr<natsMsg> msg(raw);
    const std::optional<BatchHeaders> h = ReadBatchHeaders(msg.get());
    if (!h.has_value()) continue;
    const uint64_t base = h->base;
    const uint64_t count = h->count;
    BatchBodies bodies(natsMsg_GetData(msg.get()),
                       natsMsg_GetDataLength(msg.get()));
    bool full = false;
    for (uint64_t i = 0; i < count; ++i) {
      if (!bodies.Next(&body)) break;
      const uint64_t seq = base + i;
      if (seq < out.next_seq) continue;
      out.next_seq = seq + 1;
      auto e = fanout::ParseStoredEvent(std::move(body), index);
      body.clear();
      if (e == nullptr || !job.filter.Matches(*e)) continue;
      e->seq = seq;
      bytes += e->body.size();
      out.events.push_back(std::move(e));
      if (out.events.size() >= job.max_events || bytes >= job.max_bytes) {
        full = true;
        break;
      }
    }
    if (full) break;
    out.next_seq = std::max(out.next_seq, base + count);
  }
  if (fetch_hints_.size() > 4096) fetch_hints_.clear();
  fetch_hints_[out.next_seq] = std::min(m, last);
  return out;
}

// ---- Membership ----

void ClusterNode::NoteNodeChange(const fanout::StoredEvent& e) {
  // The stream tells every node of a join before any event of the joining
  // node's connections, so requests for them can be routed at once (the
  // registry is re-read only every second).
  fanin::v1::Event event;
  if (!event.ParseFromString(e.body) || e.node.empty()) return;
  const fanin::v1::NodeChange& change = event.node_change();
  absl::MutexLock lock(&nodes_mu_);
  fanin::v1::NodeInfo& info = nodes_[e.node];
  if (info.incarnation() > change.incarnation()) return;  // an older one
  info.set_name(e.node);
  info.set_incarnation(change.incarnation());
  info.set_grpc_address(change.grpc_address());
  info.set_state(change.state() == fanin::v1::NODE_STATE_JOINED
                     ? fanin::v1::NODE_STATE_UP
                     : change.state());
  info.set_last_seen_unix_nano(static_cast<uint64_t>(e.time_unix_nano));
  if (change.state() == fanin::v1::NODE_STATE_LOST) {
    {
      absl::MutexLock track(&track_mu_);
      lost_reported_.insert(change.incarnation());
    }
    if (change.incarnation() == incarnation_.load()) {
      // Reported lost while cut off: fence (the heartbeat thread does it).
      fenced_.store(true, std::memory_order_release);
      fence_requested_.store(true, std::memory_order_release);
    }
  }
}

void ClusterNode::PutRecord(fanin::v1::NodeState state) {
  if (nodes_kv_ == nullptr) return;
  fanin::v1::NodeInfo info;
  info.set_name(options_.node_name);
  info.set_grpc_address(local_.grpc_address);
  info.set_state(state);
  info.set_incarnation(incarnation_.load());
  info.set_last_seen_unix_nano(absl::GetCurrentTimeNanos());
  if (local_.connections_open) {
    info.set_connections_open(local_.connections_open());
  }
  for (const std::string& l : local_.listeners) info.add_listeners(l);
  const std::string value = info.SerializeAsString();
  {
    // Compare-and-set on our own record: if someone else wrote it (a
    // survivor that reported this node lost), it must not be overwritten.
    absl::MutexLock lock(&record_mu_);
    uint64_t rev = 0;
    natsStatus st = kvStore_Update(
        &rev, nodes_kv_.get(), options_.node_name.c_str(), value.data(),
        static_cast<int>(value.size()), record_revision_guarded_);
    if (st == NATS_OK) {
      record_revision_guarded_ = rev;
    } else {
      kvEntry* e = nullptr;
      if (kvStore_Get(&e, nodes_kv_.get(), options_.node_name.c_str()) ==
          NATS_OK) {
        NatsPtr<kvEntry> entry(e);
        fanin::v1::NodeInfo now = ParseRecord(e);
        if (now.incarnation() == incarnation_.load() &&
            now.state() == fanin::v1::NODE_STATE_LOST) {
          fenced_.store(true, std::memory_order_release);
          fence_requested_.store(true, std::memory_order_release);
          return;
        }
        if (now.incarnation() == incarnation_.load()) {
          record_revision_guarded_ = kvEntry_Revision(e);
        }
      }
      return;
    }
  }
  absl::MutexLock lock(&nodes_mu_);
  nodes_[options_.node_name] = info;
}

void ClusterNode::RefreshMembership() {
  kvKeysList keys;
  std::memset(&keys, 0, sizeof(keys));
  if (kvStore_Keys(&keys, nodes_kv_.get(), nullptr) != NATS_OK) return;
  absl::flat_hash_map<std::string, fanin::v1::NodeInfo> fresh;
  for (int i = 0; i < keys.Count; ++i) {
    kvEntry* e = nullptr;
    if (kvStore_Get(&e, nodes_kv_.get(), keys.Keys[i]) != NATS_OK) continue;
    NatsPtr<kvEntry> entry(e);
    fanin::v1::NodeInfo info = ParseRecord(e);
    for (const std::string& l : info.listeners()) ListenerIndex(l);
    fresh[info.name()] = std::move(info);
  }
  kvKeysList_Destroy(&keys);
  absl::MutexLock lock(&nodes_mu_);
  nodes_ = std::move(fresh);
}

// ---- Worker-pool groups (fanout::GroupReplication) ----

namespace {

// KV keys allow fewer characters than group names do.
std::string GroupKey(const std::string& group) {
  return absl::BytesToHexString(group);
}

}  // namespace

void ClusterNode::Announce(fanin::v1::Event event) {
  event.set_time_unix_nano(absl::GetCurrentTimeNanos());
  event.set_node(options_.node_name);
  Publish(fanout::MakeEvent(event, 0), nullptr);
}

absl::StatusOr<uint64_t> ClusterNode::FoundedAt(const std::string& group) {
  if (Stopping() || groups_kv_ == nullptr) {
    return absl::UnavailableError("fanin node is shutting down");
  }
  kvEntry* raw = nullptr;
  natsStatus s = kvStore_Get(&raw, groups_kv_.get(), GroupKey(group).c_str());
  if (s == NATS_NOT_FOUND) return 0;
  if (s != NATS_OK) return FromNats(s, "reading the group directory");
  NatsPtr<kvEntry> e(raw);
  uint64_t seq = 0;
  if (kvEntry_ValueString(e.get()) == nullptr ||
      !absl::SimpleAtoi(kvEntry_ValueString(e.get()), &seq)) {
    return 0;  // deleted (an empty value) or not ours
  }
  return seq;
}

void ClusterNode::Founded(const std::string& group, uint64_t seq) {
  if (Stopping() || groups_kv_ == nullptr) return;
  uint64_t rev = 0;
  natsStatus s =
      kvStore_PutString(&rev, groups_kv_.get(), GroupKey(group).c_str(),
                        absl::StrCat(seq).c_str());
  if (s != NATS_OK) {
    base::Log(base::LogLevel::kWarning, "cannot record a group's founding",
              {{"group", group}, {"error", natsStatus_GetText(s)}});
  }
}

void ClusterNode::Forgotten(const std::string& group) {
  if (Stopping() || groups_kv_ == nullptr) return;
  kvStore_Delete(groups_kv_.get(), GroupKey(group).c_str());
}

void ClusterNode::Progress(const std::string& group, uint64_t member,
                           uint64_t received_through, uint64_t as_of) {
  if (Stopping() || nc_ == nullptr) return;
  fanin::v1::GroupChange p;
  p.set_group(group);
  p.set_member_id(member);
  p.set_received_through_seq(received_through);
  p.set_as_of_seq(as_of);
  const std::string body = p.SerializeAsString();
  natsConnection_Publish(nc_.get(), ProgressSubject().c_str(), body.data(),
                         static_cast<int>(body.size()));
}

void ClusterNode::OnGroupProgress(natsConnection*, natsSubscription*,
                                  natsMsg* raw, void* arg) {
  NatsPtr<natsMsg> msg(raw);
  auto* self = static_cast<ClusterNode*>(arg);
  fanin::v1::GroupChange p;
  if (!p.ParseFromArray(natsMsg_GetData(msg.get()),
                        natsMsg_GetDataLength(msg.get()))) {
    return;
  }
  if (self->local_.on_group_progress) {
    self->local_.on_group_progress(p.group(), p.member_id(),
                                   p.received_through_seq(), p.as_of_seq());
  }
}

void ClusterNode::PublishNodeChange(fanin::v1::NodeState state,
                                    std::string detail) {
  fanin::v1::Event event;
  event.set_time_unix_nano(absl::GetCurrentTimeNanos());
  event.set_node(options_.node_name);
  auto* change = event.mutable_node_change();
  change->set_state(state);
  change->set_incarnation(incarnation_);
  change->set_grpc_address(local_.grpc_address);
  change->set_detail(std::move(detail));
  Publish(fanout::MakeEvent(event, 0), nullptr);
}

void ClusterNode::HeartbeatLoop() {
  absl::Time next_beat = absl::Now() + absl::Seconds(1);
  while (!Stopping()) {
    absl::SleepFor(absl::Milliseconds(50));
    SweepDeadlines();
    if (absl::Now() < next_beat) continue;
    next_beat = absl::Now() + absl::Seconds(1);
    if (fence_requested_.exchange(false)) FenceAndRejoin();
    if (!fenced_.load()) {
      PutRecord(leaving_ ? fanin::v1::NODE_STATE_DRAINING
                         : fanin::v1::NODE_STATE_UP);
    }
    RefreshMembership();
    if (fence_requested_.exchange(false)) FenceAndRejoin();
    if (!fenced_.load()) DetectLostNodes();
    // The oldest seq the stream still holds, for GetStats.
    jsStreamInfo* si = nullptr;
    if (js_GetStreamInfo(&si, js_.get(), stream_name_.c_str(), nullptr,
                         nullptr) == NATS_OK) {
      NatsPtr<jsStreamInfo> info(si);
      auto range = MessageRange(info->State.FirstSeq);
      if (range.ok()) {
        absl::MutexLock lock(&tail_mu_);
        oldest_seq_ = range->first;
      }
    }
  }
}

fanin::v1::ListNodesResponse ClusterNode::ListNodes() const {
  fanin::v1::ListNodesResponse r;
  absl::MutexLock lock(&nodes_mu_);
  std::vector<const fanin::v1::NodeInfo*> sorted;
  for (const auto& [name, info] : nodes_) sorted.push_back(&info);
  std::sort(sorted.begin(), sorted.end(),
            [](auto* a, auto* b) { return a->name() < b->name(); });
  for (const auto* info : sorted) *r.add_nodes() = *info;
  return r;
}

std::vector<std::string> ClusterNode::listener_names() const {
  absl::MutexLock lock(&listeners_mu_);
  return listener_names_;
}

ClusterStats ClusterNode::GetStats() const {
  ClusterStats s;
  s.published_events = published_events_.load();
  s.publish_batches = publish_batches_.load();
  s.publish_conflicts = publish_conflicts_.load();
  s.publish_retries = publish_retries_.load();
  s.nodes_reported_lost = nodes_reported_lost_.load();
  s.fenced = fenced_count_.load();
  s.consumed_events = consumed_events_.load();
  {
    absl::MutexLock lock(&mu_);
    s.buffer_bytes = pending_bytes_;
  }
  s.broker_connected = nc_ != nullptr && natsConnection_Status(nc_.get()) ==
                                             NATS_CONN_STATUS_CONNECTED;
  absl::MutexLock lock(&tail_mu_);
  s.head_seq = tail_.next_seq - 1;
  s.oldest_seq = oldest_seq_;
  return s;
}

void ClusterNode::FillStats(fanin::v1::GetStatsResponse* stats) const {
  ClusterStats s = GetStats();
  stats->set_node(options_.node_name);
  stats->set_cluster_head_seq(s.head_seq);
  stats->set_cluster_oldest_seq(s.oldest_seq);
}

// ---- Routing ----

void ClusterNode::Call(absl::string_view method, uint64_t connection_id,
                       std::string request, Reply done) {
  const uint64_t owner = connection_id >> 32;
  std::string owner_name;
  fanin::v1::NodeState state = fanin::v1::NODE_STATE_UNSPECIFIED;
  {
    absl::MutexLock lock(&nodes_mu_);
    for (const auto& [name, info] : nodes_) {
      if (info.incarnation() == owner) {
        owner_name = name;
        state = info.state();
      }
    }
  }
  if (state == fanin::v1::NODE_STATE_LEFT ||
      state == fanin::v1::NODE_STATE_LOST) {
    // It left: every connection it had is closed.
    return done(
        absl::NotFoundError(absl::StrCat("no open connection ", connection_id,
                                         " (its node ", owner_name, " left)")),
        "");
  }
  if (owner_name.empty()) {
    // Every live node is in the view: read from the registry at start,
    // every second since, and from each JOINED in the stream (which comes
    // before any event of that node's connections).
    return done(absl::NotFoundError(absl::StrCat(
                    "no open connection ", connection_id,
                    " (no node of this cluster has incarnation ", owner, ")")),
                "");
  }
  SendRequest(owner, method, request, std::move(done));
}

void ClusterNode::SendRequest(uint64_t incarnation, absl::string_view method,
                              const std::string& request, Reply done) {
  std::string node_name = absl::StrCat("incarnation ", incarnation);
  bool known = false;
  {
    absl::MutexLock lock(&nodes_mu_);
    for (const auto& [name, info] : nodes_) {
      if (info.incarnation() == incarnation) {
        node_name = name;
        known = true;
      }
    }
  }
  uint64_t token;
  {
    absl::MutexLock lock(&calls_mu_);
    token = next_call_++;
    calls_[token] = {std::move(done), absl::Now() + options_.request_timeout,
                     node_name, known};
  }
  natsMsg* raw = nullptr;
  const std::string subject =
      absl::StrCat(options_.cluster_name, ".rpc.", incarnation);
  const std::string reply = absl::StrCat(reply_prefix_, token);
  natsMsg_Create(&raw, subject.c_str(), reply.c_str(), request.data(),
                 static_cast<int>(request.size()));
  NatsPtr<natsMsg> msg(raw);
  natsMsgHeader_Set(msg.get(), kMethodHeader, std::string(method).c_str());
  natsStatus st = nc_ == nullptr || !broker_connected()
                      ? NATS_CONNECTION_DISCONNECTED
                      : natsConnection_PublishMsg(nc_.get(), msg.get());
  if (st != NATS_OK) {
    Reply failed;
    {
      absl::MutexLock lock(&calls_mu_);
      auto it = calls_.find(token);
      if (it == calls_.end()) return;
      failed = std::move(it->second.done);
      calls_.erase(it);
    }
    failed(
        absl::UnavailableError(absl::StrCat(
            "cannot reach node ", node_name,
            ": the NATS broker is unavailable (", natsStatus_GetText(st), ")")),
        "");
  }
}

void ClusterNode::OnReply(natsConnection*, natsSubscription*, natsMsg* m,
                          void* closure) {
  auto* self = static_cast<ClusterNode*>(closure);
  NatsPtr<natsMsg> msg(m);
  absl::string_view subject = natsMsg_GetSubject(msg.get());
  uint64_t token = 0;
  if (!absl::SimpleAtoi(subject.substr(self->reply_prefix_.size()), &token)) {
    return;
  }
  PendingCall call;
  {
    absl::MutexLock lock(&self->calls_mu_);
    auto it = self->calls_.find(token);
    if (it == self->calls_.end()) return;  // timed out already
    call = std::move(it->second);
    self->calls_.erase(it);
  }
  if (natsMsg_IsNoResponders(msg.get())) {
    if (!call.known) {
      return call.done(
          absl::NotFoundError(absl::StrCat(
              "no open connection (no live node has ", call.node, ")")),
          "");
    }
    return call.done(absl::UnavailableError(absl::StrCat(
                         "node ", call.node,
                         " is not reachable (no answer on its subject)")),
                     "");
  }
  int code = 0;
  if (!absl::SimpleAtoi(Header(msg.get(), kCodeHeader), &code)) {
    return call.done(absl::InternalError(absl::StrCat(
                         "node ", call.node, " answered without a status")),
                     "");
  }
  absl::Status status(static_cast<absl::StatusCode>(code),
                      code == 0 ? "" : Header(msg.get(), kMessageHeader));
  std::string body(natsMsg_GetData(msg.get()),
                   natsMsg_GetDataLength(msg.get()));
  call.done(status, std::move(body));
}

void ClusterNode::SweepDeadlines() {
  std::vector<PendingCall> expired;
  const absl::Time now = absl::Now();
  {
    absl::MutexLock lock(&calls_mu_);
    for (auto it = calls_.begin(); it != calls_.end();) {
      if (it->second.deadline <= now) {
        expired.push_back(std::move(it->second));
        calls_.erase(it++);
      } else {
        ++it;
      }
    }
  }
  for (auto& call : expired) {
    call.done(absl::UnavailableError(
                  absl::StrCat("node ", call.node, " did not answer within ",
                               absl::FormatDuration(options_.request_timeout))),
              "");
  }
}

void ClusterNode::OnRequest(natsConnection*, natsSubscription*, natsMsg* m,
                            void* closure) {
  auto* self = static_cast<ClusterNode*>(closure);
  NatsPtr<natsMsg> msg(m);
  const char* reply = natsMsg_GetReply(msg.get());
  if (reply == nullptr || self->local_.service == nullptr) return;
  std::string subject = reply;
  std::string method = Header(msg.get(), kMethodHeader);
  std::string request(natsMsg_GetData(msg.get()),
                      natsMsg_GetDataLength(msg.get()));
  // `done` runs on a loop thread: it only queues the answer for the replier.
  self->local_.service->ExecuteLocal(
      method, std::move(request),
      [self, subject = std::move(subject)](absl::Status status,
                                           std::string body) mutable {
        absl::MutexLock lock(&self->replies_mu_);
        self->replies_.push_back(
            {std::move(subject), std::move(status), std::move(body)});
        self->replies_cv_.Signal();
      });
}

void ClusterNode::ReplierLoop() {
  while (true) {
    OutgoingReply r;
    {
      absl::MutexLock lock(&replies_mu_);
      while (replies_.empty() && !Stopping()) replies_cv_.Wait(&replies_mu_);
      if (replies_.empty()) return;
      r = std::move(replies_.front());
      replies_.pop_front();
    }
    natsMsg* raw = nullptr;
    natsMsg_Create(&raw, r.subject.c_str(), nullptr, r.body.data(),
                   static_cast<int>(r.body.size()));
    NatsPtr<natsMsg> msg(raw);
    natsMsgHeader_Set(msg.get(), kCodeHeader,
                      absl::StrCat(static_cast<int>(r.status.code())).c_str());
    if (!r.status.ok()) {
      natsMsgHeader_Set(msg.get(), kMessageHeader,
                        std::string(r.status.message()).c_str());
    }
    natsConnection_PublishMsg(nc_.get(), msg.get());
  }
}

void ClusterNode::List(
    const fanin::v1::ListConnectionsRequest& request, uint64_t as_of_seq,
    absl::AnyInvocable<void(absl::StatusOr<fanin::v1::ListConnectionsResponse>)>
        done) {
  uint64_t after = 0;
  if (!request.page_token().empty()) {
    auto parsed = grpc_api::ParsePageToken(request.page_token());
    if (!parsed.ok()) return done(parsed.status());
    after = *parsed;
  }
  struct Target {
    uint64_t incarnation;
    std::string name;
  };
  std::vector<Target> targets;
  {
    absl::MutexLock lock(&nodes_mu_);
    for (const auto& [name, info] : nodes_) {
      if (!Live(info)) continue;
      if (!request.node().empty() && request.node() != name) continue;
      if (info.incarnation() < after >> 32) continue;
      targets.push_back({info.incarnation(), name});
    }
  }
  std::sort(targets.begin(), targets.end(),
            [](const Target& a, const Target& b) {
              return a.incarnation < b.incarnation;
            });
  const size_t page_size = request.page_size() == 0
                               ? 100
                               : std::min<size_t>(request.page_size(), 1000);
  struct State {
    std::vector<Target> targets;
    size_t next = 0;
    uint64_t after;
    size_t page_size;
    fanin::v1::ListConnectionsRequest request;
    fanin::v1::ListConnectionsResponse out;
    absl::AnyInvocable<void(absl::StatusOr<fanin::v1::ListConnectionsResponse>)>
        done;
  };
  auto state = std::make_shared<State>();
  state->targets = std::move(targets);
  state->after = after;
  state->page_size = page_size;
  state->request = request;
  state->out.set_as_of_seq(as_of_seq);
  state->done = std::move(done);
  // Asks one node after another, in incarnation (so id) order, until the
  // page is full.
  auto step = std::make_shared<std::function<void()>>();
  *step = [this, state, step] {
    const bool full =
        static_cast<size_t>(state->out.connections_size()) >= state->page_size;
    if (state->next >= state->targets.size() || full) {
      // A full page with nodes still to ask: they may have more.
      if (full && state->next < state->targets.size() &&
          state->out.next_page_token().empty()) {
        state->out.set_next_page_token(grpc_api::PageTokenAfter(
            state->out.connections(state->out.connections_size() - 1)
                .connection_id()));
      }
      auto done = std::move(state->done);
      done(std::move(state->out));
      *step = nullptr;  // breaks the cycle
      return;
    }
    const Target target = state->targets[state->next++];
    fanin::v1::ListConnectionsRequest part;
    part.set_listener(state->request.listener());
    part.set_page_size(static_cast<uint32_t>(state->page_size -
                                             state->out.connections_size()));
    if (state->after >> 32 == target.incarnation && state->after != 0) {
      part.set_page_token(grpc_api::PageTokenAfter(state->after));
    }
    Reply reply = [state, step, target](absl::Status status, std::string body) {
      fanin::v1::ListConnectionsResponse r;
      if (status.ok() && !r.ParseFromString(body)) {
        status = absl::InternalError("node answered a list it cannot parse");
      }
      if (!status.ok()) {
        auto done = std::move(state->done);
        done(absl::Status(status.code(),
                          absl::StrCat("listing node ", target.name, ": ",
                                       status.message())));
        *step = nullptr;
        return;
      }
      for (auto& c : *r.mutable_connections()) {
        *state->out.add_connections() = std::move(c);
      }
      if (!r.next_page_token().empty()) {
        // That node has more: the page ends here.
        state->out.set_next_page_token(r.next_page_token());
        state->next = state->targets.size();
      }
      (*step)();
    };
    const std::string bytes = part.SerializeAsString();
    if (target.incarnation == incarnation_) {
      local_.service->ExecuteLocal("ListLocal", bytes, std::move(reply));
    } else {
      SendRequest(target.incarnation, "ListLocal", bytes, std::move(reply));
    }
  };
  (*step)();
}

}  // namespace fanin::cluster
