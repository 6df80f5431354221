#include "server/net/listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/base/log.h"

namespace fanin::net {
namespace {

// How long accepting pauses when descriptors run out and no reserve is left.
constexpr absl::Duration kOutOfFdsBackoff = absl::Milliseconds(100);

struct ResolvedAddress {
  sockaddr_storage ss{};
  socklen_t len = 0;
  std::string unix_path;  // set for filesystem unix sockets
};

// The endpoint was checked when it was parsed; what can still fail here is
// only an Endpoint built by hand.
absl::StatusOr<ResolvedAddress> Resolve(const Endpoint& endpoint) {
  ResolvedAddress r;
  if (endpoint.family == Endpoint::Family::kUnix) {
    const std::string& path = endpoint.path;
    auto* un = reinterpret_cast<sockaddr_un*>(&r.ss);
    if (path.empty() || path.size() >= sizeof(un->sun_path)) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad unix socket path \"", path, "\""));
    }
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, path.data(), path.size());
    if (path[0] == '@') {
      un->sun_path[0] = '\0';  // abstract namespace: no file to clean up
    } else {
      r.unix_path = path;
    }
    r.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) +
                                   path.size() + (path[0] == '@' ? 0 : 1));
    return r;
  }
  if (endpoint.port < 0 || endpoint.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad port in \"", endpoint.ToString(), "\""));
  }
  const uint16_t port = htons(static_cast<uint16_t>(endpoint.port));
  if (endpoint.family == Endpoint::Family::kInet6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&r.ss);
    if (inet_pton(AF_INET6, endpoint.host.c_str(), &in6->sin6_addr) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad host in \"", endpoint.ToString(), "\""));
    }
    in6->sin6_family = AF_INET6;
    in6->sin6_port = port;
    r.len = sizeof(sockaddr_in6);
    return r;
  }
  // "localhost" is loopback by definition; no resolver (and no DNS) involved.
  const std::string host =
      endpoint.host == "localhost" ? "127.0.0.1" : endpoint.host;
  auto* in = reinterpret_cast<sockaddr_in*>(&r.ss);
  if (inet_pton(AF_INET, host.c_str(), &in->sin_addr) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad host in \"", endpoint.ToString(), "\""));
  }
  in->sin_family = AF_INET;
  in->sin_port = port;
  r.len = sizeof(sockaddr_in);
  return r;
}

// A socket file left by a previous run blocks bind (EADDRINUSE). Remove it
// only when nobody accepts on it, so a live server is never hijacked.
absl::Status RemoveStaleUnixSocket(const ResolvedAddress& r) {
  struct stat st;
  if (lstat(r.unix_path.c_str(), &st) != 0) return absl::OkStatus();
  if (!S_ISSOCK(st.st_mode)) {
    return absl::AlreadyExistsError(
        absl::StrCat("unix socket path ", r.unix_path,
                     " exists and is not a socket; not removing it"));
  }
  int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (probe < 0) return absl::ErrnoToStatus(errno, "socket(AF_UNIX)");
  int rc = connect(probe, reinterpret_cast<const sockaddr*>(&r.ss), r.len);
  int err = errno;
  close(probe);
  if (rc == 0) {
    return absl::AlreadyExistsError(absl::StrCat(
        "unix socket ", r.unix_path, " is in use by a running server"));
  }
  if (err == ECONNREFUSED && unlink(r.unix_path.c_str()) != 0 &&
      errno != ENOENT) {
    return absl::ErrnoToStatus(errno, absl::StrCat("unlink ", r.unix_path));
  }
  return absl::OkStatus();
}

int OpenReserve() { return open("/dev/null", O_RDONLY | O_CLOEXEC); }

}  // namespace

absl::StatusOr<std::unique_ptr<Listener>> Listener::Bind(const ListenSpec& spec,
                                                         int backlog) {
  absl::StatusOr<ResolvedAddress> r = Resolve(spec.endpoint);
  if (!r.ok()) return r.status();
  const int family = r->ss.ss_family;
  if (!r->unix_path.empty()) {
    absl::Status s = RemoveStaleUnixSocket(*r);
    if (!s.ok()) return s;
  }
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return absl::ErrnoToStatus(
        errno, absl::StrCat("socket for ", spec.endpoint.ToString()));
  }
  auto fail = [&](absl::string_view call) {
    absl::Status s = absl::ErrnoToStatus(
        errno, absl::StrCat(call, " fd ", fd, " ", spec.endpoint.ToString()));
    close(fd);
    return s;
  };
  if (family != AF_UNIX) {
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0) {
      return fail("setsockopt(SO_REUSEADDR)");
    }
    if (family == AF_INET6 &&
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) {
      return fail("setsockopt(IPV6_V6ONLY)");
    }
  }
  if (bind(fd, reinterpret_cast<const sockaddr*>(&r->ss), r->len) != 0) {
    return fail("bind");
  }
  if (listen(fd, backlog) != 0) return fail("listen");
  std::string bound = LocalAddressOf(fd);
  if (family == AF_UNIX) bound = absl::StrCat("unix:", bound);
  std::unique_ptr<Listener> listener(new Listener(
      fd, spec.name, std::move(bound), r->unix_path, family != AF_UNIX));
  listener->reserve_fd_ = OpenReserve();
  return listener;
}

Listener::Listener(int fd, std::string name, std::string bound_address,
                   std::string unix_path, bool is_tcp)
    : fd_(fd),
      name_(std::move(name)),
      bound_address_(std::move(bound_address)),
      unix_path_(std::move(unix_path)),
      is_tcp_(is_tcp) {}

