// The bare reader the floor and the relay share: one thread, a
// level-triggered epoll loop over the clients of one IPv4 listener, one read
// of at most 64 KiB per readiness report, nothing else. What a handler does
// with the bytes is the difference between the two.
#ifndef FANIN_TESTS_BENCH_E2E_EPOLL_READER_H_
#define FANIN_TESTS_BENCH_E2E_EPOLL_READER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/strings/string_view.h"

namespace fanin::bench {

class EpollReader {
 public:
  class Handler {
   public:
    virtual ~Handler() = default;
    // A client connected; `key` names it until OnClosed (fds are reused,
    // keys are not: 1, 2, 3, ...).
    virtual void OnAccepted(uint64_t key) = 0;
    virtual void OnBytes(uint64_t key, absl::string_view bytes) = 0;
    // The client closed (`error`: the read failed instead); its fd is closed.
    virtual void OnClosed(uint64_t key, bool error) = 0;
    // After every ready fd of one epoll_wait was handled.
    virtual void OnIterationEnd() {}
  };

  // Listens on IPv4 HOST:PORT (port 0: any); exits the process with a
  // message naming `who` when it cannot.
  EpollReader(absl::string_view host_port, const char* who);
  ~EpollReader();

  int port() const { return port_; }
  uint64_t accepted() const { return next_key_ - 1; }

  // Until `stop()` is true (asked at least every 100 ms).
  void Run(Handler& handler, absl::FunctionRef<bool()> stop);

 private:
  [[noreturn]] void Die(const char* what) const;

  const char* const who_;
  int listen_fd_ = -1;
  int epoll_fd_ = -1;
  int port_ = 0;
  uint64_t next_key_ = 1;
  std::vector<uint64_t> key_of_fd_;
};

}  // namespace fanin::bench

#endif  // FANIN_TESTS_BENCH_E2E_EPOLL_READER_H_
