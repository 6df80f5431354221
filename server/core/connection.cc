#include "server/core/connection.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/base/log.h"
#include "server/core/fanin_core.h"
#include "server/core/shard.h"
#include "server/fanout/stored_event.h"
#include "server/reactor/poller.h"

namespace fanin::core {
namespace {

using reactor::kError;
using reactor::kHangup;
using reactor::kReadable;
using reactor::kReadClosed;
using reactor::kWritable;

constexpr uint32_t kMaxReadRpcBytes = 4 << 20;
constexpr uint32_t kDefaultReadRpcBytes = 64 << 10;

absl::Status Gone(uint64_t id) {
  return absl::NotFoundError(absl::StrCat("connection ", id, " not found"));
}

// Stands for a TLS failure (Connection::transport_error_ has its text) where
// an errno is expected.
constexpr int kTlsFailed = EPROTO;

constexpr const char* kTlsFailureNames[] = {"timeout", "client_cert",
                                            "protocol", "closed"};
constexpr const char* kProxyFailureNames[] = {"timeout", "malformed", "closed"};

// Setup failures are triggered by peers: a flood of them must not become a
// flood of log lines.
void LogSetupFailure(bool tls, uint64_t id, const std::string& listener,
                     const std::string& remote, const char* reason,
                     absl::string_view detail) {
  static base::LogRateLimiter* limiter = new base::LogRateLimiter(10);
  uint64_t suppressed = 0;
  if (!limiter->Allow(&suppressed)) return;
  base::Log(base::LogLevel::kWarning,
            tls ? "tls handshake failed" : "proxy header refused",
            {{"conn", id},
             {"listener", listener},
             {"remote", remote},
             {"reason", reason},
             {"error", detail},
             {"suppressed", suppressed}});
}

void FillProxyInfo(const net::ProxyHeader& h, const std::string& socket_peer,
                   fanin::v1::ProxyInfo* out) {
  out->set_version(h.version);
  out->set_local(h.local);
  out->set_proxy_address(socket_peer);
  out->set_authority(h.authority);
  out->set_alpn(h.alpn);
  out->set_unique_id(h.unique_id);
  out->set_netns(h.netns);
  if (h.ssl.has_value()) {
    auto* ssl = out->mutable_ssl();
    ssl->set_client_ssl(h.ssl->client_ssl);
    ssl->set_client_cert_conn(h.ssl->client_cert_conn);
    ssl->set_client_cert_sess(h.ssl->client_cert_sess);
    ssl->set_verified(h.ssl->verified);
    ssl->set_version(h.ssl->version);
    ssl->set_cn(h.ssl->cn);
    ssl->set_cipher(h.ssl->cipher);
    ssl->set_sig_alg(h.ssl->sig_alg);
    ssl->set_key_alg(h.ssl->key_alg);
  }
  for (const auto& tlv : h.tlvs) {
    auto* t = out->add_tlvs();
    t->set_type(tlv.type);
    t->set_value(tlv.value);
  }
}

}  // namespace

Connection::Connection(Shard* shard, const ListenerInfo* listener, uint64_t id,
                       int fd, std::string remote, std::string local,
                       std::string peer_host)
    : shard_(shard),
      listener_(listener),
      id_(id),
      fd_(fd),
      remote_(std::move(remote)),
      local_(std::move(local)),
      peer_host_(std::move(peer_host)),
      opened_unix_nano_(absl::GetCurrentTimeNanos()),
      last_activity_(absl::Now()),
      established_(!listener->proxy_protocol && listener->tls == nullptr) {}

Connection::~Connection() {
  if (linger_timer_ != 0) shard_->loop()->Cancel(linger_timer_);
  if (setup_timer_ != 0) shard_->loop()->Cancel(setup_timer_);
  if (fd_ >= 0) {
    if (watching_) shard_->loop()->Unwatch(fd_);
    ::close(fd_);
  }
}

fanin::v1::Event Connection::NewEvent() const {
  return NewConnectionEvent(id_, *listener_);
}

std::shared_ptr<fanout::StoredEvent> Connection::Stamp(
    std::shared_ptr<fanout::StoredEvent> event) const {
  event->bytes_received_before = bytes_received_;
  event->bytes_sent_before = bytes_sent_;
  if (info_ == nullptr) {
    info_ = std::make_shared<fanout::ConnectionInfo>(
        fanout::ConnectionInfo{listener_->name, remote_, local_});
  }
  event->connection = info_;
  return event;
}

void Connection::Publish(const fanin::v1::Event& event) {
  shard_->Publish(Stamp(fanout::MakeEvent(event, listener_->index)));
}

absl::Status Connection::Start() {
  shard_->loop()->AssertInLoopThread();
  fanin::v1::Event opened = NewEvent();
  opened.mutable_opened()->set_remote_address(remote_);
  opened.mutable_opened()->set_local_address(local_);
  if (established_) Publish(opened);
  interest_ = kReadable;
  absl::Status status = shard_->loop()->Watch(fd_, interest_, this);
  if (!status.ok()) {
    // Rejected before its setup: Opened (with the socket's addresses), so
    // that the caller's Closed(REJECTED) follows one.
    if (!established_) Publish(opened);
    established_ = true;
    ::close(fd_);
    fd_ = -1;
    return status;
  }
  watching_ = true;
  if (!established_) BeginSetup();
  return absl::OkStatus();
}

// Setup: nothing is published until Establish(); the poller's readiness
// drives it (OnSetupIo), and one timer per phase bounds it.
void Connection::BeginSetup() {
  if (listener_->proxy_protocol) {
    proxy_ = std::make_unique<net::ProxyHeaderParser>();
    setup_timer_ = shard_->loop()->RunAfter(
        shard_->options().proxy_header_timeout, [this] {
          setup_timer_ = 0;
          FailSetup(false, SetupCounters::kProxyTimeout,
                    absl::StrCat("no complete header within ",
                                 absl::FormatDuration(
                                     shard_->options().proxy_header_timeout)));
        });
    return;
  }
  // The ClientHello is read when the poller reports it (in edge mode too:
  // adding an fd reports what is already readable).
  StartTls("");
}

void Connection::OnSetupIo() {
  if (proxy_ != nullptr) {
    ReadProxyHeader();
    return;
  }
  if (tls_ != nullptr) ContinueHandshake();
}

void Connection::ReadProxyHeader() {
  std::string& buf = shard_->read_buffer();
  // Reads only what the header can still use, until it is complete or the
  // socket is drained (edge mode needs EAGAIN; the header is small).
  for (;;) {
    const size_t want = std::min(proxy_->MaxWanted(), buf.size());
    ssize_t n = ::recv(fd_, buf.data(), want, 0);
    if (n > 0) {
      switch (proxy_->Feed(absl::string_view(buf.data(), n))) {
        case net::ProxyHeaderParser::Result::kNeedMore:
          continue;
        case net::ProxyHeaderParser::Result::kError:
          FailSetup(false, SetupCounters::kProxyMalformed, proxy_->error());
          return;
        case net::ProxyHeaderParser::Result::kDone:
          OnProxyHeader();
          return;
      }
    }
    if (n == 0) {
      FailSetup(false, SetupCounters::kProxyClosed,
                "closed before the header ended");
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    FailSetup(false, SetupCounters::kProxyClosed, std::strerror(errno));
    return;
  }
}

void Connection::OnProxyHeader() {
  const net::ProxyHeader& h = proxy_->header();
  std::string remainder(proxy_->remainder());
  proxy_info_ = std::make_unique<fanin::v1::ProxyInfo>();
  FillProxyInfo(h, remote_, proxy_info_.get());
  shard_->setup_counters()->Add(shard_->setup_counters()->proxy_headers);
  shard_->loop()->Cancel(setup_timer_);
  setup_timer_ = 0;
  if (!h.local) {
    remote_ = h.source.address;
    local_ = h.destination.address;
    // The per-IP limit counts the client the balancer relays. LOCAL (the
    // balancer's own health checks) counts for nobody.
    if (shard_->slots()->TryAcquireHost(h.source.host) ==
        ConnectionSlots::Refusal::kPerIp) {
      RejectAfterProxy(h.source.host);
      return;
    }
    peer_host_ = h.source.host;
  }
  proxy_.reset();
  if (listener_->tls != nullptr) {
    StartTls(std::move(remainder));
    // The ClientHello may have come with the header: in edge mode no new
    // readiness would report it.
    if (tls_ != nullptr) ContinueHandshake();
    return;
  }
  if (!remainder.empty()) {
    transport_ =
        std::make_unique<net::PrefixTransport>(fd_, std::move(remainder));
  }
  Establish();
}

void Connection::StartTls(std::string prefix) {
  ssl_st* ssl = listener_->tls->NewSsl();
  if (ssl == nullptr) {
    FailSetup(true, SetupCounters::kTlsProtocol, "SSL_new: out of memory");
    return;
  }
  auto tls = std::make_unique<net::TlsTransport>(ssl, fd_, std::move(prefix));
  tls_ = tls.get();
  transport_ = std::move(tls);
  setup_timer_ =
      shard_->loop()->RunAfter(shard_->options().tls_handshake_timeout, [this] {
        setup_timer_ = 0;
        FailSetup(true, SetupCounters::kTlsTimeout,
                  absl::StrCat("handshake not done within ",
                               absl::FormatDuration(
                                   shard_->options().tls_handshake_timeout)));
      });
}

void Connection::ContinueHandshake() {
  net::IoResult r = tls_->Handshake();
  switch (r.kind) {
    case net::IoResult::Kind::kOk:
      Establish();
      return;
    case net::IoResult::Kind::kWouldBlock:
      SetSetupInterest(r.wait_for);
      return;
    default:
      break;
  }
  int reason = SetupCounters::kTlsProtocol;
  switch (tls_->failure()) {
    case net::TlsTransport::Failure::kClientCert:
      reason = SetupCounters::kTlsClientCert;
      break;
    case net::TlsTransport::Failure::kClosed:
      reason = SetupCounters::kTlsClosed;
      break;
    default:
      break;
  }
  FailSetup(true, reason, r.error);
}

void Connection::SetSetupInterest(uint32_t want) {
  if (want == interest_) return;
  if (shard_->loop()->Rewatch(fd_, want).ok()) interest_ = want;
}

void Connection::Establish() {
  if (setup_timer_ != 0) {
    shard_->loop()->Cancel(setup_timer_);
    setup_timer_ = 0;
  }
  established_ = true;
  last_activity_ = absl::Now();
  fanin::v1::Event opened = NewEvent();
  auto* o = opened.mutable_opened();
  o->set_remote_address(remote_);
  o->set_local_address(local_);
  if (tls_ != nullptr) {
    shard_->setup_counters()->Add(shard_->setup_counters()->tls_handshakes);
    net::TlsInfo info = tls_->Info();
    auto* t = o->mutable_tls();
    t->set_version(std::move(info.version));
    t->set_cipher(std::move(info.cipher));
    t->set_server_name(std::move(info.server_name));
    t->set_alpn(std::move(info.alpn));
    t->set_peer_subject(std::move(info.peer_subject));
    for (std::string& san : info.peer_sans) t->add_peer_sans(std::move(san));
  }
  if (proxy_info_ != nullptr) {
    o->mutable_proxy()->Swap(proxy_info_.get());
    proxy_info_.reset();
  }
  Publish(opened);
  UpdateInterest();
  // Bytes that came with the last handshake flight (or the PROXY header) may
  // wait in the kernel without a new edge, or in the transport where no
  // poller sees them.
  if (shard_->loop()->edge_triggered() ||
      (transport_ != nullptr && transport_->HasPendingInput())) {
    shard_->loop()->Redispatch(fd_, kReadable);
  }
}

void Connection::FailSetup(bool tls, int reason, absl::string_view detail) {
  SetupCounters* counters = shard_->setup_counters();
  counters->Add(tls ? counters->tls_failures[reason]
                    : counters->proxy_failures[reason]);
  LogSetupFailure(tls, id_, listener_->name, remote_,
                  tls ? kTlsFailureNames[reason] : kProxyFailureNames[reason],
                  detail);
  Abandon();  // Deletes this.
}

void Connection::RejectAfterProxy(const std::string& host) {
  fanin::v1::Event opened = NewEvent();
  opened.mutable_opened()->set_remote_address(remote_);
  opened.mutable_opened()->set_local_address(local_);
  opened.mutable_opened()->mutable_proxy()->Swap(proxy_info_.get());
  Publish(opened);
  const std::string why = absl::StrCat("max_connections_per_ip (",
                                       shard_->options().max_connections_per_ip,
                                       ") reached for ", host);
  shard_->setup_counters()->Add(shard_->setup_counters()->rejected_per_ip);
  LogSetupFailure(false, id_, listener_->name, remote_, "per_ip", why);
  fanin::v1::Event closed = NewEvent();
  closed.mutable_closed()->set_reason(fanin::v1::CLOSE_REASON_REJECTED);
  closed.mutable_closed()->set_detail(why);
  auto event = fanout::MakeEvent(closed, listener_->index);
  Shard* shard = shard_;
  Abandon();  // Deletes this; frees the slot before Closed is announced.
  shard->Publish(std::move(event));
}

void Connection::Abandon() {
  if (setup_timer_ != 0) {
    shard_->loop()->Cancel(setup_timer_);
    setup_timer_ = 0;
  }
  if (linger_timer_ != 0) {
    shard_->loop()->Cancel(linger_timer_);
    linger_timer_ = 0;
  }
  if (watching_) {
    shard_->loop()->Unwatch(fd_);
    watching_ = false;
  }
  transport_.reset();
  tls_ = nullptr;
  ::close(fd_);
  fd_ = -1;
  shard_->Erase(id_);  // Deletes this.
}

std::shared_ptr<fanout::StoredEvent> Connection::RejectedEvent(
    absl::string_view why) const {
  fanin::v1::Event closed = NewEvent();
  closed.mutable_closed()->set_reason(fanin::v1::CLOSE_REASON_REJECTED);
  closed.mutable_closed()->set_detail(std::string(why));
  return Stamp(fanout::MakeEvent(closed, listener_->index));
}

void Connection::OnIo(uint32_t events) {
  shard_->loop()->AssertInLoopThread();
  if (!established_) {
    OnSetupIo();
    return;
  }
  if (transport_ != nullptr) {
    // A TLS read that needs the socket writable, or a write that needs it
    // readable (rare: TLS 1.3 key updates), is retried on that readiness.
    if ((events & kWritable) && read_wants_write_) events |= kReadable;
    if ((events & (kReadable | kReadClosed | kHangup)) && write_wants_read_) {
      events |= kWritable;
    }
  }
  if (events & kError) {
    int err = 0;
    socklen_t len = sizeof(err);
    ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      FinishWithErrno("socket", err);
      return;
    }
  }
  if (events & kWritable) {
    if (!Flush()) return;
  }
  if (events & (kReadable | kReadClosed | kHangup)) HandleReadable(events);
}

void Connection::HandleReadable(uint32_t events) {
  if (state_ == State::kShuttingDown) return;
  const bool lingering = state_ == State::kLingering;
  if (peer_eof_) {
    // Nothing more will arrive. A hang-up with writes still pending means
    // they can never be delivered.
    if ((events & kHangup) && out_head_ < out_.size()) {
      FinishWithErrno("write", EPIPE);
    }
    return;
  }
  if (listener_->pull && !lingering) {
    HandlePullReadable();
    return;
  }
  if (!lingering) {
    if (read_paused_) return;
    if (shard_->hub()->ReadingPaused(listener_->index, id_)) {
      read_paused_ = true;
      shard_->NoteReadPaused(id_);
      UpdateInterest();
      return;
    }
  }
  if (transport_ != nullptr && !lingering) {
    ReadTransport();
    return;
  }
  std::string& buf = shard_->read_buffer();
  ssize_t n = ::read(fd_, buf.data(), buf.size());
  if (n > 0) {
    int64_t now = absl::GetCurrentTimeNanos();
    last_activity_ = absl::FromUnixNanos(now);
    // While lingering after our FIN the peer's input is drained and dropped:
    // it is neither published nor counted, so Closed.bytes_received stays the
    // sum of the Data events.
    if (!lingering) {
      auto data = Stamp(fanout::MakeDataEvent(
          id_, listener_->index, listener_->name, listener_->node, now,
          absl::string_view(buf.data(), static_cast<size_t>(n))));
      bytes_received_ += n;
      shard_->CountReceived(n);
      shard_->Publish(std::move(data));
    }
    // Edge-triggered: the rest, and a FIN that came with the data, produce
    // no new edge, so ask to be called again rather than read it all now.
    // The FIN's edge may have been the first of several reads, so remember
    // it until a read returns 0.
    if (events & (kReadClosed | kHangup)) fin_signalled_ = true;
    if (shard_->loop()->edge_triggered() &&
        (static_cast<size_t>(n) == buf.size() || fin_signalled_)) {
      shard_->loop()->Redispatch(fd_, kReadable);
    }
    return;
  }
  if (n == 0) {
    if (lingering) {
      Finish(fanin::v1::CLOSE_REASON_CLOSED_BY_SUBSCRIBER, "");
      return;
    }
    OnPeerEof();
    return;
  }
  if (errno == EAGAIN || errno == EINTR) return;
  if (lingering) {
    Finish(fanin::v1::CLOSE_REASON_CLOSED_BY_SUBSCRIBER,
           absl::StrCat("read after FIN: ", std::strerror(errno)));
    return;
  }
  FinishWithErrno("read", errno);
}

// Reads plaintext until the transport has none left or the loop's buffer is
// full (the same per-wake-up bound as plain TCP), then publishes it as one
// Data event.
void Connection::ReadTransport() {
  read_wants_write_ = false;
  std::string& buf = shard_->read_buffer();
  size_t got = 0;
  net::IoResult r;
  while (got < buf.size()) {
    r = transport_->Read(buf.data() + got, buf.size() - got);
    if (r.kind != net::IoResult::Kind::kOk) break;
    got += r.bytes;
  }
  if (got > 0) {
    const int64_t now = absl::GetCurrentTimeNanos();
    last_activity_ = absl::FromUnixNanos(now);
    bytes_received_ += got;
    shard_->CountReceived(got);
    shard_->Publish(fanout::MakeDataEvent(id_, listener_->index,
                                          listener_->name, listener_->node, now,
                                          absl::string_view(buf.data(), got)));
  }
  if (got == buf.size()) {
    // Stopped for fairness. In edge mode the rest makes no new edge; in any
    // mode records OpenSSL read ahead are invisible to the poller.
    if (shard_->loop()->edge_triggered() || transport_->HasPendingInput()) {
      shard_->loop()->Redispatch(fd_, kReadable);
    }
    return;
  }
  switch (r.kind) {
    case net::IoResult::Kind::kWouldBlock:
      if (r.wait_for == kWritable) {
        read_wants_write_ = true;
        UpdateInterest();
      }
      return;
    case net::IoResult::Kind::kEof:
      OnPeerEof();
      return;
    default:
      if (r.err == 0) transport_error_ = std::move(r.error);
      FinishWithErrno("read", r.err != 0 ? r.err : kTlsFailed);
      return;
  }
}

void Connection::HandlePullReadable() {
  if (readable_announced_) return;
  readable_announced_ = true;
  UpdateInterest();
  fanin::v1::Event readable = NewEvent();
  readable.mutable_readable();
  Publish(readable);
}

void Connection::OnPeerEof() {
  peer_eof_ = true;
  fanin::v1::Event read_closed = NewEvent();
  read_closed.mutable_read_closed();
  Publish(read_closed);
  if (state_ == State::kOpen) state_ = State::kReadClosed;
  if (state_ == State::kReadClosed && shard_->options().keep_half_open) {
    UpdateInterest();
    return;
  }
  if (out_head_ == out_.size()) {
    AfterFlushed();
    return;
  }
  UpdateInterest();
}

int Connection::SendSome(const char* data, size_t len, size_t* sent) {
  if (transport_ != nullptr) return SendSomeTransport(data, len, sent);
  size_t done = 0;
  int err = 0;
  while (done < len) {
    ssize_t n =
        ::send(fd_, data + done, len - done, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      done += n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    err = n < 0 ? errno : EPIPE;
    break;
  }
  bytes_sent_ += done;
  shard_->CountSent(done);
  *sent = done;
  return err;
}

// Plaintext in, TLS records out. Counts plaintext bytes, so limits and
// Closed.bytes_sent mean the same as on plain TCP.
int Connection::SendSomeTransport(const char* data, size_t len, size_t* sent) {
  write_wants_read_ = false;
  size_t done = 0;
  int err = 0;
  while (done < len) {
    net::IoResult r = transport_->Write(data + done, len - done);
    if (r.kind == net::IoResult::Kind::kOk) {
      done += r.bytes;
      continue;
    }
    if (r.kind == net::IoResult::Kind::kWouldBlock) {
      write_wants_read_ = r.wait_for == kReadable;
      break;
    }
    if (r.err == 0) transport_error_ = std::move(r.error);
    err = r.err != 0 ? r.err : kTlsFailed;
    break;
  }
  bytes_sent_ += done;
  shard_->CountSent(done);
  *sent = done;
  return err;
}

bool Connection::Flush() {
  size_t sent = 0;
  const int err =
      SendSome(out_.data() + out_head_, out_.size() - out_head_, &sent);
  out_head_ += sent;
  if (err != 0) {
    FinishWithErrno("write", err);
    return false;
  }
  last_activity_ = absl::Now();
  if (out_head_ < out_.size()) {
    if (out_head_ > out_.size() / 2) {
      out_.erase(0, out_head_);
      out_head_ = 0;
    }
    UpdateInterest();
    return true;
  }
  std::string().swap(out_);
  out_head_ = 0;
  if (!write_waited_ && state_ == State::kOpen) {
    UpdateInterest();
    return true;
  }
  return AfterFlushed();
}

// The outbound buffer is empty: owe Writable, and continue a pending close.
// Returns false when that finished (deleted) the connection.
bool Connection::AfterFlushed() {
  if (write_waited_) {
    write_waited_ = false;
    fanin::v1::Event writable = NewEvent();
    writable.mutable_writable();
    Publish(writable);
  }
  switch (state_) {
    case State::kClosing:
      return SendFinAndLinger();
    case State::kShuttingDown:
      Finish(fanin::v1::CLOSE_REASON_SERVER_SHUTDOWN, "");
      return false;
    case State::kReadClosed:
      if (!shard_->options().keep_half_open) {
        Finish(fanin::v1::CLOSE_REASON_PEER_CLOSED, "");
        return false;
      }
      break;
    default:
      break;
  }
  UpdateInterest();
  return true;
}

// Sends FIN; then waits (bounded by close_linger) for the peer's FIN while
// discarding its input, because closing with unread input sends a RST that
// can destroy bytes we wrote but the peer has not read yet. Returns false
// when the connection finished (deleted) at once.
bool Connection::SendFinAndLinger() {
  if (transport_ != nullptr && !close_notified_) {
    // TLS: close_notify first, so the peer can tell our end from a
    // truncation. Should the socket be full, wait for writability (bounded
    // by the linger time as well).
    net::IoResult r = transport_->CloseNotify();
    if (r.kind == net::IoResult::Kind::kWouldBlock && r.wait_for == kWritable) {
      if (!close_notify_pending_) {
        close_notify_pending_ = true;
        linger_timer_ =
            shard_->loop()->RunAfter(shard_->options().close_linger, [this] {
              linger_timer_ = 0;
              Finish(fanin::v1::CLOSE_REASON_CLOSED_BY_SUBSCRIBER,
                     "close_notify not sent within the linger time");
            });
      }
      UpdateInterest();
      return true;
    }
    close_notified_ = true;
    if (close_notify_pending_) {
      close_notify_pending_ = false;
      shard_->loop()->Cancel(linger_timer_);
      linger_timer_ = 0;
    }
  }
  ::shutdown(fd_, SHUT_WR);
  if (peer_eof_) {
    Finish(fanin::v1::CLOSE_REASON_CLOSED_BY_SUBSCRIBER, "");
    return false;
  }
  state_ = State::kLingering;
  UpdateInterest();
  linger_timer_ =
      shard_->loop()->RunAfter(shard_->options().close_linger, [this] {
        linger_timer_ = 0;
        Finish(fanin::v1::CLOSE_REASON_CLOSED_BY_SUBSCRIBER,
               "peer did not close within the linger time");
      });
  return true;
}

void Connection::UpdateInterest() {
  if (fd_ < 0 || !watching_) return;
  bool reading = !peer_eof_;
  switch (state_) {
    case State::kLingering:
      break;
    case State::kShuttingDown:
      reading = false;
      break;
    default:
      reading =
          reading && !read_paused_ && !(listener_->pull && readable_announced_);
  }
  bool want_read = reading;
  bool want_write = out_head_ < out_.size() || close_notify_pending_;
  if (transport_ != nullptr) {
    // Wait for what the blocked TLS call needs, not for what would only
    // report ready again at once (a busy loop in level mode).
    if (read_wants_write_ && want_read) {
      want_read = false;
      want_write = true;
    }
    if (write_wants_read_ && want_write) {
      want_write = close_notify_pending_;
      want_read = true;
    }
  }
  uint32_t want = want_read ? kReadable : 0;
  if (want_write) want |= kWritable;
  if (want == interest_) return;
  absl::Status s = shard_->loop()->Rewatch(fd_, want);
  if (s.ok()) interest_ = want;
}

absl::StatusOr<uint64_t> Connection::Write(absl::string_view data,
                                           bool close_after) {
  shard_->loop()->AssertInLoopThread();
  if (closing()) return Gone(id_);
  const size_t queued = out_.size() - out_head_;
  const size_t limit = shard_->options().max_outbound_bytes;
  if (queued + data.size() > limit) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "connection ", id_, ": ", data.size(),
        " bytes do not fit in its outbound buffer (", queued, " of ", limit,
        " bytes already queued); wait for a Writable event and retry"));
  }
  size_t sent = 0;
  if (queued == 0) {
    if (const int err = SendSome(data.data(), data.size(), &sent); err != 0) {
      const uint64_t id = id_;
      FinishWithErrno("write", err);  // Deletes this.
      return absl::AbortedError(
          absl::StrCat("connection ", id, ": write failed (",
                       std::strerror(err), "); the connection is closed"));
    }
  }
  if (sent < data.size()) {
    out_.append(data.data() + sent, data.size() - sent);
    write_waited_ = true;
  }
  if (!data.empty()) last_activity_ = absl::Now();
  const uint64_t result = out_.size() - out_head_;
  if (close_after) {
    state_ = State::kClosing;
    if (result == 0) {
      SendFinAndLinger();  // May delete this.
      return result;
    }
  }
  UpdateInterest();
  return result;
}

