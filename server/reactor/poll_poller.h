// poll(2) backend. Loop thread only.
#ifndef FANIN_SERVER_REACTOR_POLL_POLLER_H_
#define FANIN_SERVER_REACTOR_POLL_POLLER_H_

#include <memory>

#include "server/reactor/poller.h"

namespace fanin::reactor {

// A pollfd vector plus an fd -> index map (swap-remove on Unwatch). POLLRDHUP
// is always requested. An fd with interest 0 is parked as -fd-1 so that poll
// ignores it (and its POLLHUP/POLLERR) entirely.
// Watch checks the fd is open (fcntl) and fails with the errno status if not.
std::unique_ptr<Poller> NewPollPoller();

}  // namespace fanin::reactor

#endif  // FANIN_SERVER_REACTOR_POLL_POLLER_H_
