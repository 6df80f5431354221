#include "server/reactor/poller.h"

#include "absl/strings/str_cat.h"
#include "server/reactor/epoll_poller.h"
#include "server/reactor/poll_poller.h"
#include "server/reactor/select_poller.h"

namespace fanin::reactor {

absl::StatusOr<PollerKind> ParsePollerKind(absl::string_view name) {
  if (name == "epoll" || name == "epoll-level") return PollerKind::kEpollLevel;
  if (name == "epoll-edge") return PollerKind::kEpollEdge;
  if (name == "poll") return PollerKind::kPoll;
  if (name == "select") return PollerKind::kSelect;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown poller \"", name,
                   "\": expected one of epoll, epoll-level, epoll-edge, poll, "
                   "select"));
}

absl::string_view PollerKindName(PollerKind kind) {
  switch (kind) {
    case PollerKind::kEpollLevel:
      return "epoll";
    case PollerKind::kEpollEdge:
      return "epoll-edge";
    case PollerKind::kPoll:
      return "poll";
    case PollerKind::kSelect:
      return "select";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<Poller>> NewPoller(PollerKind kind) {
  switch (kind) {
    case PollerKind::kEpollLevel:
      return NewEpollPoller(/*edge_triggered=*/false);
    case PollerKind::kEpollEdge:
      return NewEpollPoller(/*edge_triggered=*/true);
    case PollerKind::kPoll:
      return NewPollPoller();
    case PollerKind::kSelect:
      return NewSelectPoller();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown poller kind ", static_cast<int>(kind)));
}

}  // namespace fanin::reactor