absl::Status Connection::Close(bool abort) {
  shard_->loop()->AssertInLoopThread();
  if (closing()) return Gone(id_);
  if (abort) {
    struct linger lg = {1, 0};  // close() then sends RST, dropping the queue.
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    Finish(fanin::v1::CLOSE_REASON_CLOSED_BY_SUBSCRIBER, "aborted (RST)");
    return absl::OkStatus();
  }
  state_ = State::kClosing;
  if (out_head_ == out_.size()) {
    SendFinAndLinger();
  } else {
    UpdateInterest();
  }
  return absl::OkStatus();
}

absl::StatusOr<Connection::ReadOutcome> Connection::Read(uint32_t max_bytes) {
  shard_->loop()->AssertInLoopThread();
  if (closing()) return Gone(id_);
  if (!listener_->pull) {
    return absl::FailedPreconditionError(absl::StrCat(
        "connection ", id_, " is on push-mode listener \"", listener_->name,
        "\": its bytes arrive as Data events; Read serves --pull listeners"));
  }
  ReadOutcome out;
  if (peer_eof_) {
    out.read_closed = true;
    return out;
  }
  const uint32_t max = max_bytes == 0 ? kDefaultReadRpcBytes
                                      : std::min(max_bytes, kMaxReadRpcBytes);
  out.data.resize(max);
  if (transport_ != nullptr) return ReadRpcTransport(max, std::move(out));
  ssize_t n = ::read(fd_, out.data.data(), max);
  if (n > 0) {
    out.data.resize(n);
    bytes_received_ += n;
    shard_->CountReceived(n);
    last_activity_ = absl::Now();
    if (static_cast<uint32_t>(n) < max) {  // Drained: re-arm Readable.
      readable_announced_ = false;
      UpdateInterest();
    }
    return out;
  }
  out.data.clear();
  if (n == 0) {
    out.read_closed = true;
    OnPeerEof();  // May delete this.
    return out;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
    readable_announced_ = false;
    UpdateInterest();
    return out;
  }
  int err = errno;
  uint64_t id = id_;
  FinishWithErrno("read", err);
  return absl::AbortedError(absl::StrCat("connection ", id, ": read failed (",
                                         std::strerror(err),
                                         "); the connection is closed"));
}

