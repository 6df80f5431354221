// epoll(7) backend, level- or edge-triggered. Loop thread only.
#ifndef FANIN_SERVER_REACTOR_EPOLL_POLLER_H_
#define FANIN_SERVER_REACTOR_EPOLL_POLLER_H_

#include <memory>

#include "absl/status/statusor.h"
#include "server/reactor/poller.h"

namespace fanin::reactor {

// One epoll fd; EPOLLRDHUP always in the interest, EPOLLET in edge mode.
// Rewatch(fd, 0) removes fd from the epoll set (epoll would otherwise keep
// reporting EPOLLHUP/EPOLLERR); a later Rewatch with interest adds it back.
// Errors: epoll_create1 / epoll_ctl / epoll_wait as absl::Status with the fd.
absl::StatusOr<std::unique_ptr<Poller>> NewEpollPoller(bool edge_triggered);

}  // namespace fanin::reactor

#endif  // FANIN_SERVER_REACTOR_EPOLL_POLLER_H_
