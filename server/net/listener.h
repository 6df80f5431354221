// A listening socket that accepts on an EventLoop.
//
// Example (on the loop thread):
//   auto listener = Listener::Bind(*ParseListenSpec("raw=127.0.0.1:0"));
//   if (!listener.ok()) return listener.status();
//   RETURN_IF_ERROR((*listener)->Start(loop, [](int fd) { Adopt(fd); }));
//   ... (*listener)->bound_address() is e.g. "127.0.0.1:43211"
//   (*listener)->Close();
#ifndef FANIN_SERVER_NET_LISTENER_H_
#define FANIN_SERVER_NET_LISTENER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/net/address.h"
#include "server/reactor/event_loop.h"

namespace fanin::net {

// Owns the listening fd. Accepts at most kMaxAcceptsPerWakeup connections per
// readiness report (fairness with the other fds of its loop; in edge mode the
// rest is picked up through EventLoop::Redispatch).
//
// Running out of descriptors (EMFILE/ENFILE) does not make it spin: it keeps
// one reserved descriptor, and on EMFILE closes it, accepts the pending
// connection with it and sheds it at once (hands it to the shed callback,
// which reports and closes it, or closes it and counts an accept error), then
// reopens the reserve. Without a reserve it stops accepting for a short
// back-off. Other accept errors are counted and accepting continues.
class Listener : public reactor::IoHandler {
 public:
  static constexpr int kMaxAcceptsPerWakeup = 64;

  // Creates, binds and listens (non-blocking, CLOEXEC, SO_REUSEADDR; unlinks
  // a stale unix socket path first). Any thread. Port 0 picks a free port.
  // Errors: InvalidArgument for a bad address, else the failing syscall's
  // status naming the address (socket/bind/listen).
  static absl::StatusOr<std::unique_ptr<Listener>> Bind(const ListenSpec& spec,
                                                        int backlog = 4096);

  // Loop thread; fd is non-blocking and CLOEXEC (TCP_NODELAY on TCP); the
  // callee owns it. `peer` is the address accept(2) gave, which stays known
  // even when the client has already reset.
  using AcceptCallback = absl::AnyInvocable<void(int fd, Peer peer)>;
  // Loop thread: a connection accepted while out of descriptors, to be
  // reported and closed at once (the callee must close fd before returning:
  // the reserve descriptor is reopened right after).
  using ShedCallback = absl::AnyInvocable<void(int fd, Peer peer)>;

  // Closes the fd if still open. Destroy on the loop thread, or when the loop
  // is not running.
  ~Listener() override;

  // Loop thread: starts accepting on loop. FailedPrecondition if already
  // started or closed; else the loop's Watch status. Without on_shed, shed
  // connections are closed and counted in accept_errors.
  absl::Status Start(reactor::EventLoop* loop, AcceptCallback on_accept,
                     ShedCallback on_shed = nullptr);
  // Loop thread (or before Start): stop accepting (the kernel backlog then
  // pushes back on clients).
  void Pause();
  // Loop thread: accept again after Pause.
  void Resume();
  // Loop thread: unwatch and close (idempotent); a unix path is removed.
  void Close();

  const std::string& name() const { return name_; }
  // The actual address: "127.0.0.1:43211", "[::1]:43211" or "unix:/path".
  const std::string& bound_address() const { return bound_address_; }
  // Connections lost to accept failures and survived: ENOBUFS/ENOMEM,
  // EPROTO, ..., and those shed for want of descriptors (EMFILE/ENFILE) when
  // there is no shed callback. Any thread.
  uint64_t accept_errors() const {
    return accept_errors_.load(std::memory_order_relaxed);
  }
  // Connections accepted and handed to the callback. Any thread.
  uint64_t accepted() const {
    return accepted_.load(std::memory_order_relaxed);
  }

  void OnIo(uint32_t events) override;

 private:
  Listener(int fd, std::string name, std::string bound_address,
           std::string unix_path, bool is_tcp);

  enum class Shed { kShed, kNoneWaiting, kCannot };

  void AcceptSome();
  Shed ShedOneConnection();
  void BackOff();
  void UpdateWatch();

  int fd_;
  int reserve_fd_ = -1;
  const std::string name_;
  const std::string bound_address_;
  const std::string unix_path_;  // non-empty for unix listeners
  const bool is_tcp_;
  reactor::EventLoop* loop_ = nullptr;
  AcceptCallback on_accept_;
  ShedCallback on_shed_;
  bool paused_ = false;
  bool backing_off_ = false;
  reactor::EventLoop::TimerId backoff_timer_ = 0;
  std::atomic<uint64_t> accept_errors_{0};
  std::atomic<uint64_t> accepted_{0};
};

}  // namespace fanin::net

#endif  // FANIN_SERVER_NET_LISTENER_H_