absl::StatusOr<Connection::ReadOutcome> Connection::ReadRpcTransport(
    uint32_t max, ReadOutcome out) {
  read_wants_write_ = false;
  size_t got = 0;
  net::IoResult r;
  while (got < max) {
    r = transport_->Read(out.data.data() + got, max - got);
    if (r.kind != net::IoResult::Kind::kOk) break;
    got += r.bytes;
  }
  out.data.resize(got);
  if (got > 0) {
    bytes_received_ += got;
    shard_->CountReceived(got);
    last_activity_ = absl::Now();
    // Short: drained (an end or error that stopped it is reported by the
    // next Read, as the poller reports the socket readable again).
    if (got < max) {
      readable_announced_ = false;
      UpdateInterest();
    }
    return out;
  }
  switch (r.kind) {
    case net::IoResult::Kind::kEof:
      out.read_closed = true;
      OnPeerEof();  // May delete this.
      return out;
    case net::IoResult::Kind::kWouldBlock:
      readable_announced_ = false;
      read_wants_write_ = r.wait_for == kWritable;
      UpdateInterest();
      return out;
    default:
      break;
  }
  const uint64_t id = id_;
  const int err = r.err != 0 ? r.err : kTlsFailed;
  const std::string why = r.err != 0 ? std::strerror(r.err) : r.error;
  if (r.err == 0) transport_error_ = r.error;
  FinishWithErrno("read", err);
  return absl::AbortedError(absl::StrCat("connection ", id, ": read failed (",
                                         why, "); the connection is closed"));
}

