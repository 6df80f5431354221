// select(2) backend that serves thousands of fds, not just FD_SETSIZE.
// Loop thread only.
#ifndef FANIN_SERVER_REACTOR_SELECT_POLLER_H_
#define FANIN_SERVER_REACTOR_SELECT_POLLER_H_

#include <memory>

#include "server/reactor/poller.h"

namespace fanin::reactor {

// Largest fd count the default select poller accepts (fds 0 .. limit-1).
inline constexpr int kSelectDefaultFdLimit = 1 << 20;

// Never uses the FD_SET family (glibc's fortified build aborts at fd >= 1024):
// the read and write sets are the poller's own word arrays sized to the highest
// watched fd, copied per Wait, and select(2) gets nfds = max_fd + 1, which
// Linux accepts beyond FD_SETSIZE.
// Reports only kReadable and kWritable: select folds EOF, hang-up and errors
// into readability/writability, so the handler learns them from read()/write().
// Watch refuses fd >= fd_limit with ResourceExhausted (the loop keeps
// serving the others) and a closed fd with the fcntl errno status.
// If select fails with EBADF (an fd closed while watched), Wait reports every
// such fd as kError | kHangup instead of failing forever.
std::unique_ptr<Poller> NewSelectPoller(int fd_limit = kSelectDefaultFdLimit);

}  // namespace fanin::reactor

#endif  // FANIN_SERVER_REACTOR_SELECT_POLLER_H_
