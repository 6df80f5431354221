#include "tests/bench/reactor/impls.h"

#include <ev.h>

#include <memory>
#include <string>
#include <utility>

#include "tests/bench/reactor/fanin_runner.h"
#include "tests/bench/reactor/runner.h"
#include "tests/bench/reactor/runners.h"

namespace fanin::bench {

std::vector<Impl> AllImpls() {
  using ::fanin::reactor::PollerKind;
  std::vector<Impl> impls;
  auto add = [&impls](std::string name, bool epoll, bool fanin, bool floor,
                      std::function<std::unique_ptr<Runner>()> make) {
    impls.push_back(
        Impl{std::move(name), epoll, fanin, floor, std::move(make)});
  };
  add("floor: hand-written epoll", true, false, true,
      [] { return NewFloorRunner(); });
  add("fanin epoll (level)", true, true, false,
      [] { return NewFaninRunner(PollerKind::kEpollLevel); });
  add("fanin epoll (edge)", true, true, false,
      [] { return NewFaninRunner(PollerKind::kEpollEdge); });
  add("fanin poll", false, true, false,
      [] { return NewFaninRunner(PollerKind::kPoll); });
  add("fanin select", false, true, false,
      [] { return NewFaninRunner(PollerKind::kSelect); });
  add("libevent epoll", true, false, false,
      [] { return NewLibeventRunner("epoll"); });
  add("libevent poll", false, false, false,
      [] { return NewLibeventRunner("poll"); });
  add("libevent select", false, false, false,
      [] { return NewLibeventRunner("select"); });
  add("libev epoll", true, false, false,
      [] { return NewLibevRunner(EVBACKEND_EPOLL); });
  add("libev poll", false, false, false,
      [] { return NewLibevRunner(EVBACKEND_POLL); });
  add("libev select", false, false, false,
      [] { return NewLibevRunner(EVBACKEND_SELECT); });
  add("libuv epoll", true, false, false, [] { return NewLibuvRunner(); });
  return impls;
}

}  // namespace fanin::bench