void Connection::ResumeReading() {
  if (!read_paused_) return;
  read_paused_ = false;
  UpdateInterest();
  // Bytes that arrived while paused made no new edge; bytes a transport
  // holds (TLS records read ahead) make none in any mode.
  if (shard_->loop()->edge_triggered() ||
      (transport_ != nullptr && transport_->HasPendingInput())) {
    shard_->loop()->Redispatch(fd_, kReadable);
  }
}

void Connection::BeginShutdown() {
  if (!established_) {
    Abandon();
    return;
  }
  if (state_ == State::kLingering) {
    Finish(fanin::v1::CLOSE_REASON_SERVER_SHUTDOWN, "");
    return;
  }
  state_ = State::kShuttingDown;
  if (out_head_ == out_.size()) {
    Finish(fanin::v1::CLOSE_REASON_SERVER_SHUTDOWN, "");
    return;
  }
  UpdateInterest();
}

void Connection::CloseIfIdle(absl::Time cutoff) {
  // A connection still in setup has its own, shorter timer.
  if (last_activity_ >= cutoff || state_ != State::kOpen || !established_) {
    return;
  }
  Finish(fanin::v1::CLOSE_REASON_IDLE_TIMEOUT,
         absl::StrCat("nothing read or written for ",
                      absl::FormatDuration(shard_->options().idle_timeout)));
}

