#include "server/core/connection.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
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
      last_activity_(absl::Now()) {}

Connection::~Connection() {
  if (linger_timer_ != 0) shard_->loop()->Cancel(linger_timer_);
  if (fd_ >= 0) {
    if (watching_) shard_->loop()->Unwatch(fd_);
    ::close(fd_);
  }
}

fanin::v1::Event Connection::NewEvent() const {
  return NewConnectionEvent(id_, *listener_);
}

void Connection::Publish(const fanin::v1::Event& event) {
  shard_->Publish(fanout::MakeEvent(event, listener_->index));
}

absl::Status Connection::Start() {
  shard_->loop()->AssertInLoopThread();
  fanin::v1::Event opened = NewEvent();
  opened.mutable_opened()->set_remote_address(remote_);
  opened.mutable_opened()->set_local_address(local_);
  Publish(opened);
  interest_ = kReadable;
  absl::Status status = shard_->loop()->Watch(fd_, interest_, this);
  if (!status.ok()) {
    ::close(fd_);
    fd_ = -1;
    return status;
  }
  watching_ = true;
  return absl::OkStatus();
}

std::shared_ptr<fanout::StoredEvent> Connection::RejectedEvent(
    absl::string_view why) const {
  fanin::v1::Event closed = NewEvent();
  closed.mutable_closed()->set_reason(fanin::v1::CLOSE_REASON_REJECTED);
  closed.mutable_closed()->set_detail(std::string(why));
  return fanout::MakeEvent(closed, listener_->index);
}

void Connection::OnIo(uint32_t events) {
  shard_->loop()->AssertInLoopThread();
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
  std::string& buf = shard_->read_buffer();
  ssize_t n = ::read(fd_, buf.data(), buf.size());
  if (n > 0) {
    int64_t now = absl::GetCurrentTimeNanos();
    last_activity_ = absl::FromUnixNanos(now);
    // While lingering after our FIN the peer's input is drained and dropped:
    // it is neither published nor counted, so Closed.bytes_received stays the
    // sum of the Data events.
    if (!lingering) {
      bytes_received_ += n;
      shard_->CountReceived(n);
      shard_->Publish(fanout::MakeDataEvent(
          id_, listener_->index, listener_->name, listener_->node, now,
          absl::string_view(buf.data(), static_cast<size_t>(n))));
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
  uint32_t want = reading ? kReadable : 0;
  if (out_head_ < out_.size()) want |= kWritable;
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

void Connection::ResumeReading() {
  if (!read_paused_) return;
  read_paused_ = false;
  UpdateInterest();
  // Bytes that arrived while paused made no new edge.
  if (shard_->loop()->edge_triggered())
    shard_->loop()->Redispatch(fd_, kReadable);
}

void Connection::BeginShutdown() {
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
  if (last_activity_ >= cutoff || state_ != State::kOpen) return;
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
  fanin::v1::CloseReason reason = (err == ECONNRESET || err == EPIPE)
                                      ? fanin::v1::CLOSE_REASON_RESET
                                      : fanin::v1::CLOSE_REASON_ERROR;
  Finish(reason, absl::StrCat(op, ": ", std::strerror(err)));
}

void Connection::Finish(fanin::v1::CloseReason reason, std::string detail) {
  if (linger_timer_ != 0) {
    shard_->loop()->Cancel(linger_timer_);
    linger_timer_ = 0;
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
  auto event = fanout::MakeEvent(closed, listener_->index);
  Shard* shard = shard_;
  // Free the connection's slot (max_connections, per IP, connections_open)
  // before announcing Closed: a subscriber that saw Closed may count on the
  // slot, and a new client accepted on another loop must find it free.
  shard->Erase(id_);  // Deletes this.
  shard->Publish(std::move(event));
}

}  // namespace fanin::core