Listener::~Listener() { Close(); }

absl::Status Listener::Start(reactor::EventLoop* loop, AcceptCallback on_accept,
                             ShedCallback on_shed) {
  if (fd_ < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("listener ", name_, " is closed"));
  }
  if (loop_ != nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("listener ", name_, " already started"));
  }
  absl::Status s = loop->Watch(fd_, paused_ ? 0 : reactor::kReadable, this);
  if (!s.ok()) return s;
  loop_ = loop;
  on_accept_ = std::move(on_accept);
  on_shed_ = std::move(on_shed);
  return absl::OkStatus();
}

void Listener::Pause() {
  paused_ = true;
  UpdateWatch();
}

void Listener::Resume() {
  paused_ = false;
  UpdateWatch();
}

void Listener::UpdateWatch() {
  if (loop_ == nullptr || fd_ < 0) return;
  loop_->AssertInLoopThread();
  const uint32_t interest = paused_ || backing_off_ ? 0 : reactor::kReadable;
  absl::Status s = loop_->Rewatch(fd_, interest);
  if (!s.ok()) {
    base::Log(base::LogLevel::kError, "listener rewatch failed",
              {{"listener", name_}, {"error", s.ToString()}});
  }
}

void Listener::Close() {
  if (fd_ < 0) return;
  if (loop_ != nullptr) {
    loop_->AssertInLoopThread();
    loop_->Unwatch(fd_);
    if (backoff_timer_ != 0) loop_->Cancel(backoff_timer_);
    backoff_timer_ = 0;
  }
  close(fd_);
  fd_ = -1;
  if (reserve_fd_ >= 0) close(reserve_fd_);
  reserve_fd_ = -1;
  if (!unix_path_.empty()) unlink(unix_path_.c_str());
}

void Listener::OnIo(uint32_t events) {
  loop_->AssertInLoopThread();
  // Redispatch bits can arrive while paused; the backlog keeps them.
  if (fd_ < 0 || paused_ || backing_off_) return;
  if (events & (reactor::kReadable | reactor::kError | reactor::kHangup)) {
    AcceptSome();
  }
}

void Listener::AcceptSome() {
  for (int i = 0; i < kMaxAcceptsPerWakeup; ++i) {
    sockaddr_storage peer{};
    socklen_t peer_len = sizeof(peer);
    int fd = accept4(fd_, reinterpret_cast<sockaddr*>(&peer), &peer_len,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      if (is_tcp_) {
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      }
      accepted_.fetch_add(1, std::memory_order_relaxed);
      on_accept_(
          fd, PeerFromSockaddr(reinterpret_cast<sockaddr*>(&peer), peer_len));
      if (fd_ < 0 || paused_) return;  // the callback closed or paused us
      continue;
    }
    switch (errno) {
      case EAGAIN:
        return;  // backlog drained
      case EINTR:
      case ECONNABORTED:  // that client gave up already
        continue;
      case EMFILE:
      case ENFILE:
        // accept fails for want of a descriptor before it looks at the
        // backlog, so whether a client is waiting is not known yet.
        switch (ShedOneConnection()) {
          case Shed::kShed:
            if (fd_ < 0 || paused_) return;  // the callback closed or paused us
            continue;
          case Shed::kNoneWaiting:
            return;
          case Shed::kCannot:
            BackOff();
            return;
        }
        return;
      case ENOBUFS:
      case ENOMEM:
        accept_errors_.fetch_add(1, std::memory_order_relaxed);
        BackOff();
        return;
      default:
        // EPROTO, EPERM (firewall)...: that connection is gone, the next
        // may be fine.
        accept_errors_.fetch_add(1, std::memory_order_relaxed);
        continue;
    }
  }
  // Budget spent with connections possibly still queued. Level-triggered
  // backends report the listener again; edge-triggered ones need a nudge.
  if (loop_->edge_triggered()) loop_->Redispatch(fd_, reactor::kReadable);
}

// Out of descriptors: level-triggered readiness would report a waiting
// connection forever. Spend the reserve descriptor to take it and close it at
// once (the client sees the connection closed), then take the reserve back.
Listener::Shed Listener::ShedOneConnection() {
  if (reserve_fd_ < 0) return Shed::kCannot;
  close(reserve_fd_);
  sockaddr_storage peer{};
  socklen_t peer_len = sizeof(peer);
  int fd =
      accept4(fd_, reinterpret_cast<sockaddr*>(&peer), &peer_len, SOCK_CLOEXEC);
  const int accept_errno = errno;
  if (fd >= 0) {
    if (on_shed_) {
      // Reports and closes it.
      on_shed_(fd,
               PeerFromSockaddr(reinterpret_cast<sockaddr*>(&peer), peer_len));
    } else {
      close(fd);
      accept_errors_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  reserve_fd_ = OpenReserve();
  if (fd >= 0) return reserve_fd_ >= 0 ? Shed::kShed : Shed::kCannot;
  if (accept_errno == EAGAIN) return Shed::kNoneWaiting;
  return Shed::kCannot;
}

// No reserve to shed with (or a memory shortage): stop watching the listener
// for a moment instead of spinning on it.
void Listener::BackOff() {
  backing_off_ = true;
  UpdateWatch();
  backoff_timer_ = loop_->RunAfter(kOutOfFdsBackoff, [this] {
    backoff_timer_ = 0;
    backing_off_ = false;
    if (reserve_fd_ < 0) reserve_fd_ = OpenReserve();
    UpdateWatch();
    // Edge-triggered: the re-armed watch reports a backlog still waiting.
  });
}

}  // namespace fanin::net