void Connection::ForceClose() {
  Finish(fanin::v1::CLOSE_REASON_SERVER_SHUTDOWN,
         "pending writes not flushed before the drain deadline");
}

void Connection::FillInfo(fanin::v1::Connection* out) const {
  out->set_connection_id(id_);
  out->set_listener(listener_->name);
  if (!listener_->node.empty()) out->set_node(listener_->node);
  out->set_remote_address(remote_);
  out->set_local_address(local_);
  out->set_opened_unix_nano(opened_unix_nano_);
  out->set_bytes_received(bytes_received_);
  out->set_bytes_sent(bytes_sent_);
  out->set_queued_bytes(out_.size() - out_head_);
}

void Connection::FinishWithErrno(const char* op, int err) {
  if (err == kTlsFailed && !transport_error_.empty()) {
    Finish(fanin::v1::CLOSE_REASON_TLS_ERROR,
           absl::StrCat(op, ": ", transport_error_));
    return;
  }
  fanin::v1::CloseReason reason = (err == ECONNRESET || err == EPIPE)
                                      ? fanin::v1::CLOSE_REASON_RESET
                                      : fanin::v1::CLOSE_REASON_ERROR;
  Finish(reason, absl::StrCat(op, ": ", std::strerror(err)));
}

void Connection::Finish(fanin::v1::CloseReason reason, std::string detail) {
  if (!established_) {
    Abandon();  // Never Opened: no event.
    return;
  }
  if (linger_timer_ != 0) {
    shard_->loop()->Cancel(linger_timer_);
    linger_timer_ = 0;
  }
  if (transport_ != nullptr) {
    // An orderly end of ours says so with close_notify (best effort: the
    // socket may be full); errors and aborts do not.
    if (!close_notified_ &&
        (reason == fanin::v1::CLOSE_REASON_PEER_CLOSED ||
         reason == fanin::v1::CLOSE_REASON_SERVER_SHUTDOWN ||
         reason == fanin::v1::CLOSE_REASON_IDLE_TIMEOUT)) {
      transport_->CloseNotify();
    }
    transport_.reset();
    tls_ = nullptr;
  }
  if (watching_) {
    shard_->loop()->Unwatch(fd_);
    watching_ = false;
  }
  ::close(fd_);
  fd_ = -1;
  fanin::v1::Event closed = NewEvent();
  auto* c = closed.mutable_closed();
  c->set_reason(reason);
  c->set_detail(std::move(detail));
  c->set_bytes_received(bytes_received_);
  c->set_bytes_sent(bytes_sent_);
  auto event = Stamp(fanout::MakeEvent(closed, listener_->index));
  Shard* shard = shard_;
  // Free the connection's slot (max_connections, per IP, connections_open)
  // before announcing Closed: a subscriber that saw Closed may count on the
  // slot, and a new client accepted on another loop must find it free.
  shard->Erase(id_);  // Deletes this.
  shard->Publish(std::move(event));
}

}  // namespace fanin::core
